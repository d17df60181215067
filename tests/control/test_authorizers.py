"""Authorizer CRUD, authorizers in deployment snapshots, and the deploy-time --lambda-endpoint check (boto3)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from proxy.cli import build_parser
from proxy.config import Config, InvalidSetting
from proxy.limits import MAX_AUTHORIZERS_PER_API
from tests.control.conftest import DUMMY_CREDENTIALS, NO_RETRIES, make_api, running_admin

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:auth"
AUTHORIZER_URI = f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{FUNCTION}/invocations"
HANDLER_URI = AUTHORIZER_URI.replace(":auth/", ":chat/")
LAMBDA_ENDPOINT = "http://127.0.0.1:3001"


def create_authorizer(client: Any, api_id: str, name: str = "auth", **kwargs: Any) -> Any:
    values = {
        "AuthorizerType": "REQUEST",
        "IdentitySource": ["route.request.header.Auth", "route.request.querystring.token"],
        "AuthorizerUri": AUTHORIZER_URI,
        **kwargs,
    }
    return client.create_authorizer(ApiId=api_id, Name=name, **values)


def test_authorizer_crud_round_trip(client: Any) -> None:
    api_id = make_api(client)
    created = create_authorizer(client, api_id)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    authorizer_id = created["AuthorizerId"]
    assert created["AuthorizerType"] == "REQUEST" and created["AuthorizerUri"] == AUTHORIZER_URI
    assert created["IdentitySource"] == ["route.request.header.Auth", "route.request.querystring.token"]
    assert client.get_authorizer(ApiId=api_id, AuthorizerId=authorizer_id)["Name"] == "auth"

    updated = client.update_authorizer(ApiId=api_id, AuthorizerId=authorizer_id, IdentitySource=["stageVariables.key"])
    assert updated["IdentitySource"] == ["stageVariables.key"] and updated["Name"] == "auth"

    create_authorizer(client, api_id, "second")
    page = client.get_authorizers(ApiId=api_id, MaxResults="1")
    assert [a["Name"] for a in page["Items"]] == ["auth"] and "NextToken" in page
    rest = client.get_authorizers(ApiId=api_id, NextToken=page["NextToken"])
    assert [a["Name"] for a in rest["Items"]] == ["second"]

    client.delete_authorizer(ApiId=api_id, AuthorizerId=authorizer_id)
    with pytest.raises(client.exceptions.NotFoundException):
        client.get_authorizer(ApiId=api_id, AuthorizerId=authorizer_id)


def test_authorizer_validation_and_quota(client: Any) -> None:
    api_id = make_api(client)
    create_authorizer(client, api_id)
    with pytest.raises(client.exceptions.ConflictException):
        create_authorizer(client, api_id)
    with pytest.raises(client.exceptions.BadRequestException, match="identitySource"):
        create_authorizer(client, api_id, "bad-source", IdentitySource=["method.request.header.Auth"])
    with pytest.raises(client.exceptions.BadRequestException, match="identitySource"):
        create_authorizer(client, api_id, "no-source", IdentitySource=[])
    with pytest.raises(client.exceptions.BadRequestException, match="authorizerUri"):
        create_authorizer(client, api_id, "bad-uri", AuthorizerUri="http://127.0.0.1/auth")
    for number in range(1, MAX_AUTHORIZERS_PER_API):
        create_authorizer(client, api_id, f"a{number}")
    with pytest.raises(client.exceptions.TooManyRequestsException):
        create_authorizer(client, api_id, "one-too-many")


def test_authorizers_are_stored_and_frozen_into_deployments(db_path: str) -> None:
    with running_admin(Config(db_path=db_path)) as admin:
        client = boto3.client("apigatewayv2", endpoint_url=admin.url, config=NO_RETRIES, **DUMMY_CREDENTIALS)
        api_id = make_api(client)
        authorizer_id = create_authorizer(client, api_id)["AuthorizerId"]
        client.create_route(ApiId=api_id, RouteKey="$default")
        deployment_id = client.create_deployment(ApiId=api_id)["DeploymentId"]
        client.delete_authorizer(ApiId=api_id, AuthorizerId=authorizer_id)
        snapshot = admin.plane.service.deployment(api_id, deployment_id).snapshot
        assert list(snapshot.authorizers) == [authorizer_id]
        create_authorizer(client, api_id, "kept")
        client.close()
    with running_admin(Config(db_path=db_path)) as admin:
        client = boto3.client("apigatewayv2", endpoint_url=admin.url, config=NO_RETRIES, **DUMMY_CREDENTIALS)
        assert [a["Name"] for a in client.get_authorizers(ApiId=api_id)["Items"]] == ["kept"]
        assert list(admin.plane.service.deployment(api_id, deployment_id).snapshot.authorizers) == [authorizer_id]
        client.close()


def _lambda_route(client: Any, api_id: str) -> str:
    integration = client.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=HANDLER_URI)
    client.create_route(ApiId=api_id, RouteKey="$default", Target=f"integrations/{integration['IntegrationId']}")
    integration_id: str = integration["IntegrationId"]
    return integration_id


def test_lambda_integration_without_an_endpoint_is_refused_at_deploy_time(client: Any) -> None:
    api_id = make_api(client)
    integration_id = _lambda_route(client, api_id)
    client.create_stage(ApiId=api_id, StageName="prod")
    with pytest.raises(client.exceptions.BadRequestException) as refused:
        client.create_deployment(ApiId=api_id, StageName="prod")
    message = refused.value.response["Error"]["Message"]
    assert integration_id in message and "--lambda-endpoint" in message
    with pytest.raises(client.exceptions.BadRequestException, match=integration_id):
        client.create_stage(ApiId=api_id, StageName="auto", AutoDeploy=True)
    assert client.get_deployments(ApiId=api_id)["Items"] == []


def test_lambda_integration_deploys_with_an_endpoint_and_stays_refused_for_stages_without(db_path: str) -> None:
    with running_admin(Config(db_path=db_path, lambda_endpoint=LAMBDA_ENDPOINT)) as admin:
        client = boto3.client("apigatewayv2", endpoint_url=admin.url, config=NO_RETRIES, **DUMMY_CREDENTIALS)
        api_id = make_api(client)
        integration_id = _lambda_route(client, api_id)
        deployment_id = client.create_deployment(ApiId=api_id)["DeploymentId"]
        client.close()
    with running_admin(Config(db_path=db_path)) as admin:
        client = boto3.client("apigatewayv2", endpoint_url=admin.url, config=NO_RETRIES, **DUMMY_CREDENTIALS)
        with pytest.raises(client.exceptions.BadRequestException, match=integration_id):
            client.create_stage(ApiId=api_id, StageName="prod", DeploymentId=deployment_id)
        client.close()


def test_serve_takes_a_lambda_endpoint_flag_and_checks_its_scheme() -> None:
    args = build_parser().parse_args(["serve", "--lambda-endpoint", LAMBDA_ENDPOINT])
    assert args.lambda_endpoint == LAMBDA_ENDPOINT
    with pytest.raises(InvalidSetting, match="lambda_endpoint must be an http"):
        Config(lambda_endpoint="127.0.0.1:3001").validate()
