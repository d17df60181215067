"""The deployment recipe without Docker: two nodes on one Redis behind HAProxy in TCP mode.

``deploy/haproxy-local.cfg`` (the loopback twin of ``deploy/haproxy.cfg``) is
run as README's "Scaling out" says, with its ports in the environment; the
``haproxy`` Debian package provides it (``.ci/run`` installs it; under CI a
missing binary fails the test).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers.cluster import CEILING_S, ECHO, connects, node_flags, scrape_until
from tests.helpers.redis import RedisServer, free_port, require_binary
from tests.helpers.servers import ROOT, framegate

pytestmark = pytest.mark.integration
CLIENTS = 6


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


async def test_haproxy_spreads_clients_over_two_nodes(tmp_path: Path, redis_server: RedisServer) -> None:
    binary = require_binary("haproxy", "haproxy")
    async with (
        framegate(tmp_path / "a", *node_flags(redis_server), codec="cython") as a,
        framegate(tmp_path / "b", *node_flags(redis_server), codec="cython") as b,
    ):
        front = free_port()
        env = {
            **os.environ,
            "FRONT_PORT": str(front),
            "NODE_A_PORT": _port(a.data),
            "NODE_A_ADMIN": _port(a.admin),
            "NODE_B_PORT": _port(b.data),
            "NODE_B_ADMIN": _port(b.admin),
        }
        config = ROOT / "deploy" / "haproxy-local.cfg"
        haproxy = await asyncio.create_subprocess_exec(binary, "-db", "-f", str(config), env=env)
        try:
            url = f"ws://127.0.0.1:{front}/dev"
            start = time.monotonic()
            while time.monotonic() - start < CEILING_S:
                assert haproxy.returncode is None, "haproxy exited; its log is above"
                try:
                    if await connects(url):
                        break
                except OSError:  # not listening yet
                    continue
            clients: list[ClientConnection] = [await connect(url) for _ in range(CLIENTS)]
            for client in clients:
                await client.send(ECHO)
                assert await asyncio.wait_for(client.recv(), CEILING_S) == ECHO
            # leastconn: the open clients are spread over both nodes.
            for node in (a, b):
                await scrape_until(node.admin, lambda found: found.get(("framegate_open_connections", ()), 0) >= 1)
            for client in clients:
                await client.close()
        finally:
            if haproxy.returncode is None:
                haproxy.terminate()
            await asyncio.wait_for(haproxy.wait(), CEILING_S)
