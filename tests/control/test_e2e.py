"""Control plane driving the live data plane of ``framegate serve``: redeploys and stage variables.

Backends are in-test WebSocket servers that tag every echo with their name,
so a reply says which backend a connection reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from tests.control.conftest import framegate

pytestmark = pytest.mark.integration
REPLY_TIMEOUT_S = 10.0


@asynccontextmanager
async def tagged_backend(name: str) -> AsyncIterator[str]:
    """A WebSocket backend answering every message with ``name:message``; yields its host:port."""

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(f"{name}:{message!s}")

    async with serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"127.0.0.1:{port}"


async def ask(connection: ClientConnection, text: str) -> str:
    await connection.send(text)
    reply = await asyncio.wait_for(connection.recv(), REPLY_TIMEOUT_S)
    return str(reply)


async def call(function: Any, **kwargs: Any) -> Any:
    """boto3 is blocking: run it off the loop that serves the backends."""
    return await asyncio.to_thread(function, **kwargs)


async def test_redeploy_moves_new_connections_only(tmp_path: Path) -> None:
    async with tagged_backend("A") as a, tagged_backend("B") as b:
        with framegate(tmp_path, "--backend", f"ws://{a}") as gw:
            client = gw.client
            api_id = (await call(client.get_apis))["Items"][0]["ApiId"]
            integration_id = (await call(client.get_integrations, ApiId=api_id))["Items"][0]["IntegrationId"]
            async with connect(f"{gw.data}/prod") as old:
                assert await ask(old, "hello") == "A:hello"
                await call(
                    client.update_integration, ApiId=api_id, IntegrationId=integration_id, IntegrationUri=f"ws://{b}"
                )
                async with connect(f"{gw.data}/prod") as before:
                    assert await ask(before, "x") == "A:x", "an undeployed edit must not reach new connections"
                deployment = await call(client.create_deployment, ApiId=api_id)
                await call(client.update_stage, ApiId=api_id, StageName="prod", DeploymentId=deployment["DeploymentId"])
                async with connect(f"{gw.data}/prod") as new:
                    assert await ask(new, "y") == "B:y"
                assert await ask(old, "still") == "A:still", "an open connection keeps its deployment"


async def test_stage_variables_steer_two_stages_to_two_backends(tmp_path: Path) -> None:
    async with tagged_backend("A") as a, tagged_backend("B") as b:
        config = tmp_path / "steer.yaml"
        config.write_text(
            "apis:\n"
            "  - name: steer\n"
            "    protocolType: WEBSOCKET\n"
            "    routeSelectionExpression: $request.body.action\n"
            "    routes:\n"
            "      - routeKey: $default\n"
            "        integration: {integrationType: HTTP_PROXY, integrationUri: 'ws://${stageVariables.backend}'}\n"
            "        routeResponses: [{routeResponseKey: $default}]\n"
            "    stages:\n"
            f"      - {{stageName: blue, stageVariables: {{backend: '{a}'}}}}\n"
            f"      - {{stageName: green, stageVariables: {{backend: '{b}'}}}}\n"
        )
        with framegate(tmp_path, "--config", str(config)) as gw:
            async with connect(f"{gw.data}/blue") as blue, connect(f"{gw.data}/green") as green:
                assert await ask(blue, "m") == "A:m"
                assert await ask(green, "m") == "B:m"
            stages = await call(gw.client.get_stages, ApiId=(await call(gw.client.get_apis))["Items"][0]["ApiId"])
            assert len({s["DeploymentId"] for s in stages["Items"]}) == 1, "one deployment, two stages"
            api_id = (await call(gw.client.get_apis))["Items"][0]["ApiId"]
            await call(gw.client.update_stage, ApiId=api_id, StageName="blue", StageVariables={"backend": b})
            async with connect(f"{gw.data}/blue") as blue:
                assert await ask(blue, "n") == "B:n", "stage variables apply without a redeploy"
