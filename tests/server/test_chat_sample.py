"""The AWS "simple-websockets-chat-app" sample, run unmodified against ``framegate serve`` (issue 18).

Three Python handlers written as the sample's Node handlers are (``onconnect``,
``ondisconnect``, ``sendmessage``; a dict stands in for the DynamoDB table)
run behind a Lambda Invoke API endpoint the test serves. The API is made with
boto3 ``apigatewayv2`` as the sample's template makes it (``$request.body.action``,
three ``AWS_PROXY`` routes, no route responses, a deployment and a stage), and
``sendmessage`` fans out with PostToConnection to the callback URL built from
its event (``http://{domainName}/{stage}``), the AWS way. Three ``websockets``
clients chat through it on both codecs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers.integration_servers import FUNCTION_ARN, lambda_endpoint, lambda_uri
from tests.helpers.servers import framegate

pytestmark = pytest.mark.integration

CEILING_S = 15.0
TABLE_CHANGES_BOUND = 8
"""How many table changes ``Table.until`` waits through before failing: the test makes a handful."""
REGION = "us-east-1"
STAGE = "Prod"  # the sample's stage name
CREDENTIALS = {"aws_access_key_id": "x", "aws_secret_access_key": "x", "region_name": REGION}
NO_RETRIES = botocore.config.Config(retries={"total_max_attempts": 1})


def management_api(endpoint: str) -> Any:
    """What the sample's ``new AWS.ApiGatewayManagementApi({endpoint})`` is in boto3 (no retries)."""
    return boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, config=NO_RETRIES, **CREDENTIALS)


class Table:
    """The sample's DynamoDB table of connection ids; every change sets ``changed``."""

    def __init__(self) -> None:
        self.ids: dict[str, dict[str, str]] = {}
        self.changed = asyncio.Event()

    def put(self, connection_id: str) -> None:
        self.ids[connection_id] = {"connectionId": connection_id}
        self.changed.set()

    def delete(self, connection_id: str) -> None:
        self.ids.pop(connection_id, None)
        self.changed.set()

    async def until(self, size: int) -> None:
        """Wait, change by change (each under a ceiling), until the table holds ``size`` ids."""
        for _ in range(TABLE_CHANGES_BOUND):
            if len(self.ids) == size:
                return
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), CEILING_S)
        raise AssertionError(f"the table still holds {len(self.ids)} ids, not {size}")


class ChatSample:
    """The sample's three functions, as its Node handlers are written."""

    def __init__(self) -> None:
        self.table = Table()
        self.stale: list[str] = []
        """Ids ``sendmessage`` found gone (GoneException) and deleted."""

    async def onconnect(self, event: dict[str, Any]) -> dict[str, Any]:
        self.table.put(event["requestContext"]["connectionId"])
        return {"statusCode": 200, "body": "Connected."}

    async def ondisconnect(self, event: dict[str, Any]) -> dict[str, Any]:
        self.table.delete(event["requestContext"]["connectionId"])
        return {"statusCode": 200, "body": "Disconnected."}

    async def sendmessage(self, event: dict[str, Any]) -> dict[str, Any]:
        context = event["requestContext"]
        api = await asyncio.to_thread(management_api, f"http://{context['domainName']}/{context['stage']}")
        post_data = json.loads(event["body"])["data"]

        async def post(connection_id: str) -> None:
            try:
                await asyncio.to_thread(api.post_to_connection, ConnectionId=connection_id, Data=post_data)
            except api.exceptions.GoneException:
                self.stale.append(connection_id)
                self.table.delete(connection_id)

        await asyncio.gather(*(post(connection_id) for connection_id in list(self.table.ids)))
        return {"statusCode": 200, "body": "Data sent."}

    def functions(self) -> dict[str, Any]:
        handlers = {"onconnect": self.onconnect, "ondisconnect": self.ondisconnect, "sendmessage": self.sendmessage}
        return {FUNCTION_ARN.format(name=name): handler for name, handler in handlers.items()}


def deploy_sample(control: Any) -> None:
    """The sample's template.yaml, as boto3 calls: the API, three Lambda routes, a deployment, stage Prod.

    The demo API a bare store starts with stays: it does not count when ws://host/{stage} picks the API.
    """
    api_id = control.create_api(
        Name="SimpleChatWebSocket", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
    )["ApiId"]
    for route_key, name, operation in (
        ("$connect", "onconnect", "ConnectRoute"),
        ("$disconnect", "ondisconnect", "DisconnectRoute"),
        ("sendmessage", "sendmessage", "SendRoute"),
    ):
        integration = control.create_integration(
            ApiId=api_id,
            IntegrationType="AWS_PROXY",
            IntegrationUri=lambda_uri(name),
            Description=f"{name} Integration",
        )
        control.create_route(
            ApiId=api_id,
            RouteKey=route_key,
            AuthorizationType="NONE",
            OperationName=operation,
            Target=f"integrations/{integration['IntegrationId']}",
        )
    deployment = control.create_deployment(ApiId=api_id)["DeploymentId"]
    control.create_stage(ApiId=api_id, StageName=STAGE, DeploymentId=deployment)


async def next_text(client: ClientConnection) -> str:
    text = await asyncio.wait_for(client.recv(), CEILING_S)
    assert isinstance(text, str)
    return text


async def send(sender: ClientConnection, data: str, receivers: list[ClientConnection]) -> None:
    """``sender`` says ``data``; each receiver's next frame is exactly ``data``.

    "Next" is what proves nothing else leaks: a route response ("Data sent."),
    an error frame or a GoneException would arrive before the next round's text.
    """
    await sender.send(json.dumps({"action": "sendmessage", "data": data}))
    assert [await next_text(receiver) for receiver in receivers] == [data] * len(receivers)


async def test_chat_sample_fans_out_and_forgets_disconnected_clients(tmp_path: Path, server_codec: str) -> None:
    sample = ChatSample()
    table = sample.table
    async with (
        lambda_endpoint(sample.functions()) as endpoint,
        framegate(tmp_path, "--lambda-endpoint", endpoint.url, codec=server_codec) as gateway,
    ):
        control = boto3.client("apigatewayv2", endpoint_url=gateway.admin, config=NO_RETRIES, **CREDENTIALS)
        await asyncio.to_thread(deploy_sample, control)
        url = f"{gateway.data}/{STAGE}"
        async with connect(url) as a, connect(url) as b:
            c = await connect(url)
            assert len(table.ids) == 3  # $connect answered 200 before each 101
            await send(a, "hello", [a, b, c])

            before = set(table.ids)
            await c.close()
            await table.until(2)
            (gone,) = before - set(table.ids)
            # What the sample's stale-connection branch relies on: the old id answers GoneException.
            host, port = gateway.host_port
            management = await asyncio.to_thread(management_api, f"http://{host}:{port}/{STAGE}")
            with pytest.raises(management.exceptions.GoneException):
                await asyncio.to_thread(management.post_to_connection, ConnectionId=gone, Data=b"late")

            await send(b, "second", [a, b])
            await send(a, "third", [a, b])
        await table.until(0)
    assert sample.stale == []
    invoked = [seen.path.rsplit("function:", 1)[1].split("/", 1)[0] for seen in endpoint.seen]
    assert sorted(invoked) == ["onconnect"] * 3 + ["ondisconnect"] * 3 + ["sendmessage"] * 3
