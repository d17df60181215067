"""Issue 18.6 end to end: an integration URI that is entirely a stage variable reaches its ws:// backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.control.conftest import framegate
from tests.control.test_e2e import ask, call, tagged_backend

pytestmark = pytest.mark.integration


async def test_whole_uri_stage_variable_is_a_websocket_passthrough(tmp_path: Path) -> None:
    async with tagged_backend("A") as a, tagged_backend("B") as b:
        with framegate(tmp_path, "--backend", f"ws://{a}") as gw:
            client = gw.client
            api_id = (await call(client.get_apis))["Items"][0]["ApiId"]
            integration_id = (await call(client.get_integrations, ApiId=api_id))["Items"][0]["IntegrationId"]
            await call(
                client.update_integration,
                ApiId=api_id,
                IntegrationId=integration_id,
                IntegrationUri="${stageVariables.backend}",
            )
            await call(client.update_stage, ApiId=api_id, StageName="prod", StageVariables={"backend": f"ws://{b}"})
            deployment = await call(client.create_deployment, ApiId=api_id)
            await call(client.update_stage, ApiId=api_id, StageName="prod", DeploymentId=deployment["DeploymentId"])
            async with connect(f"{gw.data}/prod") as connection:
                assert await ask(connection, "hello") == "B:hello"
