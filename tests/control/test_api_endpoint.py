"""An API's ``apiEndpoint`` is a URL that reaches it on this gateway, beside the demo API and others."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.control.conftest import DUMMY_CREDENTIALS, NO_RETRIES, make_api
from tests.helpers.servers import framegate

ECHO_TEMPLATE = {"$default": '{"statusCode": 200}'}


def _mock_stage(client: object, api_id: str, answer: str = "") -> None:
    integration = client.create_integration(  # type: ignore[attr-defined]
        ApiId=api_id, IntegrationType="MOCK", RequestTemplates=ECHO_TEMPLATE, TemplateSelectionExpression="\\$default"
    )["IntegrationId"]
    client.create_integration_response(  # type: ignore[attr-defined]
        ApiId=api_id,
        IntegrationId=integration,
        IntegrationResponseKey="$default",
        ResponseTemplates={"$default": answer or '{"api": "' + api_id + '"}'},
    )
    route = client.create_route(  # type: ignore[attr-defined]
        ApiId=api_id,
        RouteKey="$default",
        Target=f"integrations/{integration}",
        RouteResponseSelectionExpression="$default",
    )["RouteId"]
    client.create_route_response(ApiId=api_id, RouteId=route, RouteResponseKey="$default")  # type: ignore[attr-defined]
    deployment = client.create_deployment(ApiId=api_id)["DeploymentId"]  # type: ignore[attr-defined]
    client.create_stage(ApiId=api_id, StageName="prod", DeploymentId=deployment)  # type: ignore[attr-defined]


async def test_api_endpoint_reaches_each_api_beside_the_demo(tmp_path: Path) -> None:
    async with framegate(tmp_path) as running:  # a bare start: the demo API is there too
        client = boto3.client("apigatewayv2", endpoint_url=running.admin, config=NO_RETRIES, **DUMMY_CREDENTIALS)
        first = make_api(client, "first")
        _mock_stage(client, first)
        # The first API of one's own is reached from the plain URL: the demo API does not count.
        async with connect(f"{running.data}/prod") as ws:
            await ws.send("hi")
            assert json.loads(await ws.recv()) == {"api": first}
        second = make_api(client, "second")
        _mock_stage(client, second)
        for api_id in (first, second):
            endpoint = client.get_api(ApiId=api_id)["ApiEndpoint"]
            assert endpoint == f"{running.data}/{api_id}"
            async with connect(f"{endpoint}/prod") as ws:
                await ws.send("hi")
                assert json.loads(await ws.recv()) == {"api": api_id}
        # A stage name only one API has is reached from the plain URL: the demo's /dev still echoes.
        async with connect(f"{running.data}/dev") as ws:
            await ws.send('{"action": "ping"}')
            assert await ws.recv() == '{"action": "ping"}'
        # A stage name several APIs have is not: the refusal says how to name one.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{running.data}/prod"):
                pass
        assert refused.value.response.status_code == 403
        assert "Several APIs" in refused.value.response.headers["X-Framegate-Error"]
        client.close()


async def test_a_callback_url_built_the_aws_way_reaches_a_client_of_any_api(tmp_path: Path) -> None:
    """``{domainName}/{stage}`` names only a stage: the connection id picks the API, even beside others."""
    async with framegate(tmp_path) as running:
        client = boto3.client("apigatewayv2", endpoint_url=running.admin, config=NO_RETRIES, **DUMMY_CREDENTIALS)
        apis = [make_api(client, name) for name in ("first", "second")]
        for api_id in apis:  # two APIs with a stage "prod" each: the plain /prod is ambiguous for clients
            _mock_stage(client, api_id, '{"domainName": "$context.domainName", "stage": "$context.stage", '
                        '"id": "$context.connectionId"}')  # fmt: skip
        for api_id in apis:
            async with connect(f"{running.data}/{api_id}/prod") as ws:
                await ws.send("whoami")
                me = json.loads(await ws.recv())
                callback = f"http://{me['domainName']}/{me['stage']}"
                http_base = running.data.replace("ws://", "http://", 1)
                assert callback == f"{http_base}/prod"
                management = boto3.client(
                    "apigatewaymanagementapi", endpoint_url=callback, config=NO_RETRIES, **DUMMY_CREDENTIALS
                )
                assert management.get_connection(ConnectionId=me["id"])["Identity"]["SourceIp"] == "127.0.0.1"
                management.post_to_connection(ConnectionId=me["id"], Data=b"pushed")
                assert await ws.recv() == "pushed"
                # The stage still has to be the connection's own.
                other = boto3.client(
                    "apigatewaymanagementapi", endpoint_url=f"{http_base}/dev", config=NO_RETRIES,
                    **DUMMY_CREDENTIALS,
                )  # fmt: skip
                try:
                    other.get_connection(ConnectionId=me["id"])
                except other.exceptions.ForbiddenException:
                    pass
                else:
                    raise AssertionError("a connection of stage prod was reached through /dev")
        client.close()
