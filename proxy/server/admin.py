"""The admin listener: apigatewayv2 REST under ``/v2/*``, ``/metrics``, ``/healthz`` and ``/readyz``.

Layer 4. HTTP/1.1 is aiohttp's low-level server (``aiohttp.web.Server``) on
the data plane's loop; this module is only the transport. It bounds what a
client can hold: a connection without a complete request head for
``ADMIN_KEEPALIVE_TIMEOUT_S`` (idle keep-alive, or a head sent slowly) is
closed by aiohttp's keep-alive timer, a body must arrive within
``ADMIN_BODY_TIMEOUT_S`` and fit ``MAX_ADMIN_BODY_BYTES`` (else 413 and the
connection closes), and past ``ADMIN_MAX_CONNECTIONS`` open connections a new
one gets a 503 and is closed. Handlers are plain functions ``Request ->
Response`` (``control.handlers``); this module never interprets JSON.

Every request first passes the ``control.access.Guard`` (SigV4 with
``--credentials``; loopback peers, loopback ``Host``, JSON bodies and no
foreign ``Origin`` without). ``/metrics``, ``/healthz`` and ``/readyz`` need
no signature (Prometheus and probes cannot sign) but pass the same
peer, ``Host`` and ``Origin`` checks.

Writes leave the loop: the control plane applies an operation to memory,
the SQLite commit (an fsync) runs on one writer thread, and only then is the
change published to the catalog and answered (``ControlPlane.prepare``).
Requests are handled one at a time (an ``asyncio.Lock``), so writes are
serialised and a read never sees a change the disk has not got. Work that
changes the control plane outside a request (re-applying ``--config``) goes
through ``AdminServer.exclusive`` to get the same guarantees.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar, cast
from weakref import WeakSet

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import REGISTRY as _DEFAULT_PROMETHEUS_REGISTRY
from prometheus_client import CollectorRegistry, ProcessCollector

from proxy import limits, sigv4
from proxy.config import Config
from proxy.control import wire
from proxy.control.access import Guard, is_loopback_host
from proxy.control.catalog import MemoryCatalog
from proxy.control.handlers import Request
from proxy.control.plane import ControlPlane, Pending, open_control_plane
from proxy.control.wire import Response
from proxy.errors import ControlError
from proxy.metrics import REGISTRY, exposition
from proxy.server.metricsmerge import summing_exposition

logger = logging.getLogger(__name__)
T = TypeVar("T")

Exposition = Callable[[], tuple[bytes, str]] | Callable[[], Awaitable[tuple[bytes, str]]]
"""Returns (or, summing workers, awaits) the Prometheus text and its content type (``proxy.metrics.exposition``)."""
Ready = Callable[[], bool]
"""True when the gateway can serve: the data listener is bound and the store is open."""
METRICS_PATH: Final = "/metrics"
HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
SERVER_NAME: Final = "framegate"
BUSY_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nServer: framegate\r\nConnection: close\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 26\r\n\r\nToo many admin connections"
)
"""What a connection past ``ADMIN_MAX_CONNECTIONS`` gets before it is closed."""
_TEXT: Final = "text/plain"
_PROCESS_METRICS: WeakSet[CollectorRegistry] = WeakSet()


def add_process_metrics(registry: CollectorRegistry = REGISTRY) -> None:
    """Register prometheus_client's ``process_*`` collector (CPU, RSS, fds, start time) once."""
    if registry is _DEFAULT_PROMETHEUS_REGISTRY or registry in _PROCESS_METRICS:
        return  # prometheus_client's own default registry has it already
    ProcessCollector(registry=registry)
    _PROCESS_METRICS.add(registry)


class _Busy(asyncio.Protocol):
    """A connection over the cap: one 503, then closed once the client stops sending.

    Closing at once with the request unread would send a reset, which can
    destroy the 503 before the client reads it; so the reply is followed by
    a FIN, what arrives is discarded, and the socket closes at the client's
    EOF or after ``ADMIN_LINGER_S``, whichever comes first.
    """

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        writer.write(BUSY_RESPONSE)
        if writer.can_write_eof():
            writer.write_eof()
        self._timer = asyncio.get_running_loop().call_later(limits.ADMIN_LINGER_S, writer.close)

    def data_received(self, data: bytes) -> None:
        pass  # read only so that the close is a FIN, not a reset

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _CountingServer(web.Server):
    """aiohttp's server, counting admitted connections until each is lost."""

    admitted = 0

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.admitted -= 1


class AdminServer:
    """The admin listener: aiohttp's protocol per connection, one handler coroutine for all.

    Args:
        plane: the control plane requests are dispatched to.
        guard: who may call (``control.access.Guard``).
        metrics: the ``/metrics`` body.
        ready: what ``/readyz`` reports, besides the store being open.
        max_body: larger request bodies get 413.
        keepalive_timeout: seconds a connection may go without a complete request head.
        body_timeout: seconds a request body may take to arrive.
        max_connections: open connections served; more get 503.
    """

    def __init__(
        self,
        plane: ControlPlane,
        guard: Guard,
        metrics: Exposition = exposition,
        ready: Ready = lambda: True,
        *,
        max_body: int = limits.MAX_ADMIN_BODY_BYTES,
        keepalive_timeout: float = limits.ADMIN_KEEPALIVE_TIMEOUT_S,
        body_timeout: float = limits.ADMIN_BODY_TIMEOUT_S,
        max_connections: int = limits.ADMIN_MAX_CONNECTIONS,
    ) -> None:
        self.plane = plane
        self.guard = guard
        self.ready = ready
        self._metrics = metrics
        self._max_body = max_body
        self._body_timeout = body_timeout
        self._max_connections = max_connections
        self._lock = asyncio.Lock()
        # One thread: SQLite commits happen in order, one at a time, never on the loop.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="framegate-store")
        self._http = _CountingServer(
            self._serve,
            keepalive_timeout=keepalive_timeout,
            access_log=None,
            lingering_time=limits.ADMIN_LINGER_S,
            max_line_size=limits.MAX_URL_CHARS,
            max_field_size=limits.MAX_REQUEST_HEAD_BYTES,
        )
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def protocol(self) -> asyncio.BaseProtocol:
        """The protocol factory: aiohttp's handler, or a 503 past the connection cap."""
        if self._http.admitted >= self._max_connections:
            return _Busy()
        self._http.admitted += 1
        return self._http()

    async def listen(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Bind ``host:port`` (0 picks a free port; read it from ``.port``); HTTPS with ``ssl_context``."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.protocol, host, port, reuse_address=True, ssl=ssl_context)

    async def close(self) -> None:
        """Stop listening, drop open connections (keep-alive clients linger), stop the writer."""
        if self.server is not None:
            self.server.close()
        await self._http.shutdown(limits.ADMIN_SHUTDOWN_TIMEOUT_S)
        if self.server is not None:
            await self.server.wait_closed()
        self._writer.shutdown(wait=True)

    # --- one request ------------------------------------------------------------

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            response = await self._respond(request)
        except ControlError as exc:
            response = wire.error(exc)
        except Exception:  # the connection boundary: a bug answers 500, the listener lives on
            logger.exception("admin request %s %s failed", request.method, request.raw_path)
            response = wire.error(ControlError("Internal server error"))
        return _web_response(response)

    async def _respond(self, request: web.BaseRequest) -> Response:
        path = request.rel_url.path
        self.guard.check_open(_admin_request(request, b""))  # refuse foreign peers before reading a body
        if request.method == "GET" and path == METRICS_PATH:
            exposed = self._metrics()
            text, content_type = await exposed if inspect.isawaitable(exposed) else exposed
            return Response(200, text, [("Content-Type", content_type)])
        if request.method == "GET" and path in (HEALTH_PATH, READY_PATH):
            return self._open_endpoint(path)
        try:
            body = await self._read_body(request)
        except TimeoutError:
            return Response(408, b"Request body timed out", [("Content-Type", _TEXT), ("Connection", "close")])
        if body is None:
            return Response(413, b"Request body too large", [("Content-Type", _TEXT), ("Connection", "close")])
        admin_request = _admin_request(request, body)
        self.guard.check(admin_request, datetime.now(UTC))
        async with self._lock:
            return await self._dispatch(admin_request)

    def _open_endpoint(self, path: str) -> Response:
        if path == HEALTH_PATH:
            return Response(200, b"ok\n", [("Content-Type", _TEXT)])
        if self.ready() and self.plane.is_open:
            return Response(200, b"ready\n", [("Content-Type", _TEXT)])
        return Response(503, b"not ready\n", [("Content-Type", _TEXT)])

    async def _read_body(self, request: web.BaseRequest) -> bytes | None:
        """The request body, or None when it is over the cap (the connection then closes)."""
        declared = request.content_length
        if declared is not None and declared > self._max_body:
            return None
        body = bytearray()
        async with asyncio.timeout(self._body_timeout):
            async for chunk in request.content.iter_any():
                body += chunk
                if len(body) > self._max_body:
                    return None
        return bytes(body)

    async def _dispatch(self, request: Request) -> Response:
        """Run the operation; a write's commit goes to the writer thread before anyone sees it."""
        pending = self.plane.prepare(request)
        try:
            await self._commit(pending)
        except Exception:
            logger.exception("control-plane write failed: %s %s", request.method, request.target)
            return wire.error(ControlError("Internal server error"))
        return pending.result

    async def exclusive(self, operation: Callable[[], T]) -> T:
        """Run a control-plane operation outside a request (re-applying ``--config``) as requests run.

        Serialised with them, applied whole or not at all, committed on the
        writer thread, then published.

        Raises:
            Whatever ``operation`` raises (memory is then as the store holds it),
            or the store's error (likewise).
        """
        async with self._lock:
            pending = self.plane.record(operation)
            await self._commit(pending)
            return pending.result

    async def refresh(self) -> bool:
        """Reload memory and the catalog if another process changed the store; True if it did.

        Serialised with requests; the store is read on the writer thread, so
        never at the same time as a commit.

        Raises:
            The store's error (memory and catalog are then as they were).
        """
        async with self._lock:
            loop = asyncio.get_running_loop()
            changed = await loop.run_in_executor(self._writer, self.plane.changed_rows)
            if changed is None:
                return False
            self.plane.restore(*changed)
            logger.info("control plane reloaded: another process changed the store (version %d)", changed[0])
            return True

    async def _commit(self, pending: Pending[Any]) -> None:
        if pending.changes:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._writer, self.plane.write, pending)
            except Exception:
                self.plane.abandon()
                raise
        self.plane.publish(pending)


def _admin_request(request: web.BaseRequest, body: bytes) -> Request:
    headers = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers)
    return Request(request.method, request.raw_path, body, headers, request.remote)


def _web_response(response: Response) -> web.Response:
    out = web.Response(status=response.status, body=response.body)
    out.headers["Server"] = SERVER_NAME
    for name, value in response.headers:
        if name.lower() == "connection" and value.lower() == "close":
            out.force_close()  # aiohttp writes the header itself
            continue
        out.headers.add(name, value)
    return out


async def start_admin_server(
    plane: ControlPlane,
    host: str,
    port: int,
    guard: Guard | None = None,
    metrics: Exposition = exposition,
    ready: Ready = lambda: True,
    *,
    keepalive_timeout: float = limits.ADMIN_KEEPALIVE_TIMEOUT_S,
    body_timeout: float = limits.ADMIN_BODY_TIMEOUT_S,
    max_connections: int = limits.ADMIN_MAX_CONNECTIONS,
    ssl_context: ssl.SSLContext | None = None,
) -> AdminServer:
    """Listen on ``host:port`` (0 picks a free port; read it from ``.port``); HTTPS with ``ssl_context``.

    ``guard`` defaults to the loopback-only one.
    """
    server = AdminServer(
        plane,
        guard or Guard(),
        metrics,
        ready,
        keepalive_timeout=keepalive_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
    )
    try:
        await server.listen(host, port, ssl_context)
    except BaseException:
        await server.close()
        raise
    return server


def read_credentials(config: Config) -> dict[str, str] | None:
    """``--credentials``: secret key by access key id (None without the flag); admin and ``AWS_IAM`` use them.

    Raises:
        ValueError: the file cannot be read or holds no key pair.
    """
    if config.credentials is None:
        return None
    try:
        text = Path(config.credentials).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --credentials {config.credentials}: {exc}") from exc
    return sigv4.parse_credentials(text, config.credentials)


def admin_guard(config: Config) -> Guard:
    """The guard ``config`` asks for; refuses an unauthenticated admin port off loopback.

    Raises:
        ValueError: the admin port would be open to the network without
            ``--credentials`` or ``--admin-allow-remote-unauthenticated``;
            or the credentials file cannot be read.
    """
    credentials = read_credentials(config)
    remote = not is_loopback_host(config.admin_host)
    if remote and credentials is None:
        if not config.admin_allow_remote_unauthenticated:
            raise ValueError(
                f"refusing to serve the admin API on {config.admin_host} without --credentials: anyone who "
                "reaches that address could change every route; pass --credentials FILE, or "
                "--admin-allow-remote-unauthenticated if a firewall guards it"
            )
        logger.warning(
            "!!! THE ADMIN API ON %s:%s IS OPEN TO THE NETWORK WITHOUT AUTHENTICATION "
            "(--admin-allow-remote-unauthenticated): anyone who reaches it can reconfigure "
            "every API; configure --credentials to require SigV4 signatures !!!",
            config.admin_host,
            config.admin_port,
        )
    return Guard(
        credentials=credentials,
        allowed_hosts=frozenset({config.admin_host.lower()}),
        allow_remote=config.admin_allow_remote_unauthenticated,
    )


async def start_control_plane(
    config: Config,
    catalog: MemoryCatalog,
    ready: Ready = lambda: True,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[ControlPlane, AdminServer]:
    """Open the control plane of ``config`` and serve it on ``config.admin_host:admin_port``.

    What ``framegate serve`` calls once: the catalog is current before this returns.
    ``ready`` tells ``/readyz`` whether the data listener is bound; ``ssl_context`` makes it HTTPS.
    """
    guard = admin_guard(config)
    plane = open_control_plane(config, catalog)
    add_process_metrics()
    metrics: Exposition = exposition
    if config.worker_metrics:
        metrics = summing_exposition(exposition, config.worker_metrics)
    try:
        server = await start_admin_server(
            plane, config.admin_host, config.admin_port, guard, metrics, ready=ready, ssl_context=ssl_context
        )
    except BaseException:
        plane.close()
        raise
    return plane, server
