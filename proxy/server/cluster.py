"""The cluster pieces of one ``framegate serve`` process: catalog sync and shared throttling.

Layer 4. ``StoreWatcher`` keeps this process's catalog in step with a store
other processes write: on a ``redis://`` store a ``ChangeListener``
(``proxy.cluster.changes``) says when any node applied a batch; on SQLite
(workers of ``--workers N`` sharing one file) it reads ``PRAGMA
data_version`` every ``STORE_POLL_INTERVAL_S``; ``serve`` starts none for a
lone process on SQLite, the store's only writer. Either way the
reload is ``AdminServer.refresh``: serialised with admin requests, its store
read on the writer thread, the catalog republished on the loop; a process's
own changes never trigger one.

``shared_throttling`` builds the ``--redis`` bucket backend: a ``LeaseBackend``
whose ``LeaseClient`` leases tokens from Redis off the message path and, while
Redis is unreachable, hands out local shares (docs/cluster.md#leases).

``connection_routing`` builds what reaches connections of other processes:
the ``--redis`` connection registry (``proxy.cluster.registry``, nodes and
workers alike), or for ``--workers N`` without it the siblings' Unix sockets
(``proxy.server.siblings``); ``attach`` points it at the gateway: its open
connections, and ``proxy.server.management.serve_routed`` for calls routed
to them (docs/cluster.md#registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Protocol

from proxy import throttle
from proxy.cluster.background import Background
from proxy.cluster.changes import Backoff, ChangeListener
from proxy.cluster.envelope import Answer, Operation
from proxy.cluster.leases import LeaseBackend, LeaseClient
from proxy.cluster.membership import cluster_client, new_node_id
from proxy.cluster.registry import ConnectionRegistry, Handler
from proxy.config import Config
from proxy.errors import GoneException
from proxy.limits import STORE_POLL_INTERVAL_S
from proxy.metrics import ClusterMetrics
from proxy.server.admin import AdminServer
from proxy.server.gateway import Gateway
from proxy.server.management import Directory, serve_routed
from proxy.server.siblings import SiblingRouter
from proxy.store.open import is_redis_url

logger = logging.getLogger(__name__)


class StoreWatcher(Background):
    """Reloads the catalog whenever another process changed the store (see the module docstring).

    Args:
        admin: the process's admin server (its ``refresh`` reloads, serialised with requests).
        url: ``--db``: a ``redis://`` URL (notified) or a SQLite path (polled).
        poll_s: the SQLite polling interval.
    """

    def __init__(self, admin: AdminServer, url: str, poll_s: float = STORE_POLL_INTERVAL_S) -> None:
        self.admin = admin
        self._due = asyncio.Event()
        self.listener: ChangeListener | None = None
        self.poll_s: float | None = poll_s
        self.backoff = Backoff()
        if is_redis_url(url):
            self.listener = ChangeListener(url, self._announced, version=admin.plane.version)
            self.poll_s = None

    def _announced(self, version: int) -> None:
        self._due.set()

    def start(self) -> None:
        super().start()
        if self.listener is not None:
            self.listener.start()

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        await super().stop()

    async def run(self) -> None:
        while True:
            if self.poll_s is None:
                await self._due.wait()
            else:
                # A timer, not a synchronisation: the SQLite store cannot notify, so it is read this often.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._due.wait(), self.poll_s)
            self._due.clear()
            try:
                await self.admin.refresh()
            except Exception as exc:  # a background loop's boundary: Redis away, a locked file; try again
                delay = self.backoff.failed()
                logger.warning("cannot reload the control plane from the store (%s); retrying in %.2f s", exc, delay)
                # A timer, not a synchronisation: the change announced is still unapplied, so look again.
                await asyncio.sleep(delay)
                self._due.set()
            else:
                self.backoff.succeeded()


@dataclass
class SharedThrottling:
    """``--redis``: the throttler's bucket backend and the lease client that fills it."""

    backend: LeaseBackend[throttle.TokenBucket]
    leases: LeaseClient


def empty_bucket(burst: int, now: float) -> throttle.TokenBucket:
    """A ``TokenBucket`` of rate 0 holding nothing, ``burst`` big: tokens reach it only by lease."""
    bucket = throttle.TokenBucket(0.0, 0, now)
    bucket.reconfigure(0.0, burst, now)
    return bucket


def shared_throttling(config: Config, metrics: ClusterMetrics | None = None) -> SharedThrottling | None:
    """The lease backend ``--redis`` asks for (None without it); start ``leases`` on the loop."""
    if config.redis is None:
        return None
    leases = LeaseClient(
        cluster_client(config.redis),
        new_node_id(),
        metrics=metrics if metrics is not None else ClusterMetrics(),
        live=config.workers,
    )
    return SharedThrottling(LeaseBackend(leases, empty_bucket), leases)


class Routing(Directory, Protocol):
    """A ``Directory`` with its lifetime: ``ConnectionRegistry`` or ``SiblingRouter``."""

    handler: Handler

    async def start(self) -> None: ...

    async def close(self) -> None: ...


async def _not_attached(operation: Operation) -> Answer:
    raise GoneException(f"connection {operation.connection_id} is not open")


def connection_routing(config: Config) -> Routing | None:
    """What reaches other processes' connections (None for a lone process): give it to the ``Gateway``,
    then ``attach`` it, then ``start`` it."""
    if config.redis is not None:
        return ConnectionRegistry(config.redis, cluster_client(config.redis), new_node_id(), _not_attached)
    if config.route_socket is not None:
        return SiblingRouter(config.route_socket, config.sibling_sockets, _not_attached)
    return None


def attach(routing: Routing, gateway: Gateway) -> None:
    """Serve routed calls with ``gateway``'s connections (and re-register them from it if a lease ran out)."""
    routing.handler = functools.partial(serve_routed, gateway)
    if isinstance(routing, ConnectionRegistry):
        routing.open_ids = lambda: list(gateway.open_connections)
