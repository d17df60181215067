"""ONE route table: (method, botocore requestUri) -> service operation + success status.

Layer 3. Handlers take a parsed ``Request`` and return a ``wire.Response``;
they never see a socket (``server.admin`` does the HTTP). Each row names the
botocore operation it implements, and ``tests/control/test_handlers.py``
checks method, URI and status of every row against botocore's
``apigatewayv2`` model. URI labels arrive percent-encoded one segment each
(``/routesettings/%24default``), so the path is matched first and each label
decoded after.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from proxy.control import support, wire
from proxy.control.model import (
    Api,
    ApiMapping,
    Authorizer,
    DomainName,
    Integration,
    IntegrationResponse,
    Route,
    RouteResponse,
    Stage,
)
from proxy.control.service import ControlService
from proxy.control.unsupported import unsupported_operation
from proxy.errors import ControlError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    """Path and query string as sent (``/v2/apis/abc/routes?maxResults=5``)."""
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    """Header names and values as received, in order (``control.access`` checks them)."""
    peer: str | None = None
    """The client's IP address."""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class Call:
    """One request as an operation sees it."""

    path: Mapping[str, str]
    query: Mapping[str, list[str]]
    body: Mapping[str, Any]

    def fields(self, cls: type) -> dict[str, Any]:
        support.check_body(cls, self.body)  # refuse members the model cannot hold, by name
        return wire.decode(cls, self.body)

    def arg(self, name: str) -> str:
        return self.path[name]

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


Handler = Callable[[ControlService, Call], object]


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    """The botocore operation name, e.g. ``CreateApi``."""
    method: str
    uri: str
    status: int
    call: Handler


def _desc(c: Call) -> str | None:
    value = c.body.get("description")
    return value if isinstance(value, str) else None


def _stage_name(c: Call) -> str | None:
    value = c.body.get("stageName")
    return value if isinstance(value, str) else None


# URI prefixes, so each row below reads as its botocore requestUri.
def _tag(service: ControlService, c: Call) -> dict[str, str]:
    service.tag_resource(c.arg("resource-arn"), c.fields(Api).get("tags", {}))
    return {}  # TagResource answers 201 with an empty JSON object


A = "/v2/apis"
R = A + "/{apiId}/routes"
RR = "/routeresponses"
IN = A + "/{apiId}/integrations"
IR = "/integrationresponses"
D = A + "/{apiId}/deployments"
S = A + "/{apiId}/stages"
AU = A + "/{apiId}/authorizers"
DN = "/v2/domainnames"
M = DN + "/{domainName}/apimappings"

# fmt: off
OPERATIONS: tuple[Operation, ...] = (
    Operation("CreateApi", "POST", A, 201, lambda s, c: s.create_api(c.fields(Api))),
    Operation("GetApis", "GET", A, 200, lambda s, c: s.list_apis()),
    Operation("GetApi", "GET", A + "/{apiId}", 200, lambda s, c: s.get_api(c.arg("apiId"))),
    Operation("UpdateApi", "PATCH", A + "/{apiId}", 200, lambda s, c: s.update_api(c.arg("apiId"), c.fields(Api))),
    Operation("DeleteApi", "DELETE", A + "/{apiId}", 204, lambda s, c: s.delete_api(c.arg("apiId"))),

    Operation("CreateRoute", "POST", R, 201, lambda s, c: s.create_route(c.arg("apiId"), c.fields(Route))),
    Operation("GetRoutes", "GET", R, 200, lambda s, c: s.list_routes(c.arg("apiId"))),
    Operation("GetRoute", "GET", R + "/{routeId}", 200, lambda s, c: s.route(c.arg("apiId"), c.arg("routeId"))),
    Operation("UpdateRoute", "PATCH", R + "/{routeId}", 200,
              lambda s, c: s.update_route(c.arg("apiId"), c.arg("routeId"), c.fields(Route))),
    Operation("DeleteRoute", "DELETE", R + "/{routeId}", 204,
              lambda s, c: s.delete_route(c.arg("apiId"), c.arg("routeId"))),

    Operation("DeleteRouteRequestParameter", "DELETE", R + "/{routeId}/requestparameters/{requestParameterKey}", 204,
              lambda s, c: s.delete_route_request_parameter(
                  c.arg("apiId"), c.arg("routeId"), c.arg("requestParameterKey"))),

    Operation("CreateRouteResponse", "POST", R + "/{routeId}" + RR, 201,
              lambda s, c: s.create_route_response(c.arg("apiId"), c.arg("routeId"), c.fields(RouteResponse))),
    Operation("GetRouteResponses", "GET", R + "/{routeId}" + RR, 200,
              lambda s, c: list(s.route(c.arg("apiId"), c.arg("routeId")).route_responses)),
    Operation("GetRouteResponse", "GET", R + "/{routeId}" + RR + "/{routeResponseId}", 200,
              lambda s, c: s.route_response(c.arg("apiId"), c.arg("routeId"), c.arg("routeResponseId"))),
    Operation("UpdateRouteResponse", "PATCH", R + "/{routeId}" + RR + "/{routeResponseId}", 200,
              lambda s, c: s.update_route_response(
                  c.arg("apiId"), c.arg("routeId"), c.arg("routeResponseId"), c.fields(RouteResponse))),
    Operation("DeleteRouteResponse", "DELETE", R + "/{routeId}" + RR + "/{routeResponseId}", 204,
              lambda s, c: s.delete_route_response(c.arg("apiId"), c.arg("routeId"), c.arg("routeResponseId"))),

    Operation("CreateIntegration", "POST", IN, 201,
              lambda s, c: s.create_integration(c.arg("apiId"), c.fields(Integration))),
    Operation("GetIntegrations", "GET", IN, 200, lambda s, c: s.list_integrations(c.arg("apiId"))),
    Operation("GetIntegration", "GET", IN + "/{integrationId}", 200,
              lambda s, c: s.integration(c.arg("apiId"), c.arg("integrationId"))),
    Operation("UpdateIntegration", "PATCH", IN + "/{integrationId}", 200,
              lambda s, c: s.update_integration(c.arg("apiId"), c.arg("integrationId"), c.fields(Integration))),
    Operation("DeleteIntegration", "DELETE", IN + "/{integrationId}", 204,
              lambda s, c: s.delete_integration(c.arg("apiId"), c.arg("integrationId"))),

    Operation("CreateIntegrationResponse", "POST", IN + "/{integrationId}" + IR, 201,
              lambda s, c: s.create_integration_response(
                  c.arg("apiId"), c.arg("integrationId"), c.fields(IntegrationResponse))),
    Operation("GetIntegrationResponses", "GET", IN + "/{integrationId}" + IR, 200,
              lambda s, c: list(s.integration(c.arg("apiId"), c.arg("integrationId")).integration_responses)),
    Operation("GetIntegrationResponse", "GET", IN + "/{integrationId}" + IR + "/{integrationResponseId}", 200,
              lambda s, c: s.integration_response(
                  c.arg("apiId"), c.arg("integrationId"), c.arg("integrationResponseId"))),
    Operation("UpdateIntegrationResponse", "PATCH", IN + "/{integrationId}" + IR + "/{integrationResponseId}", 200,
              lambda s, c: s.update_integration_response(
                  c.arg("apiId"), c.arg("integrationId"), c.arg("integrationResponseId"),
                  c.fields(IntegrationResponse))),
    Operation("DeleteIntegrationResponse", "DELETE", IN + "/{integrationId}" + IR + "/{integrationResponseId}", 204,
              lambda s, c: s.delete_integration_response(
                  c.arg("apiId"), c.arg("integrationId"), c.arg("integrationResponseId"))),

    Operation("CreateDeployment", "POST", D, 201,
              lambda s, c: s.create_deployment(c.arg("apiId"), _desc(c), _stage_name(c))),
    Operation("GetDeployments", "GET", D, 200, lambda s, c: s.list_deployments(c.arg("apiId"))),
    Operation("GetDeployment", "GET", D + "/{deploymentId}", 200,
              lambda s, c: s.deployment(c.arg("apiId"), c.arg("deploymentId"))),
    Operation("UpdateDeployment", "PATCH", D + "/{deploymentId}", 200,
              lambda s, c: s.update_deployment(c.arg("apiId"), c.arg("deploymentId"), _desc(c))),
    Operation("DeleteDeployment", "DELETE", D + "/{deploymentId}", 204,
              lambda s, c: s.delete_deployment(c.arg("apiId"), c.arg("deploymentId"))),

    Operation("CreateStage", "POST", S, 201, lambda s, c: s.create_stage(c.arg("apiId"), c.fields(Stage))),
    Operation("GetStages", "GET", S, 200, lambda s, c: s.list_stages(c.arg("apiId"))),
    Operation("GetStage", "GET", S + "/{stageName}", 200, lambda s, c: s.stage(c.arg("apiId"), c.arg("stageName"))),
    Operation("UpdateStage", "PATCH", S + "/{stageName}", 200,
              lambda s, c: s.update_stage(c.arg("apiId"), c.arg("stageName"), c.fields(Stage))),
    Operation("DeleteStage", "DELETE", S + "/{stageName}", 204,
              lambda s, c: s.delete_stage(c.arg("apiId"), c.arg("stageName"))),
    Operation("DeleteRouteSettings", "DELETE", S + "/{stageName}/routesettings/{routeKey}", 204,
              lambda s, c: s.delete_route_settings(c.arg("apiId"), c.arg("stageName"), c.arg("routeKey"))),
    Operation("DeleteAccessLogSettings", "DELETE", S + "/{stageName}/accesslogsettings", 204,
              lambda s, c: s.delete_access_log_settings(c.arg("apiId"), c.arg("stageName"))),

    Operation("CreateAuthorizer", "POST", AU, 201,
              lambda s, c: s.create_authorizer(c.arg("apiId"), c.fields(Authorizer))),
    Operation("GetAuthorizers", "GET", AU, 200, lambda s, c: s.list_authorizers(c.arg("apiId"))),
    Operation("GetAuthorizer", "GET", AU + "/{authorizerId}", 200,
              lambda s, c: s.authorizer(c.arg("apiId"), c.arg("authorizerId"))),
    Operation("UpdateAuthorizer", "PATCH", AU + "/{authorizerId}", 200,
              lambda s, c: s.update_authorizer(c.arg("apiId"), c.arg("authorizerId"), c.fields(Authorizer))),
    Operation("DeleteAuthorizer", "DELETE", AU + "/{authorizerId}", 204,
              lambda s, c: s.delete_authorizer(c.arg("apiId"), c.arg("authorizerId"))),

    Operation("CreateDomainName", "POST", DN, 201, lambda s, c: s.create_domain_name(c.fields(DomainName))),
    Operation("GetDomainNames", "GET", DN, 200, lambda s, c: s.list_domain_names()),
    Operation("GetDomainName", "GET", DN + "/{domainName}", 200, lambda s, c: s.domain(c.arg("domainName"))),
    Operation("UpdateDomainName", "PATCH", DN + "/{domainName}", 200,
              lambda s, c: s.update_domain_name(c.arg("domainName"), c.fields(DomainName))),
    Operation("DeleteDomainName", "DELETE", DN + "/{domainName}", 204,
              lambda s, c: s.delete_domain_name(c.arg("domainName"))),

    Operation("CreateApiMapping", "POST", M, 201,
              lambda s, c: s.create_api_mapping(c.arg("domainName"), c.fields(ApiMapping))),
    Operation("GetApiMappings", "GET", M, 200, lambda s, c: list(s.domain(c.arg("domainName")).api_mappings)),
    Operation("GetApiMapping", "GET", M + "/{apiMappingId}", 200,
              lambda s, c: s.api_mapping(c.arg("domainName"), c.arg("apiMappingId"))),
    Operation("UpdateApiMapping", "PATCH", M + "/{apiMappingId}", 200,
              lambda s, c: s.update_api_mapping(c.arg("domainName"), c.arg("apiMappingId"), c.fields(ApiMapping))),
    Operation("DeleteApiMapping", "DELETE", M + "/{apiMappingId}", 204,
              lambda s, c: s.delete_api_mapping(c.arg("domainName"), c.arg("apiMappingId"))),

    Operation("TagResource", "POST", "/v2/tags/{resource-arn}", 201,
              lambda s, c: _tag(s, c)),
    Operation("GetTags", "GET", "/v2/tags/{resource-arn}", 200,
              lambda s, c: {"tags": dict(s.get_tags(c.arg("resource-arn")))}),
    Operation("UntagResource", "DELETE", "/v2/tags/{resource-arn}", 204,
              lambda s, c: s.untag_resource(c.arg("resource-arn"), c.query.get("tagKeys", []))),
)
# fmt: on


def _pattern(uri: str) -> re.Pattern[str]:
    """``/v2/apis/{apiId}`` -> a regex with one group per label (labels never span a ``/``)."""
    parts = re.split(r"\{([^}]+)\}", uri)
    regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{_group(part)}>[^/]+)" for i, part in enumerate(parts))
    return re.compile(regex)


def _group(label: str) -> str:
    return label.replace("-", "_")


_TABLE = tuple((op, _pattern(op.uri)) for op in OPERATIONS)


def match(method: str, path: str) -> tuple[Operation, dict[str, str]]:
    """The operation for ``method path`` and its decoded URI labels.

    Raises:
        BadRequestException: no operation has this method and path; the message
            names the apigatewayv2 operation framegate does not support, if any.
    """
    for op, pattern in _TABLE:
        found = pattern.fullmatch(path)
        if found and op.method == method:
            labels = {_label(op, name): unquote(value) for name, value in found.groupdict().items()}
            return op, labels
    raise unsupported_operation(method, path)


def _label(op: Operation, group: str) -> str:
    names: list[str] = re.findall(r"\{([^}]+)\}", op.uri)
    return next(name for name in names if _group(name) == group)


class Router:
    """Dispatches admin requests to a ``ControlService`` through ``OPERATIONS``."""

    def __init__(self, service: ControlService) -> None:
        self.service = service

    def handle(self, request: Request) -> wire.Response:
        try:
            return self._dispatch(request)
        except ControlError as exc:
            logger.debug("control request %s %s failed: %s", request.method, request.target, exc)
            return wire.error(exc)

    def _dispatch(self, request: Request) -> wire.Response:
        split = urlsplit(request.target)
        op, labels = match(request.method, split.path)
        call = Call(labels, parse_qs(split.query), wire.parse_body(request.body))
        result = op.call(self.service, call)
        return wire.ok(op.status, self._body(result, call))

    def _body(self, result: object, call: Call) -> object | None:
        if result is None:
            return None
        region, endpoint = self.service.region, self.service.data_endpoint
        if isinstance(result, list):
            query = {k: v[0] for k, v in call.query.items() if v}
            return wire.page(result, query, region, endpoint)
        if isinstance(result, Mapping):
            return dict(result)
        return wire.encode(result, region, endpoint)
