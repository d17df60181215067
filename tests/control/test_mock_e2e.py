"""End to end: route selection, MOCK templates, ``$context`` and stage variables in a real gateway.

A ``framegate serve`` subprocess is configured with boto3 (``apigatewayv2`` at the
admin port) and driven by the ``websockets`` library, as an AWS user would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.helpers.servers import framegate

pytestmark = pytest.mark.integration
REPLY_CEILING_S = 10.0
CREDENTIALS = {"aws_access_key_id": "x", "aws_secret_access_key": "x", "region_name": "us-east-1"}

GREETING = (
    '{"hello": "$input.path(\'$.name\')", "stage": "$context.stage", '
    '"env": "$stageVariables.env", "route": "$context.routeKey", "connection": "$context.connectionId"}'
)
CONNECT_GATE = '#if($context.stage == "locked"){"statusCode": 403}#else{"statusCode": 200}#end'


@asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    """``framegate serve`` on ephemeral ports, stopped by PID: (data URL, boto3 client)."""
    async with framegate(tmp_path) as running:
        yield running.data, boto3.client("apigatewayv2", endpoint_url=running.admin, **CREDENTIALS)


def mock_route(client: Any, api_id: str, key: str, request_template: str, *, reply: str | None) -> None:
    """A MOCK route; two-way with a ``$default`` response template when ``reply`` is given."""
    integration = client.create_integration(
        ApiId=api_id,
        IntegrationType="MOCK",
        RequestTemplates={"$default": request_template},
        TemplateSelectionExpression="\\$default",
    )["IntegrationId"]
    route_options = {"RouteResponseSelectionExpression": "$default"} if reply is not None else {}
    route = client.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{integration}", **route_options)
    if reply is not None:
        client.create_integration_response(
            ApiId=api_id,
            IntegrationId=integration,
            IntegrationResponseKey="$default",
            ResponseTemplates={"$default": reply},
        )
        client.create_route_response(ApiId=api_id, RouteId=route["RouteId"], RouteResponseKey="$default")


def configure(client: Any) -> None:
    """The only API: greet (two-way), quiet (one-way), broken, a stage-gated $connect, no $default."""
    for api in client.get_apis()["Items"]:  # the demo API an empty store starts with
        client.delete_api(ApiId=api["ApiId"])
    api_id = client.create_api(Name="mocks", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action")[
        "ApiId"
    ]
    mock_route(client, api_id, "greet", '{"statusCode": 200}', reply=GREETING)
    mock_route(client, api_id, "quiet", '{"statusCode": 200}', reply=None)
    mock_route(client, api_id, "broken", "no status code here", reply="unreachable")
    mock_route(client, api_id, "$connect", CONNECT_GATE, reply=None)
    deployment = client.create_deployment(ApiId=api_id)["DeploymentId"]
    client.create_stage(ApiId=api_id, StageName="prod", DeploymentId=deployment, StageVariables={"env": "blue"})
    client.create_stage(ApiId=api_id, StageName="locked", DeploymentId=deployment)


async def reply(connection: ClientConnection, message: str) -> dict[str, Any]:
    await connection.send(message)
    text = await asyncio.wait_for(connection.recv(), REPLY_CEILING_S)
    assert isinstance(text, str)
    parsed: dict[str, Any] = json.loads(text)
    return parsed


async def test_mock_routes_templates_and_gateway_frames(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (data, client):
        configure(client)
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{data}/locked")
        assert refused.value.response.status_code == 403

        async with connect(f"{data}/prod") as ws:
            await ws.send(json.dumps({"action": "quiet", "name": "nobody"}))  # one-way: no reply
            greeting = await reply(ws, json.dumps({"action": "greet", "name": "ann"}))
            assert greeting["hello"] == "ann"
            assert (greeting["stage"], greeting["env"], greeting["route"]) == ("prod", "blue", "greet")
            connection_id = greeting["connection"]
            assert len(connection_id) == 16 and connection_id.endswith("=")

            broken = await reply(ws, json.dumps({"action": "broken"}))
            assert broken["message"] == "Internal server error" and broken["connectionId"] == connection_id

            for unmatched in ("not json", json.dumps({"action": "nope"})):
                forbidden = await reply(ws, unmatched)
                assert forbidden["message"] == "Forbidden" and forbidden["connectionId"] == connection_id
                assert forbidden["requestId"] != broken["requestId"]

            again = await reply(ws, json.dumps({"action": "greet", "name": "bob"}))
            assert again["hello"] == "bob" and again["connection"] == connection_id
