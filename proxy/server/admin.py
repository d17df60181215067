"""The admin listener: apigatewayv2 REST under ``/v2/*`` and Prometheus ``GET /metrics``.

Layer 4. HTTP/1.1 via h11 (sans-IO, already a wsproto dependency) over an
``asyncio.Protocol``; keep-alive and pipelined requests are served in order.
A request body over ``MAX_ADMIN_BODY_BYTES`` is answered 413 and the
connection closed, before the rest of the body is read. Handlers are plain
functions ``Request -> Response``; this module never interprets JSON.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import cast

import h11

from proxy import limits
from proxy.config import Config
from proxy.control import wire
from proxy.control.catalog import MemoryCatalog
from proxy.control.handlers import Request
from proxy.control.plane import ControlPlane, open_control_plane
from proxy.control.wire import Response
from proxy.errors import ControlError
from proxy.metrics import exposition

logger = logging.getLogger(__name__)

Handle = Callable[[Request], Response]
Exposition = Callable[[], tuple[bytes, str]]
"""Returns the Prometheus text and its content type (``proxy.metrics.exposition``)."""
METRICS_PATH = b"/metrics"
SERVER_NAME = b"framegate"


class AdminProtocol(asyncio.Protocol):
    """One admin connection: feeds h11, dispatches each complete request, writes the reply."""

    def __init__(
        self,
        handle: Handle,
        max_body: int = limits.MAX_ADMIN_BODY_BYTES,
        open_set: set[AdminProtocol] | None = None,
        metrics: Exposition = exposition,
    ) -> None:
        self._handle = handle
        self._metrics = metrics
        self._open = open_set if open_set is not None else set()
        self._max_body = max_body
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.MAX_REQUEST_HEAD_BYTES)
        self._transport: asyncio.Transport | None = None
        self._request: h11.Request | None = None
        self._body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._open.add(self)

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._drain_events()

    def eof_received(self) -> bool | None:
        self._conn.receive_data(b"")
        self._drain_events()
        return None

    def _drain_events(self) -> None:
        try:
            while self._transport is not None and self._step():
                pass
        except h11.RemoteProtocolError as exc:
            self._fail(exc.error_status_hint, str(exc))

    def _step(self) -> bool:
        """Handle one h11 event; False when more bytes are needed or the connection ended."""
        event = self._conn.next_event()
        if isinstance(event, h11.Request):
            self._request, self._body = event, bytearray()
            if _content_length(event) > self._max_body:
                self._fail(413, "Request body too large")
                return False
        elif isinstance(event, h11.Data):
            self._body += event.data
            if len(self._body) > self._max_body:
                self._fail(413, "Request body too large")
                return False
        elif isinstance(event, h11.EndOfMessage):
            self._respond()
            return self._next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            self._close()
            return False
        else:  # NEED_DATA or PAUSED
            return False
        return True

    def _respond(self) -> None:
        request = self._request
        assert request is not None
        if request.method == b"GET" and request.target.split(b"?", 1)[0] == METRICS_PATH:
            body, content_type = self._metrics()
            response = Response(200, body, [("Content-Type", content_type)])
        else:
            response = self._dispatch(request)
        self._send(response)

    def _dispatch(self, request: h11.Request) -> Response:
        target = request.target.decode("latin-1")
        try:
            return self._handle(Request(request.method.decode("ascii"), target, bytes(self._body)))
        except Exception:  # the connection boundary: a bug answers 500, the listener lives on
            logger.exception("admin request %s %s failed", request.method, target)
            return wire.error(ControlError("Internal server error"))

    def _send(self, response: Response) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (b"Server", SERVER_NAME),
            (b"Content-Length", str(len(response.body)).encode()),
            *((name.encode(), value.encode("latin-1")) for name, value in response.headers),
        ]
        self._emit(h11.Response(status_code=response.status, headers=headers), response.body)

    def _emit(self, head: h11.Response, body: bytes) -> None:
        events: list[h11.Event] = (
            [head, h11.Data(data=body), h11.EndOfMessage()] if body else [head, h11.EndOfMessage()]
        )
        data = b"".join(self._conn.send(event) or b"" for event in events)
        if self._transport is not None:
            self._transport.write(data)

    def _next_cycle(self) -> bool:
        if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
            self._close()
            return False
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            return True
        return False

    def _fail(self, status: int, message: str) -> None:
        """Answer an HTTP-level failure if a response can still start, then close."""
        logger.debug("admin connection failed: %s %s", status, message)
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = message.encode()
            headers = [("Content-Length", str(len(body))), ("Connection", "close"), ("Content-Type", "text/plain")]
            self._emit(h11.Response(status_code=status, headers=headers), body)
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._open.discard(self)

    def abort(self) -> None:
        """Drop the connection now (server shutdown)."""
        if self._transport is not None:
            self._transport.abort()


def _content_length(request: h11.Request) -> int:
    for name, value in request.headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0


class AdminServer:
    """The admin listener and its open connections, closed together (keep-alive clients linger)."""

    def __init__(self, server: asyncio.Server, connections: set[AdminProtocol]) -> None:
        self.server = server
        self._connections = connections

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.server.close()
        for connection in list(self._connections):
            connection.abort()
        await self.server.wait_closed()


async def start_admin_server(
    handle: Handle,
    host: str,
    port: int,
    max_body: int = limits.MAX_ADMIN_BODY_BYTES,
    metrics: Exposition = exposition,
    ssl_context: ssl.SSLContext | None = None,
) -> AdminServer:
    """Listen on ``host:port`` (0 picks a free port; read it from ``.port``); HTTPS with ``ssl_context``."""
    loop = asyncio.get_running_loop()
    connections: set[AdminProtocol] = set()
    server = await loop.create_server(
        lambda: AdminProtocol(handle, max_body, connections, metrics), host, port, ssl=ssl_context
    )
    return AdminServer(server, connections)


async def start_control_plane(
    config: Config, catalog: MemoryCatalog, ssl_context: ssl.SSLContext | None = None
) -> tuple[ControlPlane, AdminServer]:
    """Open the control plane of ``config`` and serve it on ``config.admin_host:admin_port``.

    What ``framegate serve`` calls once: the catalog is current before this returns.
    """
    plane = open_control_plane(config, catalog)
    try:
        server = await start_admin_server(plane.handle, config.admin_host, config.admin_port, ssl_context=ssl_context)
    except BaseException:
        plane.close()
        raise
    return plane, server
