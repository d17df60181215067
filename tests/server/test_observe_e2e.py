"""End to end: a ``framegate serve`` subprocess fronting a ``websockets`` echo backend.

Driven by independent clients only: the ``websockets`` library on the data
port, the unmodified ``aws apigatewayv2`` CLI and plain HTTP ``GET /metrics``
on the admin port, parsed with prometheus_client's parser.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

from tests.helpers.backends import Recorder, echo_backend, refusing_backend
from tests.helpers.servers import Framegate, framegate
from tests.test_metrics import Labels, parse

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("aws") is None, reason="aws CLI not installed"),
]
CALL_CEILING_S = 60.0
POLL_LIMIT = 200
"""Bounded polls of /metrics while the gateway finishes a close (each poll is one HTTP round trip)."""
TOO_MANY = "Too Many Requests"


@dataclass
class Gateway:
    data: str
    admin: str
    db_path: Path
    log_path: Path
    """The server's stderr (its logs, execution logs included)."""
    api_id: str = ""

    async def aws(self, *args: str) -> dict[str, object]:
        """Run an ``aws apigatewayv2`` command that must succeed; its parsed JSON output."""
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_PAGER": "",
        }
        process = await asyncio.create_subprocess_exec(
            "aws", "apigatewayv2", *args, "--endpoint-url", self.admin, "--output", "json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), CALL_CEILING_S)
        assert process.returncode == 0, err.decode()
        result: dict[str, object] = json.loads(out) if out.strip() else {}
        return result

    async def update_prod(self, *args: str) -> None:
        await self.aws("update-stage", "--api-id", self.api_id, "--stage-name", "prod", *args)

    async def scrape(self) -> dict[tuple[str, Labels], float]:
        def get() -> str:
            with urllib.request.urlopen(f"{self.admin}/metrics", timeout=CALL_CEILING_S) as response:
                text: str = response.read().decode()
                return text

        return parse(await asyncio.to_thread(get))

    async def scrape_when_closed(self) -> dict[tuple[str, Labels], float]:
        """Metrics once the gateway has finished every close (open connections back to 0)."""
        for _ in range(POLL_LIMIT):
            samples = await self.scrape()
            if samples[("framegate_open_connections", ())] == 0:
                return samples
        raise AssertionError("open connections never returned to 0")

    def stage_labels(self) -> Labels:
        return (("api_id", self.api_id), ("stage", "prod"))


@asynccontextmanager
async def running_gateway(tmp_path: Path, *flags: str) -> AsyncIterator[Gateway]:
    """A ``websockets`` echo backend, fronted by ``framegate serve --backend`` (stopped by PID)."""
    async with echo_backend(Recorder()) as backend, framegate(tmp_path, "--backend", backend, *flags) as server:
        yield await attach(server)


async def attach(server: Framegate) -> Gateway:
    """Observe ``server``: find the ``--backend`` quickstart API through the aws CLI."""
    gateway = Gateway(server.data, server.admin, server.db_path, server.log_path)
    apis = await gateway.aws("get-apis")
    items = apis["Items"]
    assert isinstance(items, list)
    (gateway.api_id,) = [item["ApiId"] for item in items if item["Name"] == "quickstart"]
    return gateway


async def test_metrics_count_connects_messages_bytes_and_closes(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gateway:
        before = await gateway.scrape()
        for n in range(3):
            async with connect(f"{gateway.data}/prod") as client:
                for m in range(4):
                    await client.send(f"hello {n}.{m}")
                    assert await client.recv() == f"hello {n}.{m}"
        after = await gateway.scrape_when_closed()
    labels = gateway.stage_labels()

    def moved(name: str, key: Labels = labels) -> float:
        return after.get((name, key), 0.0) - before.get((name, key), 0.0)

    assert moved("framegate_connect_count_total") == 3
    assert moved("framegate_message_count_total") == 3 * 4 * 2  # in and out, as AWS counts
    assert moved("framegate_client_error_total") == 0
    assert moved("framegate_closes_total", (("code", "1000"),)) == 3
    assert moved("framegate_bytes_in_total", ()) > 3 * 4 * len("hello 0.0")
    assert moved("framegate_bytes_out_total", ()) > 3 * 4 * len("hello 0.0")


async def test_update_stage_throttles_messages_on_an_open_connection(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gateway, connect(f"{gateway.data}/prod") as client:
        await client.send("before")
        assert await client.recv() == "before"
        await gateway.update_prod(
            "--route-settings", '{"$default": {"ThrottlingBurstLimit": 2, "ThrottlingRateLimit": 0}}'
        )
        for n in range(5):
            await client.send(f"m{n}")
        replies = [await client.recv() for _ in range(5)]
        throttled = [json.loads(reply) for reply in replies if TOO_MANY in reply]
        assert sorted(reply for reply in replies if TOO_MANY not in reply) == ["m0", "m1"]
        assert len(throttled) == 3
        assert all(frame["message"] == TOO_MANY and frame["connectionId"] and frame["requestId"] for frame in throttled)
        pong = await client.ping()
        await asyncio.wait_for(pong, CALL_CEILING_S)  # still connected
        samples = await gateway.scrape()
    assert samples[("framegate_throttled_requests_total", (("level", "route"),))] == 3
    assert samples[("framegate_client_error_total", gateway.stage_labels())] == 3


async def test_throttled_connect_gets_429_before_the_upgrade(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gateway:
        await gateway.update_prod("--default-route-settings", "ThrottlingBurstLimit=1,ThrottlingRateLimit=0")
        async with connect(f"{gateway.data}/prod") as first:
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{gateway.data}/prod")
            await first.send("still here")  # $default has its own bucket of the same size
            assert await first.recv() == "still here"
        response = refused.value.response
        assert response.status_code == 429
        assert json.loads(response.body) == {"message": TOO_MANY}
        samples = await gateway.scrape()
    assert samples[("framegate_throttled_requests_total", (("level", "stage"),))] >= 1
    assert samples[("framegate_connect_count_total", gateway.stage_labels())] == 1


FLOOD_BURST = 20
FLOOD_RATE = 50.0
FLOOD_SECONDS = 2.0
FLOOD_MAX_MESSAGES = 50_000
FLOOD_TOLERANCE = 3
"""Admitted may differ from burst + rate * T by the floor (1) and by the client-to-server
clock skew of a round trip at both ends (rate * 2 RTT, well under 1 on loopback): +-3."""


async def test_flood_admits_burst_plus_rate_times_duration(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gateway, connect(f"{gateway.data}/prod") as client:
        await gateway.update_prod(
            "--route-settings",
            json.dumps({"$default": {"ThrottlingBurstLimit": FLOOD_BURST, "ThrottlingRateLimit": FLOOD_RATE}}),
        )
        outcomes: Counter[str] = Counter()
        start = time.monotonic()
        elapsed = 0.0
        while elapsed < FLOOD_SECONDS and outcomes.total() < FLOOD_MAX_MESSAGES:
            await client.send("flood")  # closed loop: one in flight, so server time tracks client time
            reply = await client.recv()
            outcomes["throttled" if TOO_MANY in str(reply) else "admitted"] += 1
            elapsed = time.monotonic() - start
    expected = FLOOD_BURST + FLOOD_RATE * elapsed
    assert outcomes["throttled"] > 0, "the flood never reached the limit"
    assert abs(outcomes["admitted"] - expected) <= FLOOD_TOLERANCE, (outcomes, elapsed)


async def test_access_log_lines_match_the_stage_format(tmp_path: Path) -> None:
    fmt = (
        '{"requestId":"$context.requestId","eventType":"$context.eventType",'
        '"routeKey":"$context.routeKey","status":"$context.status"}'
    )
    async with running_gateway(tmp_path) as gateway:
        arn = "arn:aws:logs:us-east-1:123456789012:log-group:framegate-e2e"
        await gateway.update_prod("--access-log-settings", json.dumps({"DestinationArn": arn, "Format": fmt}))
        async with connect(f"{gateway.data}/prod") as client:
            await client.send("logged")
            assert await client.recv() == "logged"
        await gateway.scrape_when_closed()
        lines = (tmp_path / "logs" / "framegate-e2e.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["eventType"], e["routeKey"], e["status"]) for e in entries] == [
        ("CONNECT", "$connect", "200"),
        ("MESSAGE", "$default", "200"),
        ("DISCONNECT", "$disconnect", "200"),
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9+/]{15}=", e["requestId"]) for e in entries)
    assert len({e["requestId"] for e in entries}) == 3


async def test_data_trace_writes_execution_lines_with_truncated_payloads(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, "--data-trace-max-bytes", "8") as gateway:
        settings = {"$default": {"LoggingLevel": "INFO", "DataTraceEnabled": True}}
        await gateway.update_prod("--route-settings", json.dumps(settings))
        async with connect(f"{gateway.data}/prod") as client:
            await client.send('{"action":"traced-payload"}')
            assert await client.recv() == '{"action":"traced-payload"}'
        # logging writes and flushes each execution line before the message is forwarded
        lines = [line for line in gateway.log_path.read_text().splitlines() if " framegate.execution " in line]
    assert len(lines) == 2, lines
    received = r"INFO framegate\.execution \(\S{16}\) connectionId=\S{16} routeKey=\$default request received$"
    assert re.search(received, lines[0])
    assert lines[1].endswith('Method request body before transformations: {"action... [truncated, 27 bytes]')


async def test_integration_refusing_connect_counts_an_integration_error(tmp_path: Path) -> None:
    async with refusing_backend(401) as backend, framegate(tmp_path, "--backend", backend) as server:
        gateway = await attach(server)
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{gateway.data}/prod")
        samples = await gateway.scrape()
    assert refused.value.response.status_code == 401
    labels = gateway.stage_labels()
    assert samples[("framegate_connect_count_total", labels)] == 1
    assert samples[("framegate_integration_error_total", labels)] == 1
    assert samples[("framegate_upstream_connect_failures_total", ())] == 1


async def test_throttled_frame_text_is_configurable(tmp_path: Path) -> None:
    template = '{"error": "slow down", "id": "{requestId}", "conn": "{connectionId}"}'
    async with running_gateway(tmp_path, "--throttled-frame", template) as gateway:
        await gateway.update_prod(
            "--route-settings", '{"$default": {"ThrottlingBurstLimit": 0, "ThrottlingRateLimit": 0}}'
        )
        async with connect(f"{gateway.data}/prod") as client:
            await client.send("refused")
            frame = json.loads(await client.recv())
    assert frame["error"] == "slow down"
    assert re.fullmatch(r"[A-Za-z0-9+/]{15}=", frame["id"]) and re.fullmatch(r"[A-Za-z0-9+/]{15}=", frame["conn"])


async def test_account_new_connection_rate_refuses_with_429(tmp_path: Path) -> None:
    # 0.01/s: a bucket of one connection that refills in 100 s, so the second connect is refused.
    async with running_gateway(tmp_path, "--new-connections-per-s", "0.01") as gateway:
        async with connect(f"{gateway.data}/prod") as first:
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{gateway.data}/prod")
            await first.send("open")
            assert await first.recv() == "open"
        samples = await gateway.scrape()
    assert refused.value.response.status_code == 429
    assert samples[("framegate_throttled_requests_total", (("level", "new_connections"),))] == 1
    assert samples[("framegate_connect_count_total", gateway.stage_labels())] == 1


PIPELINED = 10
PIPELINED_BURST = 4


async def _pipelined_exchange(gateway: Gateway, messages: list[str]) -> list[str]:
    """Send ``messages`` as frames in one write (one read for the gateway) with wsproto; the replies."""
    client = WSConnection(ConnectionType.CLIENT)
    host, port = gateway.data.removeprefix("ws://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(client.send(Request(host=f"{host}:{port}", target="/prod")))
        replies: list[str] = []
        accepted = False
        while len(replies) < len(messages):
            data = await asyncio.wait_for(reader.read(65536), CALL_CEILING_S)
            assert data, "the gateway closed the connection"
            client.receive_data(data)
            for event in client.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                    writer.write(b"".join(client.send(Message(data=text)) for text in messages))
                elif isinstance(event, TextMessage):
                    replies.append(event.data)
            assert accepted
        writer.write(client.send(CloseConnection(code=1000)))
        await writer.drain()
    finally:
        writer.close()
    return replies


async def test_messages_read_together_are_throttled_and_counted_one_by_one(tmp_path: Path) -> None:
    """Frames arriving in one read take the bulk relay path: the same decisions and counts as singles."""
    async with running_gateway(tmp_path) as gateway:
        settings = {"ThrottlingBurstLimit": PIPELINED_BURST, "ThrottlingRateLimit": 0, "DetailedMetricsEnabled": True}
        await gateway.update_prod("--route-settings", json.dumps({"$default": settings}))
        before = await gateway.scrape()
        messages = [f"pipelined {n}" for n in range(PIPELINED)]
        replies = await _pipelined_exchange(gateway, messages)
        after = await gateway.scrape_when_closed()
    echoed = [reply for reply in replies if TOO_MANY not in reply]
    assert echoed == messages[:PIPELINED_BURST]  # in order, the burst and no more
    assert len(replies) - len(echoed) == PIPELINED - PIPELINED_BURST
    route = tuple(sorted((*gateway.stage_labels(), ("route", "$default"))))

    def moved(name: str, key: Labels) -> float:
        return after.get((name, key), 0.0) - before.get((name, key), 0.0)

    # MessageCount: every message in, every echo and throttled frame out (AWS counts both ways).
    assert moved("framegate_message_count_total", gateway.stage_labels()) == PIPELINED + PIPELINED
    assert moved("framegate_route_message_count_total", route) == PIPELINED
    assert moved("framegate_client_error_total", gateway.stage_labels()) == PIPELINED - PIPELINED_BURST
    assert moved("framegate_throttled_requests_total", (("level", "route"),)) == PIPELINED - PIPELINED_BURST
