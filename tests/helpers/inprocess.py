"""A ``Gateway`` served inside the test's event loop, fed by a ``MemoryCatalog`` the test edits.

For behaviour a subprocess cannot show: a redeploy published while a client
is connected, per-connection timers with tiny settings, write buffers.
Also a prefixing echo backend (``websockets`` library) that reports how its
connections ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.integrations.runner import IntegrationRunner
from proxy.metrics import GatewayMetrics
from proxy.server.deadlines import Clock
from proxy.server.gateway import Gateway
from proxy.server.logsink import LogSinks
from proxy.server.management import Directory
from proxy.server.observer import Observer
from proxy.throttle import Throttler

LOOPBACK = "127.0.0.1"
FRAGMENT_BYTES = 32 * 1024
"""Replies are fragmented like a well-behaved backend behind AWS's frame cap."""


@dataclass
class InProcessGateway:
    gateway: Gateway
    server: asyncio.Server

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.server.sockets[0].getsockname()[1]}"


@asynccontextmanager
async def in_process_gateway(
    catalog: MemoryCatalog,
    tmp_path: Path,
    config: Config | None = None,
    clock: Clock | None = None,
    runner: IntegrationRunner | None = None,
    credentials: Mapping[str, str] | None = None,
    registry: Directory | None = None,
) -> AsyncIterator[InProcessGateway]:
    """Serve ``catalog`` on an ephemeral loopback port with a private metrics registry.

    ``clock``: the gateway's time (a ``tests.helpers.clock.FakeClock`` to move it by hand).
    ``runner``: runs HTTP and Lambda integrations (one from ``config`` by default); closed at the end.
    ``credentials``: what verifies ``AWS_IAM`` upgrades (secret key by access key id).
    ``registry``: told of connections opening and closing; routes @connections calls for others.
    """
    config = config or Config(port=0, admin_port=0)
    observer = Observer(config, metrics=GatewayMetrics(CollectorRegistry()), sinks=LogSinks(str(tmp_path)))
    throttler = Throttler.from_config(config, time.monotonic if clock is None else clock.time)
    gateway = Gateway(config, catalog, observer, throttler, clock, runner, credentials, registry)
    server = await asyncio.get_running_loop().create_server(gateway.protocol, LOOPBACK, 0)
    try:
        yield InProcessGateway(gateway, server)
    finally:
        server.close()
        for connection in list(gateway.connections):
            connection.abort()
        await server.wait_closed()
        late = list(gateway.background)  # $disconnect calls still running: cancelled, not waited for
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        await gateway.runner.close()
        observer.close()


@dataclass
class PrefixEcho:
    """What a ``prefix_echo`` backend saw."""

    url: str = ""
    connections: asyncio.Queue[ServerConnection] = field(default_factory=asyncio.Queue)
    closes: asyncio.Queue[tuple[int | None, str | None]] = field(default_factory=asyncio.Queue)
    upgrades: int = 0


def _fragments(text: str) -> list[str]:
    return [text[i : i + FRAGMENT_BYTES] for i in range(0, len(text), FRAGMENT_BYTES)]


@asynccontextmanager
async def prefix_echo(prefix: str) -> AsyncIterator[PrefixEcho]:
    """Echo text messages as ``prefix + message``; report each connection and how it closed."""
    seen = PrefixEcho()

    async def handler(connection: ServerConnection) -> None:
        seen.upgrades += 1
        await seen.connections.put(connection)
        try:
            async for message in connection:
                reply = prefix + message if isinstance(message, str) else message.decode()
                await connection.send(_fragments(reply) if len(reply) > FRAGMENT_BYTES else reply)
        except ConnectionClosed:
            pass
        finally:
            await seen.closes.put((connection.close_code, connection.close_reason))

    async with serve(handler, LOOPBACK, 0, max_size=None, compression=None) as server:
        seen.url = f"ws://{LOOPBACK}:{server.sockets[0].getsockname()[1]}"
        yield seen
