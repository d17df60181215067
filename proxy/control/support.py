"""What the control plane accepts: every apigatewayv2 input member is executed or refused.

Layer 3, sans-IO. Nothing is accepted and ignored (docs/aws-behaviour.md#control-plane-wire-format):
a member the data plane does not execute is refused with a
``BadRequestException`` naming it, and an operation framegate does not
implement answers one saying "not supported" (a ``NotFoundException`` would
read to botocore as "resource not found"). Three kinds of rules live here:

* ``check_body``: request members the model has no field for (HTTP-API
  members, VPC links, JWT, TLS settings...) are refused by name, before
  decoding drops them. ``REFUSED`` gives each one's reason.
* ``check_value``: members the model stores but the data plane runs for some
  values only (``apiKeyRequired: true``, ``authorizationType`` ``CUSTOM``,
  AWS service integrations other than Lambda, ``requestTemplates`` on a
  proxy, ...), checked on the model value after an update is merged, so
  ``--config`` documents get the same answer as the API.
* ``check_deployable``: a deployment whose routes need ``--lambda-endpoint``
  (Lambda integrations, authorizers) cannot be made or put on a stage
  without one.

``MEMBERS`` records the decision for every body member of every implemented
Create/Update operation in botocore's model (``tests/control/test_support.py``
fails when botocore gains one nobody decided about).

Fail closed until wired: an ``AuthorizationType`` the gateway does not enforce
goes in ``UNTIL_WIRED`` (none today). ``AWS_IAM`` (SigV4-signed upgrades,
checked against ``--credentials``), ``CUSTOM`` (with an ``authorizerId``
naming a REQUEST authorizer of the API) and ``required`` route request
parameters are enforced on ``$connect`` by the gateway (``proxy.server.invocations``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import fields
from functools import cache
from typing import Any, Final

from proxy.control import records
from proxy.control.model import (
    AWS,
    AWS_PROXY,
    DEFAULT,
    HTTP,
    HTTP_PROXY,
    Api,
    Authorizer,
    Integration,
    IntegrationResponse,
    Route,
    RouteResponse,
    Snapshot,
    Stage,
)
from proxy.errors import BadRequestException
from proxy.integrations import parameters
from proxy.integrations.uri import is_lambda_uri

EXECUTED: Final = ""
"""``MEMBERS`` value of a member the data plane executes (possibly for some values only, see ``check_value``)."""

_HTTP_API_ONLY: Final = "applies to HTTP APIs only; framegate serves WEBSOCKET APIs"
_NO_MODELS: Final = "models and request validation are not supported by framegate"
_NO_ROLES: Final = "framegate signs Lambda calls with its own credentials and assumes no IAM role"
_NO_CONTENT_HANDLING: Final = "content handling (binary conversion) is not supported by framegate"

REFUSED: Final[Mapping[str, Mapping[str, str]]] = {
    "Api": {
        "corsConfiguration": _HTTP_API_ONLY,
        "credentialsArn": _HTTP_API_ONLY,
        "routeKey": _HTTP_API_ONLY,
        "target": _HTTP_API_ONLY,
    },
    "Route": {
        "authorizationScopes": "authorization scopes belong to JWT authorizers, which WEBSOCKET APIs do not have",
        "modelSelectionExpression": _NO_MODELS,
        "requestModels": _NO_MODELS,
    },
    "RouteResponse": {
        "modelSelectionExpression": _NO_MODELS,
        "responseModels": _NO_MODELS,
        "responseParameters": "route response parameters are not supported by framegate",
    },
    "Integration": {
        "connectionId": "VPC links are not supported by framegate",
        "contentHandlingStrategy": _NO_CONTENT_HANDLING,
        "credentialsArn": _NO_ROLES,
        "integrationSubtype": _HTTP_API_ONLY,
        "responseParameters": _HTTP_API_ONLY,
        "tlsConfig": "backend TLS settings are not supported by framegate (certificates are verified by host name)",
    },
    "IntegrationResponse": {
        "contentHandlingStrategy": _NO_CONTENT_HANDLING,
        "responseParameters": "integration response parameters are not supported by framegate",
    },
    "Stage": {
        "clientCertificateId": "client certificates towards backends are not supported by framegate",
    },
    "DomainName": {
        "mutualTlsAuthentication": "mutual TLS is not supported by framegate",
        "routingMode": "routing rules are not supported by framegate (API mappings only)",
    },
    "Authorizer": {
        "authorizerCredentialsArn": _NO_ROLES,
        "authorizerPayloadFormatVersion": _HTTP_API_ONLY,
        "authorizerResultTtlInSeconds": "authorizer result caching is not supported by framegate",
        "enableSimpleResponses": _HTTP_API_ONLY,
        "identityValidationExpression": "identityValidationExpression is not used by REQUEST authorizers",
        "jwtConfiguration": "JWT authorizers are not supported for WEBSOCKET APIs",
    },
}
"""Members refused whatever their value (empty values aside), by model class name and wire name."""

ACCEPTED_VALUES: Final[Mapping[tuple[str, str], frozenset[object]]] = {
    ("DomainName", "routingMode"): frozenset({"API_MAPPING_ONLY"}),
}
"""Refused members that are accepted with these values: they then mean what framegate does anyway."""

MEMBERS: Final[Mapping[str, Mapping[str, str]]] = {
    resource: {
        **dict.fromkeys(executed, EXECUTED),
        **REFUSED.get(resource, {}),
    }
    for resource, executed in {
        "Api": (
            "apiKeySelectionExpression",  # only the default: API keys are refused on routes
            "description",
            "disableSchemaValidation",  # no models, so either value is what happens
            "disableExecuteApiEndpoint",  # false only
            "ipAddressType",  # ipv4 only
            "name",
            "protocolType",
            "routeSelectionExpression",
            "tags",
            "version",
        ),
        "ApiMapping": ("apiId", "apiMappingKey", "stage"),
        "Authorizer": ("authorizerType", "authorizerUri", "identitySource", "name"),
        "Deployment": ("description", "stageName"),
        "DomainName": ("domainName", "domainNameConfigurations", "tags"),
        "Integration": (
            "connectionType",  # INTERNET only
            "description",
            "integrationMethod",
            "integrationType",  # AWS/AWS_PROXY with Lambda URIs only
            "integrationUri",
            "passthroughBehavior",
            "payloadFormatVersion",  # 1.0 only
            "requestParameters",
            "requestTemplates",
            "templateSelectionExpression",
            "timeoutInMillis",
        ),
        "IntegrationResponse": ("integrationResponseKey", "responseTemplates", "templateSelectionExpression"),
        "Route": (
            "apiKeyRequired",  # false only
            "authorizationType",
            "authorizerId",
            "operationName",
            "requestParameters",
            "routeKey",
            "routeResponseSelectionExpression",  # $default only
            "target",
        ),
        "RouteResponse": ("routeResponseKey",),
        "Stage": (
            "accessLogSettings",
            "autoDeploy",
            "defaultRouteSettings",
            "deploymentId",
            "description",
            "routeSettings",
            "stageName",
            "stageVariables",
            "tags",
        ),
        "TagResource": ("tags",),
    }.items()
}
"""Every body member of the implemented Create/Update operations: ``EXECUTED`` or the reason it is refused."""

UNTIL_WIRED: Final[frozenset[str]] = frozenset()
"""Authorization types the gateway does not enforce yet: refused (fail closed). Remove from here
when $connect enforces them."""

_PROXY_TYPES: Final = frozenset({HTTP_PROXY, AWS_PROXY})
_WEBSOCKET_URI: Final = ("ws://", "wss://")
_ROUTE_PARAMETER = re.compile(r"route\.request\.(header|querystring)\.[A-Za-z0-9._$-]+")
_IDENTITY_SOURCE = re.compile(
    r"route\.request\.(header|querystring)\.[A-Za-z0-9._$-]+|stageVariables\.[A-Za-z0-9_]+|context\.[A-Za-z0-9_.]+"
)
PAYLOAD_FORMAT_VERSION: Final = "1.0"
LAMBDA_METHOD: Final = "POST"


def _refuse(member: str, reason: str) -> BadRequestException:
    return BadRequestException(f"{member} is not supported: {reason}")


def _empty(value: object) -> bool:
    return value is None or value is False or value == "" or (isinstance(value, Iterable) and not value)


def check_body(cls: type, body: Mapping[str, Any]) -> None:
    """Refuse request members the model class cannot hold (see the module doc).

    Raises:
        BadRequestException: naming the first such member and why it is refused.
    """
    resource = cls.__name__
    known = _wire_names(cls)
    refused = REFUSED.get(resource, {})
    for member, value in body.items():
        if member in known or _empty(value):
            continue
        if value in ACCEPTED_VALUES.get((resource, member), ()):
            continue
        raise _refuse(member, refused.get(member, f"{resource} has no member {member} in framegate"))


@cache
def _wire_names(cls: type) -> frozenset[str]:
    return frozenset(records.camel(f.name) for f in fields(cls))


def _check_refused_fields(value: object) -> None:
    """Model fields that are in ``REFUSED`` (stored, but never executed) must be empty."""
    refused = REFUSED.get(type(value).__name__, {})
    for f in fields(value):  # type: ignore[arg-type]
        member = records.camel(f.name)
        if member in refused and not _empty(getattr(value, f.name)):
            raise _refuse(member, refused[member])


def check_value(value: Api | Route | RouteResponse | Integration | IntegrationResponse | Stage | Authorizer) -> None:
    """Refuse a resource whose values the data plane would not execute (see the module doc).

    Raises:
        BadRequestException: naming the member and the value.
    """
    _check_refused_fields(value)
    if isinstance(value, Api):
        _check_api(value)
    elif isinstance(value, Route):
        _check_route(value)
    elif isinstance(value, Integration):
        _check_integration(value)
    elif isinstance(value, Authorizer):
        _check_authorizer(value)


def _check_api(api: Api) -> None:
    if api.api_key_selection_expression != "$request.header.x-api-key":
        raise _refuse("apiKeySelectionExpression", "API keys are not supported by framegate")
    if api.disable_execute_api_endpoint:
        raise _refuse("disableExecuteApiEndpoint", "framegate serves every API on its default endpoint")
    if api.ip_address_type != "ipv4":
        raise _refuse(f"ipAddressType {api.ip_address_type}", "framegate listens on the addresses it is given")


def _check_route(route: Route) -> None:
    if route.api_key_required:
        raise _refuse("apiKeyRequired", "API keys are not supported by framegate")
    if route.authorization_type in UNTIL_WIRED:
        raise _refuse(
            f"authorizationType {route.authorization_type}",
            "framegate does not enforce it on $connect yet, and will not accept it unenforced",
        )
    for key, declaration in route.request_parameters.items():
        if not _ROUTE_PARAMETER.fullmatch(key):
            raise BadRequestException(
                f"Invalid requestParameters key {key}: use route.request.header.{{name}} or "
                "route.request.querystring.{name}"
            )
        required = declaration.get("required") if isinstance(declaration, Mapping) else None
        if not isinstance(required, bool):
            raise BadRequestException(f'requestParameters {key} must be {{"required": true|false}}')
    expression = route.route_response_selection_expression
    if expression is not None and expression != DEFAULT:
        raise _refuse(f"routeResponseSelectionExpression {expression}", "WEBSOCKET routes support only $default")


def check_route_authorizer(route: Route, authorizers: Mapping[str, Authorizer]) -> None:
    """A CUSTOM route names an existing authorizer, and only CUSTOM routes name one
    (``ControlService._check_route`` already keeps authorization to ``$connect``)."""
    if route.authorization_type == "CUSTOM" and route.authorizer_id not in authorizers:
        raise BadRequestException(f"authorizerId {route.authorizer_id} does not name an authorizer of this API")
    if route.authorizer_id is not None and route.authorization_type != "CUSTOM":
        raise BadRequestException("authorizerId requires authorizationType CUSTOM")


def _check_integration(integration: Integration) -> None:
    kind = integration.integration_type
    uri = integration.integration_uri or ""
    if integration.connection_type != "INTERNET":
        raise _refuse(f"connectionType {integration.connection_type}", "VPC links are not supported by framegate")
    if integration.payload_format_version != PAYLOAD_FORMAT_VERSION:
        raise _refuse(f"payloadFormatVersion {integration.payload_format_version}", "WEBSOCKET APIs use 1.0")
    if kind in (AWS, AWS_PROXY):
        if not is_lambda_uri(uri):
            raise _refuse(
                f"integrationUri {uri}",
                f"{kind} integrations run Lambda functions only "
                "(arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{functionArn}/invocations)",
            )
        if integration.integration_method not in (None, LAMBDA_METHOD):
            raise _refuse(f"integrationMethod {integration.integration_method}", "Lambda is invoked with POST")
    if kind in _PROXY_TYPES:
        if integration.request_templates or integration.template_selection_expression:
            raise _refuse("requestTemplates", f"{kind} integrations pass the message through unchanged")
        if integration.passthrough_behavior != "WHEN_NO_MATCH":
            raise _refuse("passthroughBehavior", f"{kind} integrations pass the message through unchanged")
    if integration.request_parameters:
        if kind not in (HTTP, HTTP_PROXY) or uri.startswith(_WEBSOCKET_URI):
            raise _refuse("requestParameters", "they apply to HTTP integrations to http:// and https:// URIs")
        problem = parameters.check(integration.request_parameters)
        if problem is not None:
            raise BadRequestException(problem)


def check_integration_response(integration: Integration, response: IntegrationResponse) -> None:
    """Integration responses map non-proxy answers; a proxy's answer is relayed unchanged."""
    check_value(response)
    if integration.integration_type in _PROXY_TYPES:
        raise _refuse("IntegrationResponse", f"{integration.integration_type} integrations relay answers unchanged")


def _check_authorizer(authorizer: Authorizer) -> None:
    if authorizer.authorizer_type != "REQUEST":
        raise _refuse(f"authorizerType {authorizer.authorizer_type}", "WEBSOCKET APIs have REQUEST authorizers only")
    if not authorizer.identity_source:
        raise BadRequestException("identitySource is required for REQUEST authorizers")
    for source in authorizer.identity_source:
        if not _IDENTITY_SOURCE.fullmatch(source):
            raise BadRequestException(
                f"Invalid identitySource {source}: use route.request.header.{{name}}, "
                "route.request.querystring.{name}, stageVariables.{name} or context.{name}"
            )
    if not is_lambda_uri(authorizer.authorizer_uri):
        raise BadRequestException(
            f"Invalid authorizerUri {authorizer.authorizer_uri}: expected "
            "arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{functionArn}/invocations"
        )


def check_deployable(snapshot: Snapshot, lambda_endpoint: str | None) -> None:
    """Refuse to deploy what needs ``--lambda-endpoint`` when there is none.

    Raises:
        BadRequestException: naming the first route's Lambda integration or authorizer.
    """
    if lambda_endpoint is not None:
        return
    for route in snapshot.routes.values():
        integration = snapshot.integration_for(route)
        if integration is not None and integration.integration_type in (AWS, AWS_PROXY):
            raise BadRequestException(
                f"Integration {integration.integration_id} of route {route.route_key} invokes Lambda, "
                "but framegate was started without --lambda-endpoint"
            )
        authorizer = snapshot.authorizers.get(route.authorizer_id or "")
        if authorizer is not None:
            raise BadRequestException(
                f"Authorizer {authorizer.authorizer_id} of route {route.route_key} invokes Lambda, "
                "but framegate was started without --lambda-endpoint"
            )
