"""Two ``framegate serve`` nodes on one real Redis acting as one gateway (docs/cluster.md).

Each node is a separate process with ``--db redis://.../0`` (the shared
store) and ``--redis redis://.../1`` (shared throttling); clients and the
admin calls are independent (``websockets``, boto3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers.cluster import CEILING_S, ECHO, admin_client, connects, demo_deployment, node_flags, scrape_until
from tests.helpers.redis import RedisServer, free_port
from tests.helpers.servers import ROOT, Framegate, codec_env, framegate, serve_argv

pytestmark = pytest.mark.integration

FLOOD_S = 2.0
"""Length of the throttling test's flood, measured by the clients."""


@asynccontextmanager
async def nodes(tmp_path: Path, redis: RedisServer, count: int = 2, workers: int = 1) -> AsyncIterator[list[Framegate]]:
    """``count`` nodes on ``redis``, each ``framegate serve --workers workers``."""
    flags = (*node_flags(redis), "--workers", str(workers))
    async with AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(framegate(tmp_path / f"node{index}", *flags, codec="cython"))
            for index in range(count)
        ]
        yield started


async def test_a_change_on_one_node_is_served_by_the_other_within_a_second(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with nodes(tmp_path, redis_server) as (a, b):
        client_a, client_b = admin_client(a.admin), admin_client(b.admin)
        api_id, deployment_id = await asyncio.to_thread(demo_deployment, client_a)
        await asyncio.to_thread(client_a.create_stage, ApiId=api_id, StageName="blue", DeploymentId=deployment_id)
        changed = time.monotonic()
        while time.monotonic() - changed < CEILING_S:
            stages = await asyncio.to_thread(client_b.get_stages, ApiId=api_id)
            if any(stage["StageName"] == "blue" for stage in stages["Items"]):
                break
        seen_after = time.monotonic() - changed
        assert seen_after < 1.0, f"node B saw the change after {seen_after:.2f} s"
        assert await connects(f"{b.data}/blue")
        # And back: a deletion on B stops A serving the stage.
        await asyncio.to_thread(client_b.delete_stage, ApiId=api_id, StageName="blue")
        deleted = time.monotonic()
        while time.monotonic() - deleted < CEILING_S and await connects(f"{a.data}/blue"):
            pass
        assert not await connects(f"{a.data}/blue")


async def _flood(client: ClientConnection, until: float) -> tuple[int, float, float]:
    """Send as fast as the answers come back until ``until``; (echoed, first send, last send)."""
    echoed = 0
    first = last = time.monotonic()
    while time.monotonic() < until:
        # Several in flight at once, then their answers: an echo or a throttled frame each.
        for _ in range(8):
            await client.send(ECHO)
        last = time.monotonic()
        for _ in range(8):
            echoed += await asyncio.wait_for(client.recv(), CEILING_S) == ECHO
    return echoed, first, last


async def test_throttling_holds_across_two_nodes_of_two_workers(tmp_path: Path, redis_server: RedisServer) -> None:
    """Issue 19's matrix: 2 nodes x 2 workers (4 leasing processes) flooding one route."""
    burst, rate = 100, 50.0
    async with nodes(tmp_path, redis_server, workers=2) as (a, b):
        # Connected first: $connect is throttled by the same stage settings. Four clients per node,
        # so the kernel's SO_REUSEPORT spreading almost always gives every worker some.
        clients = [await connect(f"{node.data}/dev") for node in (a, b) * 4]
        client = admin_client(a.admin)
        api_id, _ = await asyncio.to_thread(demo_deployment, client)
        await asyncio.to_thread(
            client.update_stage,
            ApiId=api_id,
            StageName="dev",
            DefaultRouteSettings={"ThrottlingBurstLimit": burst, "ThrottlingRateLimit": rate},
        )
        # Both nodes serve the new limits before the flood (the change reaches B through Redis).
        changed = time.monotonic()
        while time.monotonic() - changed < CEILING_S:
            stage = await asyncio.to_thread(admin_client(b.admin).get_stage, ApiId=api_id, StageName="dev")
            if stage["DefaultRouteSettings"].get("ThrottlingBurstLimit") == burst:
                break
        until = time.monotonic() + FLOOD_S
        results = await asyncio.gather(*(_flood(client, until) for client in clients))
        for client in clients:
            await client.close()
        admitted = sum(echoed for echoed, _, _ in results)
        window = max(last for _, _, last in results) - min(first for _, first, _ in results)
        single = burst + rate * window  # what one process's bucket admits to this flood
        assert abs(admitted - single) <= max(0.05 * single, burst / 10), (admitted, single, window)


async def test_redis_down_and_back_keeps_connections_and_recovers(tmp_path: Path, redis_server: RedisServer) -> None:
    async with framegate(tmp_path, *node_flags(redis_server), codec="cython") as node:
        clients: list[ClientConnection] = [await connect(f"{node.data}/dev") for _ in range(4)]
        await scrape_until(node.admin, lambda found: found.get(("framegate_cluster_degraded", ())) == 0)
        redis_server.kill()
        for client in clients:  # mid-load: messages keep flowing, throttled on local shares
            await client.send(ECHO)
            assert await asyncio.wait_for(client.recv(), CEILING_S) == ECHO
        await scrape_until(node.admin, lambda found: found.get(("framegate_cluster_degraded", ())) == 1)
        assert await connects(f"{node.data}/dev")  # new connections too
        redis_server.start()
        await scrape_until(node.admin, lambda found: found.get(("framegate_cluster_degraded", ())) == 0)
        for client in clients:
            await client.send(ECHO)
            assert await asyncio.wait_for(client.recv(), CEILING_S) == ECHO
            await client.close()
            assert client.close_code == 1000
        assert node.process.returncode is None
        log = node.log_path.read_text()
        assert "REDIS UNAVAILABLE" in log and "Redis reachable again" in log


async def test_a_burst_of_connections_is_accepted_at_once(tmp_path: Path, redis_server: RedisServer) -> None:
    """$connect leases 10 tokens at a time (500/s); the rest of the 500 burst comes from credit."""
    async with framegate(tmp_path, *node_flags(redis_server), codec="cython") as node:
        # Credit starts with the second heartbeat, a look interval after the first (two lease calls).
        await scrape_until(node.admin, lambda found: found.get(("framegate_cluster_lease_calls_total", ()), 0) >= 2)
        accepted = await asyncio.gather(*(connects(f"{node.data}/dev") for _ in range(40)))
        assert all(accepted), f"{accepted.count(False)} of 40 connections refused"


async def test_redis_passwords_stay_out_of_the_ready_line_and_the_logs(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    secret = "hunter2-cluster"
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("appendfsync", "everysec")  # so the store logs its NOT DURABLE line with the URL
    client.config_set("requirepass", secret)
    client.close()
    store = f"redis://:{secret}@127.0.0.1:{redis_server.port}/0"
    unreachable = f"redis://:{secret}@127.0.0.1:{free_port()}/1"  # so the listeners log "lost Redis at"
    process = await asyncio.create_subprocess_exec(
        *serve_argv(tmp_path / "unused.db", "--db", store, "--redis", unreachable),
        cwd=ROOT,
        env=codec_env("cython"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        ready = (await asyncio.wait_for(process.stdout.readline(), CEILING_S)).decode()
        assert f"db=redis://***@127.0.0.1:{redis_server.port}/0" in ready
        log, start = "", time.monotonic()
        while "lost Redis at" not in log:
            assert time.monotonic() - start < CEILING_S, log[-2000:]
            line = await asyncio.wait_for(process.stderr.readline(), CEILING_S)
            assert line, f"the node exited: {log[-2000:]}"
            log += line.decode()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), CEILING_S)
    assert "NOT DURABLE at redis://***@127.0.0.1" in log and "lost Redis at redis://***@127.0.0.1" in log
    assert secret not in ready + log
