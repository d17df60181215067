"""Hostile clients that send and never read: framegate's memory stays bounded, others stay served.

Each flood runs in its own process (``tests.helpers.flood``: raw sockets,
bounded in time and count) against a ``framegate serve`` subprocess; its RSS
(``/proc/PID/status``) is compared with its RSS before the flood while
another client keeps echoing through the same gateway. The gateway's own
frames (pongs, throttling error frames) count against the flooding client's
write buffer: past its high-water mark the client is not read any more, so
TCP pushes back on its sends. Linux only.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import boto3
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers.backends import Recorder, echo_backend
from tests.helpers.servers import ROOT, Framegate, codec_env, framegate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status"),
]

KIB = 1024
FLOOD_S = 10.0
RSS_GROWTH_LIMIT_KIB = 8 * KIB
"""A few MB: the flooding connection's buffers (see README, "Memory per connection") and allocator slack."""
MAX_ECHOES = 100_000
"""Ceiling on the other client's round trips while the flood runs."""
CEILING_S = 30.0
THROTTLE = {"ThrottlingBurstLimit": 10, "ThrottlingRateLimit": 10.0}
CREDENTIALS = {"aws_access_key_id": "x", "aws_secret_access_key": "x", "region_name": "us-east-1"}


def _rss_kib(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    assert match
    return int(match[1])


def _stages(admin: str) -> None:
    """Throttle stage ``prod`` to 10 messages/s; add stage ``open`` on the same deployment, unthrottled."""
    client = boto3.client("apigatewayv2", endpoint_url=admin, **CREDENTIALS)
    (api_id,) = [item["ApiId"] for item in client.get_apis()["Items"] if item["Name"] == "quickstart"]
    deployment = client.get_stage(ApiId=api_id, StageName="prod")["DeploymentId"]
    client.update_stage(ApiId=api_id, StageName="prod", DefaultRouteSettings=THROTTLE)
    client.create_stage(ApiId=api_id, StageName="open", DeploymentId=deployment)


async def _echo_while(client: ClientConnection, flood: asyncio.subprocess.Process, pid: int) -> tuple[int, int]:
    """Round trips on ``client`` until the flood ends: (how many, the gateway's largest RSS meanwhile)."""
    echoes, peak = 0, 0
    waiting = asyncio.ensure_future(flood.wait())
    while not waiting.done() and echoes < MAX_ECHOES:
        await client.send(f"echo {echoes}")
        assert await asyncio.wait_for(client.recv(), CEILING_S) == f"echo {echoes}"
        echoes += 1
        peak = max(peak, _rss_kib(pid))
    await asyncio.wait_for(waiting, CEILING_S)
    return echoes, peak


async def _flood(gateway: Framegate, path: str, kind: str) -> tuple[int, int, dict[str, int]]:
    """Flood ``path`` with ``kind`` frames from a separate process; echo on /open meanwhile."""
    pid = gateway.process.pid
    host, port = gateway.host_port
    async with connect(f"{gateway.data}/open") as client:
        await client.send("warm-up")
        assert await asyncio.wait_for(client.recv(), CEILING_S) == "warm-up"
        before = _rss_kib(pid)
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.helpers.flood", host, str(port), path, kind, str(FLOOD_S),
            cwd=ROOT, env=codec_env("python"), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            echoes, peak = await asyncio.wait_for(_echo_while(client, flood, pid), FLOOD_S + CEILING_S)
        finally:
            if flood.returncode is None:
                flood.kill()
        assert flood.stdout is not None
        report = json.loads(await flood.stdout.read())
    assert flood.returncode == 0
    print(f"{kind} flood {report}; framegate RSS {before} -> peak {peak} KiB; {echoes} echoes meanwhile")
    return peak - before, echoes, report


@pytest.mark.parametrize("kind", ["ping", "text"])
async def test_a_client_that_floods_and_never_reads_keeps_framegate_memory_bounded(
    kind: str, tmp_path: Path, server_codec: str
) -> None:
    """Pings answered by pongs, or messages to a stage throttled to 10/s answered by error frames."""
    async with (
        echo_backend(Recorder()) as backend,
        framegate(tmp_path, "--backend", backend, codec=server_codec) as gateway,
    ):
        await asyncio.to_thread(_stages, gateway.admin)
        growth, echoes, report = await _flood(gateway, "/prod", kind)
    assert report["frames"] > 0
    assert echoes > 0  # the other client was served throughout
    assert growth < RSS_GROWTH_LIMIT_KIB
