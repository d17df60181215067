"""Nothing accepted and ignored: every member the data plane does not execute is refused by name.

Driven with boto3 against a real admin listener; the member list is checked
against botocore's own apigatewayv2 model so no member goes undecided.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.loaders
import pytest

from proxy.config import Config
from proxy.control import support
from proxy.control.catalog import MemoryCatalog
from proxy.control.declarative import apply_document
from proxy.control.handlers import OPERATIONS
from proxy.control.plane import open_control_plane
from proxy.errors import BadRequestException

MODEL: dict[str, Any] = botocore.loaders.Loader().load_service_model("apigatewayv2", "service-2")
LAMBDA_URI = (
    "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:1:function:f/invocations"
)
Case = Callable[[Any, str], Any]


def _body_members(operation: str) -> set[str]:
    shape = MODEL["shapes"][MODEL["operations"][operation]["input"]["shape"]]
    return {
        member.get("locationName", name) for name, member in shape["members"].items() if member.get("location") is None
    }


def _resource(operation: str) -> str:
    return operation.removeprefix("Create").removeprefix("Update")


DECIDED_OPERATIONS = sorted(
    op.name for op in OPERATIONS if op.name.startswith(("Create", "Update")) or op.name == "TagResource"
)


@pytest.mark.parametrize("operation", DECIDED_OPERATIONS)
def test_every_body_member_of_botocores_model_is_executed_or_refused(operation: str) -> None:
    decided = support.MEMBERS[_resource(operation)]
    assert _body_members(operation) - set(decided) == set()


def _route(client: Any, api_id: str, **kwargs: Any) -> Any:
    return client.create_route(ApiId=api_id, RouteKey="$connect", **kwargs)


def _integration(client: Any, api_id: str, **kwargs: Any) -> Any:
    values = {"IntegrationType": "HTTP_PROXY", "IntegrationUri": "http://127.0.0.1:9/x", **kwargs}
    return client.create_integration(ApiId=api_id, **values)


def _integration_response(client: Any, api_id: str, kind: str = "HTTP", **kwargs: Any) -> Any:
    integration = _integration(client, api_id, IntegrationType=kind)["IntegrationId"]
    return client.create_integration_response(
        ApiId=api_id, IntegrationId=integration, IntegrationResponseKey="$default", **kwargs
    )


def _route_response(client: Any, api_id: str, **kwargs: Any) -> Any:
    route_id = client.create_route(ApiId=api_id, RouteKey="send")["RouteId"]
    return client.create_route_response(ApiId=api_id, RouteId=route_id, RouteResponseKey="$default", **kwargs)


def _authorizer(client: Any, api_id: str, **kwargs: Any) -> Any:
    values = {
        "Name": "auth",
        "AuthorizerType": "REQUEST",
        "IdentitySource": ["route.request.header.Auth"],
        "AuthorizerUri": LAMBDA_URI,
        **kwargs,
    }
    return client.create_authorizer(ApiId=api_id, **values)


def _api(client: Any, api_id: str, **kwargs: Any) -> Any:
    return client.update_api(ApiId=api_id, **kwargs)


REFUSALS: dict[str, tuple[Case, str]] = {
    # CreateApi / UpdateApi
    "api CorsConfiguration": (lambda c, a: _api(c, a, CorsConfiguration={"AllowOrigins": ["*"]}), "corsConfiguration"),
    "api CredentialsArn": (lambda c, a: _api(c, a, CredentialsArn="arn:aws:iam::1:role/r"), "credentialsArn"),
    "api RouteKey": (lambda c, a: _api(c, a, RouteKey="GET /"), "routeKey"),
    "api Target": (lambda c, a: _api(c, a, Target="arn:x"), "target"),
    "api DisableExecuteApiEndpoint": (lambda c, a: _api(c, a, DisableExecuteApiEndpoint=True), "disableExecute"),
    "api dualstack": (lambda c, a: _api(c, a, IpAddressType="dualstack"), "ipAddressType dualstack"),
    "api key selection": (
        lambda c, a: _api(c, a, ApiKeySelectionExpression="$context.authorizer.usageIdentifierKey"),
        "apiKeySelectionExpression",
    ),
    # CreateRoute
    "route ApiKeyRequired": (lambda c, a: _route(c, a, ApiKeyRequired=True), "apiKeyRequired"),
    "route CUSTOM without an authorizer": (lambda c, a: _route(c, a, AuthorizationType="CUSTOM"), "authorizerId"),
    "route JWT": (lambda c, a: _route(c, a, AuthorizationType="JWT"), "JWT"),
    "route AuthorizerId without CUSTOM": (lambda c, a: _route(c, a, AuthorizerId="abc123"), "authorizerId"),
    "route AuthorizationScopes": (lambda c, a: _route(c, a, AuthorizationScopes=["s"]), "authorizationScopes"),
    "route RequestModels": (lambda c, a: _route(c, a, RequestModels={"$default": "m"}), "requestModels"),
    "route ModelSelectionExpression": (
        lambda c, a: _route(c, a, ModelSelectionExpression="$request.body.t"),
        "modelSelectionExpression",
    ),
    "route parameter key": (
        lambda c, a: _route(c, a, RequestParameters={"route.request.body.x": {"Required": False}}),
        "route.request.body.x",
    ),
    "route response selection": (
        lambda c, a: _route(c, a, RouteResponseSelectionExpression="$request.body.x"),
        "routeResponseSelectionExpression",
    ),
    # CreateRouteResponse
    "route response models": (lambda c, a: _route_response(c, a, ResponseModels={"$default": "m"}), "responseModels"),
    "route response parameters": (
        lambda c, a: _route_response(c, a, ResponseParameters={"x": {"Required": True}}),
        "responseParameters",
    ),
    "route response model selection": (
        lambda c, a: _route_response(c, a, ModelSelectionExpression="$default"),
        "modelSelectionExpression",
    ),
    # CreateIntegration
    "integration VPC_LINK": (lambda c, a: _integration(c, a, ConnectionType="VPC_LINK"), "connectionType VPC_LINK"),
    "integration ConnectionId": (lambda c, a: _integration(c, a, ConnectionId="vpc1"), "connectionId"),
    "integration content handling": (
        lambda c, a: _integration(c, a, ContentHandlingStrategy="CONVERT_TO_TEXT"),
        "contentHandlingStrategy",
    ),
    "integration CredentialsArn": (
        lambda c, a: _integration(c, a, CredentialsArn="arn:aws:iam::1:role/r"),
        "credentialsArn",
    ),
    "integration subtype": (
        lambda c, a: _integration(c, a, IntegrationSubtype="SQS-SendMessage"),
        "integrationSubtype",
    ),
    "integration ResponseParameters": (
        lambda c, a: _integration(c, a, ResponseParameters={"200": {"overwrite:header.x": "y"}}),
        "responseParameters",
    ),
    "integration TlsConfig": (lambda c, a: _integration(c, a, TlsConfig={"ServerNameToVerify": "h"}), "tlsConfig"),
    "integration payload 2.0": (lambda c, a: _integration(c, a, PayloadFormatVersion="2.0"), "payloadFormatVersion"),
    "integration AWS service": (
        lambda c, a: _integration(
            c, a, IntegrationType="AWS", IntegrationUri="arn:aws:apigateway:us-east-1:sqs:path/1/queue"
        ),
        "Lambda functions only",
    ),
    "integration AWS_PROXY non-Lambda": (
        lambda c, a: _integration(c, a, IntegrationType="AWS_PROXY", IntegrationUri="http://127.0.0.1:9/x"),
        "Lambda functions only",
    ),
    "integration Lambda GET": (
        lambda c, a: _integration(
            c, a, IntegrationType="AWS_PROXY", IntegrationUri=LAMBDA_URI, IntegrationMethod="GET"
        ),
        "integrationMethod GET",
    ),
    "integration proxy templates": (
        lambda c, a: _integration(c, a, RequestTemplates={"$default": "x"}),
        "requestTemplates",
    ),
    "integration proxy passthrough": (
        lambda c, a: _integration(c, a, PassthroughBehavior="NEVER"),
        "passthroughBehavior",
    ),
    "integration MOCK parameters": (
        lambda c, a: _integration(
            c, a, IntegrationType="MOCK", RequestParameters={"integration.request.header.x": "'y'"}
        ),
        "requestParameters",
    ),
    "integration ws parameters": (
        lambda c, a: _integration(
            c, a, IntegrationUri="ws://127.0.0.1:9", RequestParameters={"integration.request.header.x": "'y'"}
        ),
        "requestParameters",
    ),
    "integration parameter path target": (
        lambda c, a: _integration(c, a, RequestParameters={"integration.request.path.x": "'y'"}),
        "integration.request.path.x",
    ),
    "integration parameter source": (
        lambda c, a: _integration(c, a, RequestParameters={"integration.request.header.x": "method.request.header.y"}),
        "method.request.header.y",
    ),
    # CreateIntegrationResponse
    "integration response content handling": (
        lambda c, a: _integration_response(c, a, ContentHandlingStrategy="CONVERT_TO_TEXT"),
        "contentHandlingStrategy",
    ),
    "integration response parameters": (
        lambda c, a: _integration_response(c, a, ResponseParameters={"method.response.header.x": "'y'"}),
        "responseParameters",
    ),
    "integration response on a proxy": (
        lambda c, a: _integration_response(c, a, kind="HTTP_PROXY"),
        "HTTP_PROXY integrations relay answers unchanged",
    ),
    # CreateStage
    "stage client certificate": (
        lambda c, a: c.create_stage(ApiId=a, StageName="s", ClientCertificateId="cert1"),
        "clientCertificateId",
    ),
    # CreateDomainName
    "domain mutual TLS": (
        lambda c, a: c.create_domain_name(
            DomainName="ws.example.com", MutualTlsAuthentication={"TruststoreUri": "s3://b/k"}
        ),
        "mutualTlsAuthentication",
    ),
    "domain routing rules": (
        lambda c, a: c.create_domain_name(DomainName="ws.example.com", RoutingMode="ROUTING_RULE_ONLY"),
        "routingMode",
    ),
    # CreateAuthorizer
    "authorizer JWT": (
        lambda c, a: _authorizer(c, a, AuthorizerType="JWT"),
        "authorizerType JWT",
    ),
    "authorizer JwtConfiguration": (
        lambda c, a: _authorizer(c, a, JwtConfiguration={"Audience": ["x"], "Issuer": "https://i"}),
        "jwtConfiguration",
    ),
    "authorizer credentials": (
        lambda c, a: _authorizer(c, a, AuthorizerCredentialsArn="arn:aws:iam::1:role/r"),
        "authorizerCredentialsArn",
    ),
    "authorizer caching": (
        lambda c, a: _authorizer(c, a, AuthorizerResultTtlInSeconds=300),
        "authorizerResultTtlInSeconds",
    ),
    "authorizer simple responses": (
        lambda c, a: _authorizer(c, a, EnableSimpleResponses=True),
        "enableSimpleResponses",
    ),
    "authorizer payload version": (
        lambda c, a: _authorizer(c, a, AuthorizerPayloadFormatVersion="2.0"),
        "authorizerPayloadFormatVersion",
    ),
    "authorizer validation expression": (
        lambda c, a: _authorizer(c, a, IdentityValidationExpression=".*"),
        "identityValidationExpression",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_members_are_named_in_a_bad_request(client: Any, case: str) -> None:
    call, named = REFUSALS[case]
    api_id = client.create_api(Name="t", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action")[
        "ApiId"
    ]
    with pytest.raises(client.exceptions.BadRequestException) as refused:
        call(client, api_id)
    assert named in refused.value.response["Error"]["Message"]


def test_the_refusals_leave_nothing_behind(client: Any) -> None:
    api_id = client.create_api(Name="t", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action")[
        "ApiId"
    ]
    with pytest.raises(client.exceptions.BadRequestException):
        _route(client, api_id, AuthorizationType="CUSTOM")
    with pytest.raises(client.exceptions.BadRequestException):
        _integration(client, api_id, TlsConfig={"ServerNameToVerify": "h"})
    assert client.get_routes(ApiId=api_id)["Items"] == []
    assert client.get_integrations(ApiId=api_id)["Items"] == []


def test_empty_refused_members_and_the_default_values_are_accepted(client: Any) -> None:
    api_id = client.create_api(Name="t", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action")[
        "ApiId"
    ]
    route = _route(client, api_id, AuthorizationType="NONE", ApiKeyRequired=False, RequestModels={})
    assert route["AuthorizationType"] == "NONE"
    parameters = {"integration.request.header.connectionId": "context.connectionId"}
    integration = _integration(client, api_id, ConnectionType="INTERNET", RequestParameters=parameters)
    assert integration["RequestParameters"] == parameters
    domain = client.create_domain_name(DomainName="ws.example.com", RoutingMode="API_MAPPING_ONLY")
    assert domain["DomainName"] == "ws.example.com"


def test_what_connect_enforces_is_accepted(client: Any) -> None:
    """AWS_IAM, CUSTOM authorizers and required parameters run on $connect (tests/server/test_integrations_e2e.py)."""
    api_id = client.create_api(Name="t", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action")[
        "ApiId"
    ]
    authorizer_id = _authorizer(client, api_id)["AuthorizerId"]
    required = {"route.request.querystring.token": {"Required": True}}
    route = _route(client, api_id, AuthorizationType="CUSTOM", AuthorizerId=authorizer_id, RequestParameters=required)
    assert (route["AuthorizationType"], route["AuthorizerId"]) == ("CUSTOM", authorizer_id)
    assert route["RequestParameters"] == required
    other = client.create_api(Name="i", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action")
    assert _route(client, other["ApiId"], AuthorizationType="AWS_IAM")["AuthorizationType"] == "AWS_IAM"


def test_unimplemented_operations_answer_not_supported(client: Any) -> None:
    api_id = client.create_api(Name="t", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action")[
        "ApiId"
    ]
    with pytest.raises(client.exceptions.BadRequestException, match="CreateModel is not supported"):
        client.create_model(ApiId=api_id, Name="m", Schema="{}")
    with pytest.raises(client.exceptions.BadRequestException, match="GetVpcLinks is not supported"):
        client.get_vpc_links()
    with pytest.raises(client.exceptions.BadRequestException, match="ResetAuthorizersCache is not supported"):
        client.reset_authorizers_cache(ApiId=api_id, StageName="prod")


@pytest.mark.parametrize(
    ("integration", "named"),
    [
        (
            {"integrationType": "HTTP_PROXY", "integrationUri": "http://127.0.0.1:9/", "tlsConfig": {"x": 1}},
            "tlsConfig",
        ),
        (
            {"integrationType": "HTTP_PROXY", "integrationUri": "ws://127.0.0.1:9/", "credentialsArn": "r"},
            "credentialsArn",
        ),
        ({"integrationType": "AWS", "integrationUri": "arn:aws:apigateway:us-east-1:sqs:path/1/q"}, "Lambda functions"),
    ],
)
def test_config_documents_get_the_same_refusals(tmp_path: Path, integration: dict[str, Any], named: str) -> None:
    document = {
        "apis": [
            {
                "name": "doc",
                "protocolType": "WEBSOCKET",
                "routeSelectionExpression": "$request.body.action",
                "routes": [{"routeKey": "$default", "integration": integration}],
            }
        ]
    }
    plane = open_control_plane(Config(db_path=str(tmp_path / "doc.db")), MemoryCatalog())
    try:
        with pytest.raises(BadRequestException, match=named):
            apply_document(plane.service, document)
    finally:
        plane.close()
