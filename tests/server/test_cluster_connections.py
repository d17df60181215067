"""``@connections`` across nodes and workers: a call on any process reaches a client of any other.

Two nodes share one real Redis (``--db`` for the API, ``--redis`` for the
connection registry); a ``websockets`` client connects to node A and an
unmodified boto3 ``apigatewaymanagementapi`` client calls node B's data port.
Workers of one ``--workers 2`` node share a port: calls on fresh connections
land on either worker, with or without Redis (docs/cluster.md#registry).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.cluster import CEILING_S, api_document, node_flags, whoami
from tests.helpers.redis import RedisServer
from tests.helpers.servers import Framegate, framegate, supervised

pytestmark = pytest.mark.integration

MESSAGE_CAP = 128 * 1024
UNKNOWN_ID = "bm90LWEtY29ubj0="
CLIENTS = 8
"""Clients of a ``--workers 2`` node; with two calls each on fresh connections, every call landing
on its client's own worker by chance has odds of 2**-16."""


@asynccontextmanager
async def two_nodes(tmp_path: Path, redis: RedisServer, *flags: str) -> AsyncIterator[tuple[Framegate, Framegate]]:
    """Node A applies the API to the shared store; node B, started after, serves it too."""
    config = tmp_path / "chat.json"
    config.write_text(json.dumps(api_document()))
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            framegate(tmp_path / "a", *node_flags(redis), "--config", str(config), *flags, codec="cython")
        )
        b = await stack.enter_async_context(framegate(tmp_path / "b", *node_flags(redis), *flags, codec="cython"))
        yield a, b


def management_client(node: Framegate, stage: str = "prod") -> Any:
    """boto3's ``apigatewaymanagementapi`` on ``node``'s data port (dummy credentials, no retries)."""
    return management_client_for(node.data, stage)


def management_client_for(data_url: str, stage: str = "prod") -> Any:
    """boto3's ``apigatewaymanagementapi`` on the data port at ``data_url`` (``ws://HOST:PORT``)."""
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"http://{data_url.split('://', 1)[1]}/{stage}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


def error_code(api: Any, operation: str, **kwargs: Any) -> str:
    """The AWS error code ``operation`` answers (``""`` when it succeeds)."""
    try:
        getattr(api, operation)(**kwargs)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return ""


async def until_reachable(api: Any, connection_id: str) -> dict[str, Any]:
    """GetConnection through ``api`` once the connection's node has written it to the registry.

    A bounded loop of real calls, never a sleep: the registration lands about
    one Redis round trip after the client's 101.
    """
    async with asyncio.timeout(CEILING_S):
        while True:
            try:
                info: dict[str, Any] = await asyncio.to_thread(api.get_connection, ConnectionId=connection_id)
                return info
            except api.exceptions.GoneException:
                continue


async def test_a_call_on_node_b_reaches_a_client_of_node_a(tmp_path: Path, redis_server: RedisServer) -> None:
    async with (
        two_nodes(tmp_path, redis_server) as (a, b),
        connect(f"{a.data}/prod", user_agent_header="cluster-test/1.0") as client,
    ):
        connection_id = await whoami(client)
        api = management_client(b)
        info = await until_reachable(api, connection_id)
        assert info["Identity"]["UserAgent"] == "cluster-test/1.0"
        assert info["Identity"]["SourceIp"] == "127.0.0.1"

        await asyncio.to_thread(api.post_to_connection, ConnectionId=connection_id, Data=b'{"from": "b"}')
        assert await asyncio.wait_for(client.recv(), CEILING_S) == '{"from": "b"}'
        await asyncio.to_thread(api.post_to_connection, ConnectionId=connection_id, Data=b"\xff\x00binary")
        assert await asyncio.wait_for(client.recv(), CEILING_S) == b"\xff\x00binary"
        big = b"m" * MESSAGE_CAP  # a message at the cap travels whole
        await asyncio.to_thread(api.post_to_connection, ConnectionId=connection_id, Data=big)
        assert await asyncio.wait_for(client.recv(), CEILING_S) == big.decode()

        # Refused on B before anything is forwarded: the same AWS shapes as for a local connection.
        too_big = b"m" * (MESSAGE_CAP + 1)
        code = await asyncio.to_thread(error_code, api, "post_to_connection", ConnectionId=connection_id, Data=too_big)
        assert code == "PayloadTooLargeException"
        code = await asyncio.to_thread(error_code, api, "post_to_connection", ConnectionId=UNKNOWN_ID, Data=b"x")
        assert code == "GoneException"
        # The owner checks the endpoint: the connection is managed through its own stage only.
        beta = management_client(b, "beta")
        code = await asyncio.to_thread(error_code, beta, "get_connection", ConnectionId=connection_id)
        assert code == "ForbiddenException"

        await asyncio.to_thread(api.delete_connection, ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(client.recv(), CEILING_S)
        assert client.close_code == 1001
        code = await asyncio.to_thread(error_code, api, "get_connection", ConnectionId=connection_id)
        assert code == "GoneException"


async def test_routed_and_local_calls_pipelined_on_one_connection_answer_in_order(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        two_nodes(tmp_path, redis_server) as (a, b),
        connect(f"{a.data}/prod") as on_a,
        connect(f"{b.data}/prod") as on_b,
    ):
        remote, local = await whoami(on_a), await whoami(on_b)
        await until_reachable(management_client(b), remote)
        host, port = b.host_port
        reader, writer = await asyncio.open_connection(host, port)
        requests = [("POST", remote, "one"), ("POST", local, "two"), ("GET", UNKNOWN_ID, ""), ("POST", remote, "3")]
        writer.write(
            b"".join(
                f"{method} /prod/@connections/{quote(connection_id, safe='')} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
                for method, connection_id, body in requests
            )
        )
        statuses = []
        for _ in requests:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
            fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
            length = int(fields[b"content-length"])
            await reader.readexactly(length)
            statuses.append(int(head.split()[1]))
        writer.close()
        assert statuses == [200, 200, 410, 200]
        assert [await asyncio.wait_for(on_a.recv(), CEILING_S) for _ in range(2)] == ["one", "3"]
        assert await asyncio.wait_for(on_b.recv(), CEILING_S) == "two"


async def test_a_client_of_a_killed_node_is_gone_once_its_lease_runs_out(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with two_nodes(tmp_path, redis_server) as (a, b):
        client = await connect(f"{a.data}/prod")
        connection_id = await whoami(client)
        api = management_client(b)
        await until_reachable(api, connection_id)
        a.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(a.process.wait(), CEILING_S)
        # Until A's lease runs out (NODE_TTL_S) B still finds A as the owner, but nobody answers.
        seen = set()
        async with asyncio.timeout(CEILING_S):
            while (code := await asyncio.to_thread(error_code, api, "get_connection", ConnectionId=connection_id)) != (
                "GoneException"
            ):
                seen.add(code)
        assert seen <= {"ServiceUnavailableException"}, seen
        code = await asyncio.to_thread(error_code, api, "post_to_connection", ConnectionId=connection_id, Data=b"x")
        assert code == "GoneException"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(client.recv(), CEILING_S)


async def post_on_a_fresh_connection(data_url: str, connection_id: str, body: str) -> int:
    """One PostToConnection on its own TCP connection (so the kernel picks the worker anew): the status."""
    host, port = data_url.split("://", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /prod/@connections/{quote(connection_id, safe='')} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
    writer.close()
    return int(head.split()[1])


@pytest.mark.parametrize("with_redis", [False, True], ids=["unix-sockets", "redis"])
async def test_a_call_reaches_a_client_whichever_worker_it_lands_on(
    tmp_path: Path, redis_server: RedisServer, with_redis: bool
) -> None:
    config = tmp_path / "chat.json"
    config.write_text(json.dumps(api_document()))
    flags = node_flags(redis_server) if with_redis else ()
    async with supervised(tmp_path, 2, "--config", str(config), *flags) as gateway, AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(f"{gateway.data}/prod")) for _ in range(CLIENTS)]
        ids = [await whoami(client) for client in clients]
        if with_redis:  # registered about one Redis round trip after the 101
            for connection_id in ids:
                await until_reachable(management_client_for(gateway.data), connection_id)
        for round_ in ("first", "second"):
            statuses = [
                await post_on_a_fresh_connection(gateway.data, connection_id, f"{round_} {index}")
                for index, connection_id in enumerate(ids)
            ]
            assert statuses == [200] * CLIENTS
            for index, client in enumerate(clients):
                assert await asyncio.wait_for(client.recv(), CEILING_S) == f"{round_} {index}"
        assert await post_on_a_fresh_connection(gateway.data, UNKNOWN_ID, "x") == 410
