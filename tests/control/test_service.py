"""The apigatewayv2 operations as boto3 sees them, against a real admin listener."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from proxy.control.catalog import MemoryCatalog
from tests.control.conftest import Admin, make_api, make_proxy_route

BACKEND_A = "ws://127.0.0.1:9101"
BACKEND_B = "ws://127.0.0.1:9102"


def deployed_api(client: Any, uri: str = BACKEND_A, stage: str = "prod") -> tuple[str, str]:
    """An API with a $default proxy route, deployed to ``stage``; returns (api id, deployment id)."""
    api_id = make_api(client)
    make_proxy_route(client, api_id, uri)
    client.create_stage(ApiId=api_id, StageName=stage)
    deployment = client.create_deployment(ApiId=api_id, StageName=stage)
    return api_id, deployment["DeploymentId"]


def test_create_api_fills_aws_defaults(client: Any) -> None:
    api = client.create_api(Name="chat", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action")
    assert len(api["ApiId"]) == 10
    assert api["ApiEndpoint"] == f"wss://{api['ApiId']}.execute-api.us-east-1.amazonaws.com"
    assert api["ApiKeySelectionExpression"] == "$request.header.x-api-key"
    assert api["ProtocolType"] == "WEBSOCKET"
    assert isinstance(api["CreatedDate"], datetime)
    assert api["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert api["ResponseMetadata"]["RequestId"]
    assert client.get_api(ApiId=api["ApiId"])["Name"] == "chat"


def test_route_integration_and_responses_round_trip(client: Any) -> None:
    api_id = make_api(client)
    integration = client.create_integration(
        ApiId=api_id, IntegrationType="MOCK", RequestTemplates={"$default": '{"statusCode": 200}'}
    )
    assert integration["PassthroughBehavior"] == "WHEN_NO_MATCH"
    assert integration["TimeoutInMillis"] == 29000
    assert integration["ConnectionType"] == "INTERNET"
    integration_id = integration["IntegrationId"]
    response = client.create_integration_response(
        ApiId=api_id, IntegrationId=integration_id, IntegrationResponseKey="$default"
    )
    route = client.create_route(ApiId=api_id, RouteKey="sendmessage", Target=f"integrations/{integration_id}")
    assert route["ApiKeyRequired"] is False and route["AuthorizationType"] == "NONE"
    route_response = client.create_route_response(ApiId=api_id, RouteId=route["RouteId"], RouteResponseKey="$default")

    got = client.get_integration_response(
        ApiId=api_id, IntegrationId=integration_id, IntegrationResponseId=response["IntegrationResponseId"]
    )
    assert got["IntegrationResponseKey"] == "$default"
    listed = client.get_route_responses(ApiId=api_id, RouteId=route["RouteId"])["Items"]
    assert [r["RouteResponseId"] for r in listed] == [route_response["RouteResponseId"]]
    updated = client.update_route(ApiId=api_id, RouteId=route["RouteId"], RouteKey="send")
    assert updated["RouteKey"] == "send" and updated["Target"] == f"integrations/{integration_id}"


def test_create_stage_has_the_seed_default_route_settings(client: Any) -> None:
    api_id = make_api(client)
    stage = client.create_stage(ApiId=api_id, StageName="test")
    assert stage["DefaultRouteSettings"] == {
        "DataTraceEnabled": False,
        "DetailedMetricsEnabled": False,
        "ThrottlingBurstLimit": 5000,
        "ThrottlingRateLimit": 10000.0,
    }
    assert stage["StageVariables"] == {}
    assert stage["RouteSettings"] == {}
    assert isinstance(stage["LastUpdatedDate"], datetime)


def test_create_deployment_with_stage_name_repoints_the_stage(client: Any) -> None:
    api_id, first = deployed_api(client)
    second = client.create_deployment(ApiId=api_id, StageName="prod", Description="v2")
    assert second["DeploymentStatus"] == "DEPLOYED"
    assert isinstance(second["CreatedDate"], datetime)
    assert client.get_stage(ApiId=api_id, StageName="prod")["DeploymentId"] == second["DeploymentId"]
    ids = [d["DeploymentId"] for d in client.get_deployments(ApiId=api_id)["Items"]]
    assert ids == [first, second["DeploymentId"]]


def test_update_stage_settings_and_variables(client: Any) -> None:
    api_id, _ = deployed_api(client)
    client.create_route(ApiId=api_id, RouteKey="msg", Target=client.get_routes(ApiId=api_id)["Items"][0]["Target"])
    stage = client.update_stage(
        ApiId=api_id,
        StageName="prod",
        RouteSettings={"msg": {"ThrottlingBurstLimit": 100, "ThrottlingRateLimit": 2000}},
        DefaultRouteSettings={"ThrottlingBurstLimit": 50},
        StageVariables={"url": "127.0.0.1:9101", "color": "blue"},
    )
    assert stage["RouteSettings"] == {"msg": {"ThrottlingBurstLimit": 100, "ThrottlingRateLimit": 2000.0}}
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == 50
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == 10000.0
    assert stage["StageVariables"] == {"url": "127.0.0.1:9101", "color": "blue"}
    client.delete_route_settings(ApiId=api_id, StageName="prod", RouteKey="msg")
    assert client.get_stage(ApiId=api_id, StageName="prod")["RouteSettings"] == {}


def test_update_stage_deployment_id_promotes(client: Any) -> None:
    api_id, first = deployed_api(client, stage="test")
    client.create_stage(ApiId=api_id, StageName="prod", DeploymentId=first)
    second = client.create_deployment(ApiId=api_id, StageName="test")["DeploymentId"]
    assert client.get_stage(ApiId=api_id, StageName="prod")["DeploymentId"] == first
    client.update_stage(ApiId=api_id, StageName="prod", DeploymentId=second)
    assert {s["StageName"]: s["DeploymentId"] for s in client.get_stages(ApiId=api_id)["Items"]} == {
        "test": second,
        "prod": second,
    }


def test_list_pagination_with_max_results_and_next_token(client: Any) -> None:
    api_id = make_api(client)
    _, integration_id = make_proxy_route(client, api_id, BACKEND_A)
    keys = [f"r{i}" for i in range(7)]
    for key in keys:
        client.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{integration_id}")
    first = client.get_routes(ApiId=api_id, MaxResults="3")
    assert len(first["Items"]) == 3 and first["NextToken"]
    second = client.get_routes(ApiId=api_id, MaxResults="3", NextToken=first["NextToken"])
    third = client.get_routes(ApiId=api_id, MaxResults="3", NextToken=second["NextToken"])
    assert "NextToken" not in third
    seen = [r["RouteKey"] for page in (first, second, third) for r in page["Items"]]
    assert seen == ["$default", *keys]
    paginated = client.get_paginator("get_routes").paginate(ApiId=api_id, PaginationConfig={"PageSize": 2})
    assert [r["RouteKey"] for page in paginated for r in page["Items"]] == seen


def test_not_found(client: Any) -> None:
    with pytest.raises(client.exceptions.NotFoundException) as info:
        client.get_api(ApiId="nosuchapi0")
    assert info.value.response["ResourceType"] == "Api"
    assert "nosuchapi0" in info.value.response["Error"]["Message"]
    api_id = make_api(client)
    with pytest.raises(client.exceptions.NotFoundException):
        client.get_stage(ApiId=api_id, StageName="nope")
    with pytest.raises(client.exceptions.NotFoundException):
        client.create_deployment(ApiId=api_id, StageName="nope")


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [({"bad-name": "x"}, "name"), ({"url": "has space"}, "value"), ({"x" * 65: "v"}, "name")],
)
def test_invalid_stage_variables_are_bad_requests(client: Any, variables: dict[str, str], fragment: str) -> None:
    api_id = make_api(client)
    with pytest.raises(client.exceptions.BadRequestException) as info:
        client.create_stage(ApiId=api_id, StageName="prod", StageVariables=variables)
    assert fragment in info.value.response["Error"]["Message"]


def test_bad_requests(client: Any) -> None:
    with pytest.raises(client.exceptions.BadRequestException, match="WEBSOCKET"):
        client.create_api(Name="h", ProtocolType="HTTP")
    with pytest.raises(client.exceptions.BadRequestException, match="routeSelectionExpression"):
        client.create_api(Name="w", ProtocolType="WEBSOCKET")
    api_id = make_api(client)
    with pytest.raises(client.exceptions.BadRequestException, match="no routes"):
        client.create_deployment(ApiId=api_id)
    with pytest.raises(client.exceptions.BadRequestException, match="reserved"):
        client.create_route(ApiId=api_id, RouteKey="$custom")
    with pytest.raises(client.exceptions.BadRequestException, match="integrationUri"):
        client.create_integration(ApiId=api_id, IntegrationType="HTTP_PROXY")
    with pytest.raises(client.exceptions.BadRequestException, match="timeoutInMillis"):
        client.create_integration(ApiId=api_id, IntegrationType="MOCK", TimeoutInMillis=30000)


def test_conflicts(client: Any) -> None:
    api_id, _ = deployed_api(client)
    with pytest.raises(client.exceptions.ConflictException):
        client.create_route(ApiId=api_id, RouteKey="$default")
    with pytest.raises(client.exceptions.ConflictException):
        client.create_stage(ApiId=api_id, StageName="prod")


def test_eleventh_stage_is_refused(client: Any) -> None:
    api_id = make_api(client)
    for i in range(10):
        client.create_stage(ApiId=api_id, StageName=f"s{i}")
    with pytest.raises(client.exceptions.TooManyRequestsException) as info:
        client.create_stage(ApiId=api_id, StageName="s10")
    assert info.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert len(client.get_stages(ApiId=api_id, MaxResults="50")["Items"]) == 10


def test_deleting_a_deployment_in_use_is_refused(client: Any) -> None:
    api_id, deployment_id = deployed_api(client)
    with pytest.raises(client.exceptions.BadRequestException, match="prod"):
        client.delete_deployment(ApiId=api_id, DeploymentId=deployment_id)
    client.delete_stage(ApiId=api_id, StageName="prod")
    assert (
        client.delete_deployment(ApiId=api_id, DeploymentId=deployment_id)["ResponseMetadata"]["HTTPStatusCode"] == 204
    )
    assert client.get_deployments(ApiId=api_id)["Items"] == []


def test_deployment_is_an_immutable_snapshot(client: Any, admin: Admin) -> None:
    api_id, deployment_id = deployed_api(client, BACKEND_A)
    integration_id = client.get_integrations(ApiId=api_id)["Items"][0]["IntegrationId"]
    client.update_integration(ApiId=api_id, IntegrationId=integration_id, IntegrationUri=BACKEND_B)
    client.create_route(ApiId=api_id, RouteKey="late", Target=f"integrations/{integration_id}")

    target = admin.catalog.resolve(f"{api_id}.execute-api.local", "/prod")
    assert target.deployment_id == deployment_id
    assert set(target.snapshot.routes) == {"$default"}
    assert target.snapshot.integrations[integration_id].integration_uri == BACKEND_A

    redeployed = client.create_deployment(ApiId=api_id, StageName="prod")["DeploymentId"]
    target = admin.catalog.resolve(f"{api_id}.execute-api.local", "/prod")
    assert target.deployment_id == redeployed
    assert target.snapshot.integrations[integration_id].integration_uri == BACKEND_B
    assert set(target.snapshot.routes) == {"$default", "late"}


def test_stage_changes_reach_the_catalog_at_once(client: Any, admin: Admin) -> None:
    api_id, _ = deployed_api(client)
    host = f"{api_id}.execute-api.local"
    client.update_stage(ApiId=api_id, StageName="prod", StageVariables={"url": "127.0.0.1:9103"})
    assert admin.catalog.resolve(host, "/prod").stage.stage_variables == {"url": "127.0.0.1:9103"}
    client.delete_stage(ApiId=api_id, StageName="prod")
    with pytest.raises(Exception, match="stage"):
        admin.catalog.resolve(host, "/prod")
    client.delete_api(ApiId=api_id)
    assert api_id not in admin.catalog.api_ids()


def test_auto_deploy_redeploys_on_every_change(client: Any, admin: Admin) -> None:
    api_id = make_api(client)
    _, integration_id = make_proxy_route(client, api_id, BACKEND_A)
    stage = client.create_stage(ApiId=api_id, StageName="live", AutoDeploy=True)
    assert stage["DeploymentId"]
    client.update_integration(ApiId=api_id, IntegrationId=integration_id, IntegrationUri=BACKEND_B)
    deployments = client.get_deployments(ApiId=api_id)["Items"]
    assert len(deployments) == 2 and all(d["AutoDeployed"] for d in deployments)
    assert client.get_stage(ApiId=api_id, StageName="live")["DeploymentId"] == deployments[-1]["DeploymentId"]
    target = admin.catalog.resolve(f"{api_id}.execute-api.local", "/live")
    assert target.snapshot.integrations[integration_id].integration_uri == BACKEND_B
    with pytest.raises(client.exceptions.BadRequestException, match="autoDeploy"):
        client.update_stage(ApiId=api_id, StageName="live", DeploymentId=deployments[0]["DeploymentId"])


def test_domain_names_and_api_mappings_route_hosts(client: Any, admin: Admin) -> None:
    api_id, _ = deployed_api(client)
    certificate = "arn:aws:acm:us-east-1:123456789012:certificate/abc"
    domain = client.create_domain_name(
        DomainName="chat.example.com", DomainNameConfigurations=[{"CertificateArn": certificate}]
    )
    assert domain["ApiMappingSelectionExpression"] == "$request.basepath"
    configuration = domain["DomainNameConfigurations"][0]
    assert configuration["CertificateArn"] == certificate
    assert (configuration["EndpointType"], configuration["SecurityPolicy"]) == ("REGIONAL", "TLS_1_2")
    mapping = client.create_api_mapping(DomainName="chat.example.com", ApiId=api_id, Stage="prod", ApiMappingKey="v1")
    assert admin.catalog.resolve("chat.example.com", "/v1").api.api_id == api_id
    with pytest.raises(client.exceptions.ConflictException):
        client.create_api_mapping(DomainName="chat.example.com", ApiId=api_id, Stage="prod", ApiMappingKey="v1")
    with pytest.raises(client.exceptions.NotFoundException):
        client.create_api_mapping(DomainName="chat.example.com", ApiId=api_id, Stage="nope", ApiMappingKey="v2")
    client.update_api_mapping(
        DomainName="chat.example.com", ApiMappingId=mapping["ApiMappingId"], ApiId=api_id, ApiMappingKey="v3"
    )
    assert client.get_api_mappings(DomainName="chat.example.com")["Items"][0]["ApiMappingKey"] == "v3"
    assert admin.catalog.resolve("chat.example.com", "/v3").stage.stage_name == "prod"
    client.delete_domain_name(DomainName="chat.example.com")
    with pytest.raises(client.exceptions.NotFoundException):
        client.get_domain_name(DomainName="chat.example.com")


def test_tags_on_apis_and_stages(client: Any) -> None:
    api_id, _ = deployed_api(client)
    for arn in (
        f"arn:aws:apigateway:us-east-1::/apis/{api_id}",
        f"arn:aws:apigateway:us-east-1::/apis/{api_id}/stages/prod",
    ):
        client.tag_resource(ResourceArn=arn, Tags={"team": "chat", "env": "prod"})
        client.untag_resource(ResourceArn=arn, TagKeys=["env"])
        assert client.get_tags(ResourceArn=arn)["Tags"] == {"team": "chat"}
    assert client.get_api(ApiId=api_id)["Tags"] == {"team": "chat"}


def test_catalog_is_a_memory_catalog(admin: Admin) -> None:
    """A fresh store gets the demo API, published before any request."""
    assert isinstance(admin.catalog, MemoryCatalog)
    target = admin.catalog.resolve("127.0.0.1:8080", "/dev")
    assert target.api.name == "demo"
    assert target.snapshot.routes["$default"].two_way


def test_references_are_checked(client: Any) -> None:
    api_id, _ = deployed_api(client)
    integration_id = client.get_integrations(ApiId=api_id)["Items"][0]["IntegrationId"]
    with pytest.raises(client.exceptions.ConflictException, match=r"\$default"):
        client.delete_integration(ApiId=api_id, IntegrationId=integration_id)
    with pytest.raises(client.exceptions.BadRequestException, match="target"):
        client.create_route(ApiId=api_id, RouteKey="x", Target="integrations/missing")
    with pytest.raises(client.exceptions.BadRequestException, match="nosuchroute"):
        client.update_stage(ApiId=api_id, StageName="prod", RouteSettings={"nosuchroute": {"ThrottlingBurstLimit": 1}})
    with pytest.raises(client.exceptions.NotFoundException):
        client.update_stage(ApiId=api_id, StageName="prod", DeploymentId="missing")
    with pytest.raises(client.exceptions.BadRequestException, match=r"\$default"):
        route_id = client.get_routes(ApiId=api_id)["Items"][0]["RouteId"]
        client.create_route_response(ApiId=api_id, RouteId=route_id, RouteResponseKey="other")


def test_connect_only_settings_and_access_log_format(client: Any) -> None:
    api_id, _ = deployed_api(client)
    with pytest.raises(client.exceptions.BadRequestException, match=r"\$connect"):
        client.create_route(ApiId=api_id, RouteKey="other", AuthorizationType="AWS_IAM")
    connect = client.create_route(
        ApiId=api_id, RouteKey="$connect", RequestParameters={"route.request.header.Auth": {"Required": False}}
    )
    client.delete_route_request_parameter(
        ApiId=api_id, RouteId=connect["RouteId"], RequestParameterKey="route.request.header.Auth"
    )
    assert client.get_route(ApiId=api_id, RouteId=connect["RouteId"])["RequestParameters"] == {}
    with pytest.raises(client.exceptions.BadRequestException, match="requestId"):
        client.update_stage(ApiId=api_id, StageName="prod", AccessLogSettings={"Format": "$context.routeKey"})
    stage = client.update_stage(
        ApiId=api_id, StageName="prod", AccessLogSettings={"Format": "$context.requestId $context.routeKey"}
    )
    assert stage["AccessLogSettings"] == {"Format": "$context.requestId $context.routeKey"}
    client.delete_access_log_settings(ApiId=api_id, StageName="prod")
    assert "AccessLogSettings" not in client.get_stage(ApiId=api_id, StageName="prod")
