"""The @connections API on the data port, driven by boto3, the aws CLI, raw HTTP and websockets clients.

``framegate serve --config`` runs in a subprocess, once per codec. The API
has a ``whoami`` MOCK route that answers the client's own ``$context``
(connection id, domainName, stage), as a backend's event would carry it, and
a ``$default`` ws:// backend that pushes to its own client through the API.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import boto3
import botocore.config
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.helpers.cluster import whoami_route
from tests.helpers.servers import Framegate, framegate, masked_frame, read_frame

pytestmark = pytest.mark.integration

CEILING_S = 15.0
KIB = 1024
PUSH_CAP = 128 * KIB
FRAME = 32 * KIB
TEXT = 0x1
CLOSE = 0x8
FIN = 0x80
WHOAMI = json.dumps({"action": "whoami"})
IDENTITY_TEMPLATE = (
    '{"connectionId": "$context.connectionId", "domainName": "$context.domainName", "stage": "$context.stage"}'
)
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}


def upgrade(path: str, host: str = "127.0.0.1") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def raw_call(gateway: Framegate, method: str, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """One unsigned HTTP request to the data port: (status, head)."""
    reader, writer = await asyncio.open_connection(*gateway.host_port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
    writer.close()
    return int(head.split()[1]), head


def api_document(backend: str) -> dict[str, Any]:
    """One API on stages prod and beta: ``whoami`` answers the caller's context, ``$default`` goes to ``backend``."""
    whoami = whoami_route(IDENTITY_TEMPLATE)
    default = {"routeKey": "$default", "integration": {"integrationType": "HTTP_PROXY", "integrationUri": backend}}
    return {
        "apis": [
            {
                "name": "chat",
                "protocolType": "WEBSOCKET",
                "routeSelectionExpression": "$request.body.action",
                "routes": [whoami, default],
                "stages": [{"stageName": "prod"}, {"stageName": "beta"}],
            }
        ],
        "domainNames": [
            {"domainName": "chat.example.com", "apiMappings": [{"api": "chat", "stage": "prod", "apiMappingKey": "v2"}]}
        ],
    }


@dataclass
class PushingBackend:
    """A ws:// backend that answers ``push:TEXT`` by pushing TEXT to its own client through the API.

    It builds the endpoint the AWS way, from what the gateway told it on the
    upgrade: ``http://{X-Forwarded-Host}/{X-Framegate-Stage}``.
    """

    url: str = ""
    pushed: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    closes: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)

    async def handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        headers = connection.request.headers
        endpoint = f"http://{headers['X-Forwarded-Host']}/{headers['X-Framegate-Stage']}"
        connection_id = headers["X-Framegate-Connection-Id"]
        try:
            async for message in connection:
                text = str(message)
                if text.startswith("push:"):
                    data = text.removeprefix("push:").encode()
                    client = management_client(endpoint)
                    await asyncio.to_thread(client.post_to_connection, ConnectionId=connection_id, Data=data)
                    await self.pushed.put(endpoint)
        except ConnectionClosed:
            pass
        await self.closes.put(connection.close_code)


@asynccontextmanager
async def pushing_backend() -> AsyncIterator[PushingBackend]:
    backend = PushingBackend()
    async with serve(backend.handle, "127.0.0.1", 0) as server:
        backend.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        yield backend


@asynccontextmanager
async def chat_gateway(tmp_path: Path, codec: str, *flags: str) -> AsyncIterator[tuple[Framegate, PushingBackend]]:
    async with pushing_backend() as backend:
        config = tmp_path / "chat.json"
        config.write_text(json.dumps(api_document(backend.url)))
        async with framegate(tmp_path, "--config", str(config), *flags, codec=codec) as gateway:
            yield gateway, backend


def management_client(endpoint: str, access_key: str = "x", secret_key: str = "x", verify: str | None = None) -> Any:
    """An unmodified boto3 ``apigatewaymanagementapi`` client for ``endpoint`` (dummy credentials, no retries)."""
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
        verify=verify,
    )


async def whoami(client: ClientConnection) -> dict[str, str]:
    await client.send(WHOAMI)
    identity: dict[str, str] = json.loads(await asyncio.wait_for(client.recv(), CEILING_S))
    return identity


async def metric(gateway: Framegate, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``, from the admin port's /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.admin}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def call(function: Callable[..., Any], **kwargs: Any) -> Any:
    """A blocking boto3 call, off the loop (the gateway under test shares nothing with it)."""
    return await asyncio.to_thread(function, **kwargs)


async def test_boto3_posts_gets_and_deletes(tmp_path: Path, server_codec: str) -> None:
    async with (
        chat_gateway(tmp_path, server_codec) as (gateway, backend),
        connect(f"{gateway.data}/prod", user_agent_header="chat-test/1.0") as client,
    ):
        identity = await whoami(client)
        port = gateway.host_port[1]
        # $context.domainName is the Host the client used, port included: the callback URL reaches us.
        assert identity["domainName"] == f"127.0.0.1:{port}"
        api = management_client(f"http://{identity['domainName']}/{identity['stage']}")
        connection_id = identity["connectionId"]

        before = datetime.now(UTC).replace(microsecond=0)
        await call(api.post_to_connection, ConnectionId=connection_id, Data=b'{"hello": "world"}')
        assert await asyncio.wait_for(client.recv(), CEILING_S) == '{"hello": "world"}'
        big = "b" * (100 * KIB)
        await call(api.post_to_connection, ConnectionId=connection_id, Data=big.encode())
        assert await asyncio.wait_for(client.recv(), CEILING_S) == big

        info = await call(api.get_connection, ConnectionId=connection_id)
        assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "chat-test/1.0"}
        assert info["ConnectedAt"] <= info["LastActiveAt"]
        assert info["LastActiveAt"] >= before

        with pytest.raises(api.exceptions.GoneException):
            await call(api.post_to_connection, ConnectionId="AAAAAAAAAAAAAAA=", Data=b"x")
        with pytest.raises(api.exceptions.PayloadTooLargeException) as too_large:
            await call(api.post_to_connection, ConnectionId=connection_id, Data=b"x" * (PUSH_CAP + 1))
        assert str(PUSH_CAP) in too_large.value.response["Error"]["Message"]
        beta = management_client(f"http://{identity['domainName']}/beta")
        with pytest.raises(beta.exceptions.ForbiddenException):
            await call(beta.post_to_connection, ConnectionId=connection_id, Data=b"x")

        await call(api.delete_connection, ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), CEILING_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert await asyncio.wait_for(backend.closes.get(), CEILING_S) == 1001  # the close went on, as any does
        with pytest.raises(api.exceptions.GoneException):
            await call(api.post_to_connection, ConnectionId=connection_id, Data=b"x")
        with pytest.raises(api.exceptions.GoneException):
            await call(api.get_connection, ConnectionId=connection_id)


async def test_a_push_is_one_message_in_frames_of_at_most_32_kib(tmp_path: Path, server_codec: str) -> None:
    """Raw frames on the client side, the request through raw HTTP with ``%40connections`` and keep-alive."""
    async with chat_gateway(tmp_path, server_codec) as (gateway, _):
        reader, writer = await asyncio.open_connection(*gateway.host_port)
        writer.write(upgrade("/prod"))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
        writer.write(masked_frame(TEXT, WHOAMI.encode()))
        _, reply = await read_frame(reader)
        connection_id = json.loads(reply)["connectionId"]

        messages_before = await metric(gateway, "framegate_message_count_total", stage="prod")
        payload = b"p" * (100 * KIB)
        path = f"/prod/%40connections/{quote(connection_id, safe='')}"
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        api_reader, api_writer = await asyncio.open_connection(*gateway.host_port)
        api_writer.write(head + payload + f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        post = await asyncio.wait_for(api_reader.readuntil(b"\r\n\r\n"), CEILING_S)
        assert post.startswith(b"HTTP/1.1 200 ")
        assert b"x-amzn-requestid: " in post.lower()
        get = await asyncio.wait_for(api_reader.readuntil(b"\r\n\r\n"), CEILING_S)  # the same connection: keep-alive
        assert get.startswith(b"HTTP/1.1 200 ")
        api_writer.close()

        frames = []
        received = 0
        while received < len(payload):
            first, data = await read_frame(reader)
            frames.append((first, len(data)))
            received += len(data)
        assert frames[0][0] & 0x0F == TEXT and frames[-1][0] & FIN
        assert all(size <= FRAME for _, size in frames) and len(frames) == len(payload) // FRAME + 1
        # MessageCount counts both ways: the push is one message out.
        assert await metric(gateway, "framegate_message_count_total", stage="prod") == messages_before + 1
        writer.close()


async def test_a_passthrough_backend_pushes_to_its_own_client(tmp_path: Path, server_codec: str) -> None:
    async with (
        chat_gateway(tmp_path, server_codec) as (gateway, backend),
        connect(f"{gateway.data}/prod") as client,
    ):
        await client.send("push:from the backend")
        assert await asyncio.wait_for(client.recv(), CEILING_S) == "from the backend"
        endpoint = await asyncio.wait_for(backend.pushed.get(), CEILING_S)
        assert endpoint == f"http://127.0.0.1:{gateway.host_port[1]}/prod"


@pytest.mark.skipif(shutil.which("aws") is None, reason="aws CLI not installed")
async def test_aws_cli_post_to_connection(tmp_path: Path, server_codec: str) -> None:
    async with (
        chat_gateway(tmp_path, server_codec) as (gateway, _),
        connect(f"{gateway.data}/prod") as client,
    ):
        identity = await whoami(client)
        endpoint = f"http://{identity['domainName']}/prod"
        cli = await asyncio.create_subprocess_exec(
            "aws",
            "apigatewaymanagementapi",
            "post-to-connection",
            "--endpoint-url",
            endpoint,
            "--connection-id",
            identity["connectionId"],
            "--data",
            '{"from": "the cli"}',  # aws CLI v1 sends a blob argument's text as it is
            env={**os.environ, **DUMMY_CREDENTIALS, "AWS_PAGER": "", "AWS_MAX_ATTEMPTS": "1"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(cli.communicate(), CEILING_S * 2)
        assert cli.returncode == 0, stderr.decode()
        assert await asyncio.wait_for(client.recv(), CEILING_S) == '{"from": "the cli"}'


async def test_a_client_still_connecting_is_gone(tmp_path: Path, server_codec: str) -> None:
    """``$connect``'s backend never answers: the id is known (from the upgrade it got), the connection not open."""
    heard: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        ids = [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.startswith("X-Framegate-Conn")]
        heard.set_result(ids[0])
        await reader.read()  # until the gateway gives up on us
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    backend = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    (tmp_path / "c.json").write_text(json.dumps(api_document(backend)))
    try:
        async with framegate(tmp_path, "--config", str(tmp_path / "c.json"), codec=server_codec) as gateway:
            _, writer = await asyncio.open_connection(*gateway.host_port)
            writer.write(upgrade("/prod"))
            connection_id = await asyncio.wait_for(heard, CEILING_S)
            api = management_client(f"http://127.0.0.1:{gateway.host_port[1]}/prod")
            with pytest.raises(api.exceptions.GoneException):
                await call(api.post_to_connection, ConnectionId=connection_id, Data=b"too early")
            writer.close()
    finally:
        server.close()


async def test_posts_count_against_the_account_throttle(tmp_path: Path, server_codec: str) -> None:
    # burst 5: $connect and whoami take one token each, leaving three pushes (the refill is negligible).
    flags = ("--account-burst-limit", "5", "--account-rate-limit", "0.001")
    async with (
        chat_gateway(tmp_path, server_codec, *flags) as (gateway, _),
        connect(f"{gateway.data}/prod") as client,
    ):
        identity = await whoami(client)
        api = management_client(f"http://{identity['domainName']}/prod")
        for number in range(3):
            await call(api.post_to_connection, ConnectionId=identity["connectionId"], Data=str(number).encode())
        throttled = await metric(gateway, "framegate_throttled_requests_total", level="account")
        with pytest.raises(api.exceptions.LimitExceededException):
            await call(api.post_to_connection, ConnectionId=identity["connectionId"], Data=b"one too many")
        assert await metric(gateway, "framegate_throttled_requests_total", level="account") == throttled + 1
        assert [await asyncio.wait_for(client.recv(), CEILING_S) for _ in range(3)] == ["0", "1", "2"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


MAX_PUSHES = 400
"""Bound on the pushes to a client that does not read (40 MB at 100 KiB): 429 must come long before."""


async def test_pushes_to_a_client_that_does_not_read_are_bounded(tmp_path: Path, server_codec: str) -> None:
    async with chat_gateway(tmp_path, server_codec) as (gateway, _):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * KIB)  # little kernel buffering on our side
        sock.connect(gateway.host_port)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(upgrade("/prod"))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
        writer.write(masked_frame(TEXT, WHOAMI.encode()))
        _, reply = await read_frame(reader)
        connection_id = json.loads(reply)["connectionId"]
        # From now on the client reads nothing.
        rss_before = _rss_kib(gateway.process.pid)
        payload = b"q" * (100 * KIB)
        path = f"/prod/@connections/{quote(connection_id, safe='')}"
        request = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        api_reader, api_writer = await asyncio.open_connection(*gateway.host_port)
        statuses = []
        for _ in range(MAX_PUSHES):
            api_writer.write(request + payload)
            head = await asyncio.wait_for(api_reader.readuntil(b"\r\n\r\n"), CEILING_S)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await asyncio.wait_for(api_reader.readexactly(length), CEILING_S)
            statuses.append(int(head.split()[1]))
            if statuses[-1] != 200:
                break
        assert statuses[-1] == 429, statuses
        assert b"LimitExceededException" in head and b"not reading" in body
        assert statuses.count(200) >= 2
        # What the gateway holds for the client is capped (1 MiB of pushes past its high-water mark).
        assert _rss_kib(gateway.process.pid) - rss_before < 32 * KIB
        api_writer.close()
        writer.close()


async def test_with_credentials_every_call_must_be_signed_by_one_of_them(tmp_path: Path, server_codec: str) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = AKIDFRAMEGATE\naws_secret_access_key = s3cret\n")
    async with (
        chat_gateway(tmp_path, server_codec, "--credentials", str(credentials)) as (gateway, _),
        connect(f"{gateway.data}/prod") as client,
    ):
        identity = await whoami(client)
        endpoint = f"http://{identity['domainName']}/prod"
        connection_id = identity["connectionId"]
        signed = management_client(endpoint, "AKIDFRAMEGATE", "s3cret")
        await call(signed.post_to_connection, ConnectionId=connection_id, Data=b"signed")
        assert await asyncio.wait_for(client.recv(), CEILING_S) == "signed"

        forged = management_client(endpoint, "AKIDFRAMEGATE", "guessed")
        with pytest.raises(forged.exceptions.ForbiddenException) as refused:
            await call(forged.post_to_connection, ConnectionId=connection_id, Data=b"forged")
        assert "InvalidSignatureException" in refused.value.response["Error"]["Message"]
        assert "s3cret" not in str(refused.value.response)

        # Unsigned, even from loopback: refused.
        path = f"/prod/@connections/{quote(connection_id, safe='')}"
        api_reader, api_writer = await asyncio.open_connection(*gateway.host_port)
        api_writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\nu".encode())
        head = await asyncio.wait_for(api_reader.readuntil(b"\r\n\r\n"), CEILING_S)
        assert head.startswith(b"HTTP/1.1 403 ") and b"ForbiddenException" in head
        api_writer.close()
        await call(signed.post_to_connection, ConnectionId=connection_id, Data=b"after")
        assert await asyncio.wait_for(client.recv(), CEILING_S) == "after"  # nothing forged got through


async def test_a_custom_domain_addresses_the_api_by_its_mapping_key(tmp_path: Path, server_codec: str) -> None:
    async with chat_gateway(tmp_path, server_codec) as (gateway, _):
        reader, writer = await asyncio.open_connection(*gateway.host_port)
        writer.write(upgrade("/v2", host="chat.example.com"))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
        writer.write(masked_frame(TEXT, WHOAMI.encode()))
        _, reply = await read_frame(reader)
        identity = json.loads(reply)
        assert identity["domainName"] == "chat.example.com"
        connection_id = quote(identity["connectionId"], safe="")

        status, _ = await raw_call(gateway, "GET", f"/v2/@connections/{connection_id}", host="chat.example.com")
        assert status == 200
        status, _ = await raw_call(gateway, "GET", f"/prod/@connections/{connection_id}")  # the same stage
        assert status == 200
        status, head = await raw_call(gateway, "GET", f"/v1/@connections/{connection_id}", host="chat.example.com")
        assert status == 403 and b"ForbiddenException" in head  # no mapping: no stage to manage
        status, _ = await raw_call(gateway, "DELETE", f"/v2/%40connections/{connection_id}", host="chat.example.com")
        assert status == 204
        first, payload = await read_frame(reader)
        assert first & 0x0F == CLOSE and int.from_bytes(payload[:2], "big") == 1001
        writer.close()


async def test_the_api_is_served_over_tls_on_a_wss_port(tmp_path: Path, server_codec: str) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, bundle = tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(bundle))
    context = ssl.create_default_context(cafile=str(bundle))
    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    async with (
        chat_gateway(tmp_path, server_codec, *tls) as (gateway, _),
        connect(f"{gateway.data}/prod", ssl=context) as client,
    ):
        identity = await whoami(client)
        api = management_client(f"https://{identity['domainName']}/prod", verify=str(bundle))
        await call(api.post_to_connection, ConnectionId=identity["connectionId"], Data=b"over tls")
        assert await asyncio.wait_for(client.recv(), CEILING_S) == "over tls"
        info = await call(api.get_connection, ConnectionId=identity["connectionId"])
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
