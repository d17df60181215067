"""The unmodified ``aws apigatewayv2`` CLI against a real admin listener (dummy credentials)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.control.conftest import Admin

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("aws") is None, reason="aws CLI not installed"),
]
CLI_TIMEOUT_S = 60.0


class Aws:
    def __init__(self, admin: Admin) -> None:
        self.url = admin.url
        self.env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1",  # no back-off retries of the 429 under test
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["aws", "apigatewayv2", *args, "--endpoint-url", self.url, "--output", "json"]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)

    def __call__(self, *args: str) -> tuple[dict[str, Any], str]:
        """Run a command that must succeed; returns its parsed JSON and the raw text."""
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return (json.loads(done.stdout) if done.stdout.strip() else {}), done.stdout


@pytest.fixture
def aws(admin: Admin) -> Aws:
    return Aws(admin)


def test_seed_commands_return_the_reference_fields(aws: Aws) -> None:
    api, _ = aws(
        "create-api", "--name", "chat", "--protocol-type", "WEBSOCKET",
        "--route-selection-expression", "$request.body.action",
    )  # fmt: skip
    api_id = api["ApiId"]
    integration, _ = aws(
        "create-integration", "--api-id", api_id, "--integration-type", "HTTP_PROXY",
        "--integration-uri", "ws://127.0.0.1:9101", "--integration-method", "POST",
    )  # fmt: skip
    target = f"integrations/{integration['IntegrationId']}"
    route, _ = aws("create-route", "--api-id", api_id, "--route-key", "sendmessage", "--target", target)
    aws("create-route-response", "--api-id", api_id, "--route-id", route["RouteId"], "--route-response-key", "$default")
    mock, _ = aws("create-integration", "--api-id", api_id, "--integration-type", "MOCK")
    aws(
        "create-integration-response", "--api-id", api_id, "--integration-id", mock["IntegrationId"],
        "--integration-response-key", "$default",
    )  # fmt: skip

    stage, raw = aws("create-stage", "--api-id", api_id, "--stage-name", "test")
    assert '"ThrottlingRateLimit": 10000.0' in raw and '"ThrottlingBurstLimit": 5000' in raw
    assert stage["StageVariables"] == {} and stage["RouteSettings"] == {}
    deployment, _ = aws("create-deployment", "--api-id", api_id, "--stage-name", "test", "--description", "v1")
    assert deployment["DeploymentStatus"] == "DEPLOYED" and deployment["CreatedDate"].endswith("Z")
    aws("create-stage", "--api-id", api_id, "--stage-name", "prod")

    updated, _ = aws(
        "update-stage", "--api-id", api_id, "--stage-name", "prod",
        "--deployment-id", deployment["DeploymentId"],
        "--route-settings", '{"sendmessage": {"ThrottlingBurstLimit": 100, "ThrottlingRateLimit": 2000}}',
        "--default-route-settings", "ThrottlingBurstLimit=200,ThrottlingRateLimit=400",
        "--stage-variables", "url=127.0.0.1:9101,color=blue",
    )  # fmt: skip
    assert updated["DeploymentId"] == deployment["DeploymentId"]
    assert updated["RouteSettings"] == {"sendmessage": {"ThrottlingBurstLimit": 100, "ThrottlingRateLimit": 2000.0}}
    assert updated["DefaultRouteSettings"]["ThrottlingBurstLimit"] == 200
    assert updated["StageVariables"] == {"url": "127.0.0.1:9101", "color": "blue"}

    stages, _ = aws("get-stages", "--api-id", api_id)
    assert {s["StageName"]: s.get("DeploymentId") for s in stages["Items"]} == {
        "test": deployment["DeploymentId"],
        "prod": deployment["DeploymentId"],
    }
    deployments, _ = aws("get-deployments", "--api-id", api_id)
    assert [d["DeploymentId"] for d in deployments["Items"]] == [deployment["DeploymentId"]]
    assert deployments["Items"][0]["Description"] == "v1"


def test_cli_auto_paginates_with_next_token(aws: Aws, admin: Admin) -> None:
    api_id = admin.plane.service.create_api(
        {"name": "many", "protocol_type": "WEBSOCKET", "route_selection_expression": "$request.body.action"}
    ).api_id
    for i in range(5):
        admin.plane.service.create_stage(api_id, {"stage_name": f"s{i}"})
    listed, _ = aws("get-stages", "--api-id", api_id, "--page-size", "2")
    assert [s["StageName"] for s in listed["Items"]] == [f"s{i}" for i in range(5)]
    first, _ = aws("get-stages", "--api-id", api_id, "--max-items", "2")
    assert len(first["Items"]) == 2 and first["NextToken"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("get-api", "--api-id", "nosuchapi0"), "NotFoundException"),
        (("create-api", "--name", "h", "--protocol-type", "HTTP"), "BadRequestException"),
    ],
)
def test_cli_reports_aws_error_codes(aws: Aws, args: tuple[str, ...], code: str) -> None:
    done = aws.run(*args)
    assert done.returncode != 0
    assert f"({code})" in done.stderr


def test_cli_reports_conflict_and_the_eleventh_stage(aws: Aws, admin: Admin) -> None:
    service = admin.plane.service
    api_id = service.create_api(
        {"name": "full", "protocol_type": "WEBSOCKET", "route_selection_expression": "$request.body.action"}
    ).api_id
    for i in range(10):
        service.create_stage(api_id, {"stage_name": f"s{i}"})
    duplicate = aws.run("create-stage", "--api-id", api_id, "--stage-name", "s0")
    assert "(ConflictException)" in duplicate.stderr
    eleventh = aws.run("create-stage", "--api-id", api_id, "--stage-name", "s10")
    assert "(TooManyRequestsException)" in eleventh.stderr


def test_cli_manages_authorizers_and_names_what_it_refuses(aws: Aws) -> None:
    api, _ = aws(
        "create-api", "--name", "chat", "--protocol-type", "WEBSOCKET",
        "--route-selection-expression", "$request.body.action",
    )  # fmt: skip
    uri = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/auth/invocations"
    created, _ = aws(
        "create-authorizer", "--api-id", api["ApiId"], "--name", "auth", "--authorizer-type", "REQUEST",
        "--identity-source", "route.request.header.Auth", "--authorizer-uri", uri,
    )  # fmt: skip
    assert created["IdentitySource"] == ["route.request.header.Auth"]
    listed, _ = aws("get-authorizers", "--api-id", api["ApiId"])
    assert [a["AuthorizerId"] for a in listed["Items"]] == [created["AuthorizerId"]]
    refused = aws.run("create-route", "--api-id", api["ApiId"], "--route-key", "$connect", "--api-key-required")
    assert refused.returncode != 0
    assert "BadRequestException" in refused.stderr and "apiKeyRequired is not supported" in refused.stderr
    unsupported = aws.run("get-models", "--api-id", api["ApiId"])
    assert unsupported.returncode != 0 and "GetModels is not supported by framegate" in unsupported.stderr
