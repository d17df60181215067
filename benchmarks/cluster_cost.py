"""What the cluster layer costs per lease and per routed call, on a real redis-server (docs/cluster.md#model).

Run: ``python -m benchmarks.cluster_cost`` (starts its own redis-server on a loopback port, stops
it by PID) or ``--redis redis://HOST:PORT/DB``. Every loop is bounded by ``--calls``. Prints JSON:

* ``take_ns``: the message path's cost, one ``LeasePool.take`` (no Redis);
* ``lease_us[K]``: wall time of one lease call topping up K buckets, seen by the client;
* ``lease_client_cpu_us[K]``: this process's CPU per lease call (the framegate side);
* ``lease_server_us[K]``: Redis's own time per call (``INFO commandstats``, evalsha);
* ``routed_post_us``: a PostToConnection from one registry to a connection on another, round trip
  (``ConnectionRegistry.call``: owner lookup, publish, the owner's reply; no HTTP);
* ``data_port_post_us``: PostToConnection through the real data ports of two ``framegate serve``
  nodes on the same Redis, one keep-alive HTTP connection, answer to answer: ``local`` on the client's
  node A, ``routed`` on node B, and their ratio (same run, same client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from http import HTTPStatus
from pathlib import Path
from urllib.parse import quote

import aiohttp
import redis
from websockets.asyncio.client import ClientConnection, connect

from proxy.cluster.leases import BucketLimits, LeaseClient, LeasePool
from proxy.cluster.membership import cluster_client
from proxy.cluster.registry import Answer, ConnectionRegistry, Operation

BUCKET_COUNTS = (1, 4, 16)
TAKES = 1_000_000
DATA_PORT_CALLS = 1000
"""PostToConnection calls per data-port measurement, at most (each is a few HTTP round trips)."""
CEILING_S = 15.0


def take_ns() -> float:
    pool = LeasePool(TAKES)
    pool.tokens = float(TAKES)
    start = time.perf_counter_ns()
    for _ in range(TAKES):
        pool.take()
    return (time.perf_counter_ns() - start) / TAKES


def evalsha_usec(url: str) -> tuple[int, float]:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    client.close()
    return int(stats["calls"]), float(stats["usec"])


async def lease_costs(url: str, calls: int, buckets: int) -> dict[str, float]:
    client = LeaseClient(cluster_client(url), f"bench:{buckets}")
    pools = [client.lease(f"b{n}", BucketLimits(rate=1e9, burst=10**9)) for n in range(buckets)]
    await client.refill()
    before_calls, before_usec = evalsha_usec(url)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        for pool in pools:
            assert isinstance(pool, LeasePool)
            pool.tokens = 0.0  # every bucket due: the call carries all of them
        await client.refill()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after_calls, after_usec = evalsha_usec(url)
    await client.client.aclose()
    return {
        "wall_us": wall / calls * 1e6,
        "client_cpu_us": cpu / calls * 1e6,
        "server_us": (after_usec - before_usec) / max(1, after_calls - before_calls),
    }


async def routed_post_us(url: str, calls: int) -> float:
    async def handler(operation: Operation) -> Answer:
        return Answer(200)

    clients = [cluster_client(url), cluster_client(url)]
    owner = ConnectionRegistry(url, clients[0], "owner", handler)
    caller = ConnectionRegistry(url, clients[1], "caller", handler)
    await owner.start()
    await caller.start()
    await owner.register("c")
    operation = Operation("POST", "c", "api", "prod", b"hello")
    start = time.perf_counter()
    for _ in range(calls):
        await caller.call(operation)
    elapsed = time.perf_counter() - start
    for node, client in zip((owner, caller), clients, strict=True):
        await node.stop()
        await client.aclose()
    return elapsed / calls * 1e6


async def _posts_us(session: aiohttp.ClientSession, url: str, calls: int, client: ClientConnection) -> float:
    """Mean answer-to-answer time of ``calls`` PostToConnection on one keep-alive connection."""
    start = time.perf_counter()
    for _ in range(calls):
        async with session.post(url, data=b"hello") as response:
            assert response.status == 200, (response.status, await response.text())
        await client.recv()  # the client reads every push: no back-pressure builds up
    return (time.perf_counter() - start) / calls * 1e6


async def data_port_post_us(url: str, calls: int) -> dict[str, float]:
    from tests.helpers.cluster import api_document, whoami
    from tests.helpers.servers import framegate

    base = url.rsplit("/", 1)[0]  # the nodes' store in database 0, the registry in database 1 of it
    flags = ("--db", f"{base}/0", "--redis", f"{base}/1")
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "chat.json"
        config.write_text(json.dumps(api_document()))
        async with (
            framegate(Path(directory) / "a", *flags, "--config", str(config), codec="cython") as a,
            framegate(Path(directory) / "b", *flags, codec="cython") as b,
            connect(f"{a.data}/prod") as client,
            aiohttp.ClientSession() as session,
        ):
            connection_id = await whoami(client)
            path = f"/prod/@connections/{quote(connection_id, safe='')}"
            local_url, routed_url = (f"http://{node.data.split('://', 1)[1]}{path}" for node in (a, b))
            async with asyncio.timeout(CEILING_S):  # registered about one Redis round trip after the 101
                while True:
                    async with session.get(routed_url) as response:
                        if response.status == HTTPStatus.OK:
                            break
            warm_up = max(1, calls // 10)
            await _posts_us(session, routed_url, warm_up, client)
            await _posts_us(session, local_url, warm_up, client)
            local = await _posts_us(session, local_url, calls, client)
            routed = await _posts_us(session, routed_url, calls, client)
    return {"local": round(local, 1), "routed": round(routed, 1), "routed_over_local": round(routed / local, 2)}


async def measure(url: str, calls: int) -> dict[str, object]:
    leases = {k: await lease_costs(url, calls, k) for k in BUCKET_COUNTS}
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "calls": calls,
        "take_ns": round(take_ns(), 1),
        "lease_us": {k: round(v["wall_us"], 1) for k, v in leases.items()},
        "lease_client_cpu_us": {k: round(v["client_cpu_us"], 1) for k, v in leases.items()},
        "lease_server_us": {k: round(v["server_us"], 2) for k, v in leases.items()},
        "routed_post_us": round(await routed_post_us(url, calls), 1),
        "data_port_post_us": await data_port_post_us(url, min(calls, DATA_PORT_CALLS)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="redis://HOST:PORT/DB (default: start a redis-server here)")
    parser.add_argument("--calls", type=int, default=3000, help="lease and routed calls per measurement")
    args = parser.parse_args()
    if args.redis:
        print(json.dumps(asyncio.run(measure(args.redis, args.calls)), indent=2))
        return
    from tests.helpers.redis import RedisServer, require_redis_server

    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(require_redis_server(), Path(directory))
        server.start()
        try:
            print(json.dumps(asyncio.run(measure(server.url, args.calls)), indent=2))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
