"""The client leg: one ``asyncio.Protocol`` per client connection (no streams).

Layer 4. Life of a connection:

1. HANDSHAKE: bytes feed ``proxy.handshake.ServerHandshake`` under a deadline
   timer; bad requests get an HTTP answer (400/426/431), an unknown API or
   stage gets AWS's 403. ``$connect`` runs here: a MOCK status, then the
   ws:// upstream of ``$connect``/``$default`` is connected *before* the
   client gets its 101 (refused -> the backend's status, unreachable -> 502,
   timeout -> 504). Reading is paused meanwhile.
2. OPEN: frames go through ``proxy.codec``; each message goes through
   ``proxy.session.Session`` (or its fast path straight to one upstream) and
   the decision is acted on here. Pings are answered; idle and max-duration
   timers close with 1001.
3. CLOSING/CLOSED: close codes propagate both ways; a backend that vanishes
   gives the client 1011.

Back-pressure: a leg whose write buffer passes the high-water mark pauses
reading on the other leg (``FlowControl``); nothing is queued without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Final, cast

from proxy import gateway_frames, ids
from proxy.codec import FrameDecoder, FrameEncoder
from proxy.config import Config
from proxy.control.catalog import Catalog
from proxy.control.model import Target
from proxy.errors import HandshakeError, IntegrationError, NotFoundException, ProtocolError
from proxy.frames import CloseCode, Opcode, parse_close
from proxy.handshake import (
    ClientHandshake,
    ServerHandshake,
    UpgradeRequest,
    join_query,
    message_body,
    parse_ws_uri,
    reject,
)
from proxy.limits import CLOSE_TIMEOUT_S, INTEGRATION_TIMEOUT_MS, MS_PER_S
from proxy.server.flow import FlowControl
from proxy.server.upstream import Upstream, open_upstream
from proxy.session import Close, Forward, Peer, Reply, Session

logger = logging.getLogger(__name__)
TRACE: Final = 5
"""Per-message log level, checked once per connection (picows style)."""

FORBIDDEN_BODY: Final = message_body("Forbidden")
INTERNAL_BODY: Final = message_body("Internal server error")
STATUS_FORBIDDEN: Final = 403
STATUS_INTERNAL: Final = 500
STATUS_BAD_GATEWAY: Final = 502
STATUS_GATEWAY_TIMEOUT: Final = 504
REASON_IDLE: Final = "idle timeout"
REASON_MAX_DURATION: Final = "maximum connection duration reached"
REASON_SHUTDOWN: Final = "server shutting down"
REASON_BACKEND_LOST: Final = "backend connection lost"
REASON_CLIENT_GONE: Final = "client disconnected"
PAUSE_CONNECTING: Final = "connecting"
PAUSE_PEER: Final = "peer-buffer:"


class State(Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Gateway:
    """What every client connection shares: config, catalog, live connection set.

    Args:
        config: static limits and timeouts.
        catalog: the live (Host, path) -> Target index.
        clock_ms: wall-clock epoch milliseconds for ``$context``.
    """

    def __init__(self, config: Config, catalog: Catalog, clock_ms: Callable[[], int] | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.clock_ms = clock_ms or _epoch_ms
        self.connections: set[ClientConnection] = set()
        self.idle: asyncio.Event = asyncio.Event()
        self.idle.set()

    def protocol(self) -> ClientConnection:
        """The protocol factory for ``loop.create_server``."""
        return ClientConnection(self)

    def track(self, connection: ClientConnection, live: bool) -> None:
        if live:
            self.connections.add(connection)
            self.idle.clear()
        else:
            self.connections.discard(connection)
            if not self.connections:
                self.idle.set()

    def shutdown(self) -> None:
        """SIGTERM/SIGINT: close every connection with 1001."""
        for connection in list(self.connections):
            connection.shutdown()


def _epoch_ms() -> int:
    return int(time.time() * MS_PER_S)


class ClientConnection(asyncio.Protocol):
    """One client: handshake, relay, close (see the module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.loop = asyncio.get_running_loop()
        self.connection_id = ids.connection_id()
        self.state = State.HANDSHAKE
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.session: Session | None = None
        self.upstreams: dict[str, Upstream] = {}
        self._connecting: dict[str, list[tuple[int, bytes]]] = {}
        self._handshake: ServerHandshake | None = ServerHandshake(self.config.max_request_head)
        self._request: UpgradeRequest | None = None
        self._decoder = FrameDecoder(
            server_side=True, max_frame=self.config.max_frame, max_message=self.config.max_message
        )
        self._encoder = FrameEncoder(client_side=False, max_frame=self.config.max_frame)
        self._timers: list[asyncio.TimerHandle] = []
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._fast: Upstream | None = None
        self._fast_key: str | None = None
        self._trace = logger.isEnabledFor(TRACE)

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        self.flow = FlowControl(transport)
        transport.set_write_buffer_limits(self.config.write_high_water, self.config.write_low_water)
        self.gateway.track(self, True)
        self._handshake_timer = self.loop.call_later(self.config.handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        try:
            if self.state is State.OPEN or self.state is State.CLOSING:
                self._receive_frames(data)
            elif self.state is State.HANDSHAKE:
                self._receive_handshake(data)
        except Exception:
            # The one catch-all, at the connection boundary.
            logger.exception("connection %s failed", self.connection_id)
            self._fail_internal()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.state in (State.OPEN, State.CLOSING)
        self.state = State.CLOSED
        for timer in self._timers:
            timer.cancel()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        for upstream in self.upstreams.values():
            upstream.close(CloseCode.GOING_AWAY, REASON_CLIENT_GONE)
        self.upstreams.clear()
        self.gateway.track(self, False)
        if was_open:
            self._on_disconnected()

    def pause_writing(self) -> None:
        for upstream in self.upstreams.values():
            upstream.pause_reading(True)

    def resume_writing(self) -> None:
        for upstream in self.upstreams.values():
            upstream.pause_reading(False)

    # --- handshake ----------------------------------------------------------------------

    def _handshake_expired(self) -> None:
        if self.state is State.HANDSHAKE and self.transport is not None:
            logger.info("handshake deadline passed connectionId=%s", self.connection_id)
            self.transport.abort()

    def _receive_handshake(self, data: bytes) -> None:
        assert self._handshake is not None
        try:
            request = self._handshake.receive_data(data)
        except HandshakeError as exc:
            self._refuse(exc.status_hint, message_body(str(exc)), str(exc))
            return
        if request is None:
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._request = request
        try:
            target = self.gateway.catalog.resolve(request.host, request.path)
        except NotFoundException as exc:
            self._refuse(STATUS_FORBIDDEN, FORBIDDEN_BODY, str(exc))
            return
        self._connect(target, request)

    def _connect(self, target: Target, request: UpgradeRequest) -> None:
        """Run ``$connect``: MOCK status, then the upstream, then the 101."""
        session = self.session = Session(target, self.connection_id, self._peer(request), self.gateway.clock_ms)
        try:
            mock = session.connect_mock()
            upstream = session.connect_upstream()
        except IntegrationError as exc:
            self._refuse(STATUS_INTERNAL, INTERNAL_BODY, str(exc))
            return
        if mock is not None and not 200 <= mock.status < 300:
            self._refuse(mock.status, FORBIDDEN_BODY, f"$connect MOCK returned {mock.status}")
            return
        if upstream is None:
            self._accept(None, request.trailing)
            return
        self.state = State.CONNECTING
        assert self.flow is not None
        self.flow.pause(PAUSE_CONNECTING)
        key, uri = upstream
        self.loop.create_task(self._connect_upstream(key, uri, request))

    async def _connect_upstream(self, key: str, uri: str, request: UpgradeRequest) -> None:
        status, upstream, subprotocol = await self._open(key, uri)
        if self.state is not State.CONNECTING:
            if upstream is not None:
                upstream.abort()
            return
        if upstream is None:
            self._refuse(status, message_body(_status_message(status)), f"upstream {uri} answered {status}")
            return
        if subprotocol is not None and subprotocol not in request.subprotocols:
            upstream.abort()
            self._refuse(STATUS_BAD_GATEWAY, message_body("Bad Gateway"), f"backend chose subprotocol {subprotocol}")
            return
        self._add_upstream(upstream)
        self._accept(subprotocol, request.trailing)
        assert self.flow is not None
        self.flow.resume(PAUSE_CONNECTING)

    async def _open(self, key: str, uri: str) -> tuple[int, Upstream | None, str | None]:
        """Open an upstream: ``(101, upstream, subprotocol)`` or ``(status, None, None)``."""
        assert self.session is not None and self._request is not None
        request = self._request
        target = self.session.target
        timeout_s = _integration_timeout_s(self.session, key)
        try:
            ws_uri = parse_ws_uri(uri)
            handshake = ClientHandshake(
                ws_uri.host_header,
                join_query(ws_uri.target, request.query),
                request.subprotocols,
                self._context_headers(target, request),
                self.config.max_request_head,
            )
            upstream, reply = await open_upstream(key, ws_uri, handshake, self.config, timeout_s)
        except TimeoutError:
            self._on_upstream(uri, STATUS_GATEWAY_TIMEOUT)
            return STATUS_GATEWAY_TIMEOUT, None, None
        except (OSError, ValueError, HandshakeError) as exc:
            logger.info("upstream %s unreachable connectionId=%s: %s", uri, self.connection_id, exc)
            self._on_upstream(uri, STATUS_BAD_GATEWAY)
            return STATUS_BAD_GATEWAY, None, None
        self._on_upstream(uri, reply.status)
        if reply.status != 101:
            return reply.status, None, None
        return reply.status, upstream, reply.subprotocol

    def _context_headers(self, target: Target, request: UpgradeRequest) -> list[tuple[str, str]]:
        client_ip = self._peer(request).source_ip
        forwarded = request.header(b"x-forwarded-for")
        return [
            ("X-Framegate-Connection-Id", self.connection_id),
            ("X-Framegate-Api-Id", target.api.api_id),
            ("X-Framegate-Stage", target.stage.stage_name),
            ("X-Forwarded-For", f"{forwarded}, {client_ip}" if forwarded else client_ip),
        ]

    def _peer(self, request: UpgradeRequest) -> Peer:
        assert self.transport is not None
        peername = self.transport.get_extra_info("peername")
        source_ip = str(peername[0]) if peername else ""
        return Peer(source_ip, request.header(b"user-agent") or "")

    def _accept(self, subprotocol: str | None, trailing: bytes) -> None:
        assert self.transport is not None and self._handshake is not None and self.session is not None
        self.transport.write(self._handshake.accept(subprotocol))
        self._handshake = None
        self.state = State.OPEN
        self._last_data = self.loop.time()
        self._timers.append(self.loop.call_later(self.config.idle_timeout, self._check_idle))
        self._timers.append(self.loop.call_later(self.config.max_connection_duration, self._max_duration))
        fast = self.session.fast_forward
        if fast is not None and fast[0] in self.upstreams:
            self._fast_key = fast[0]
            self._fast = self.upstreams[fast[0]]
        self._on_accepted()
        for upstream in list(self.upstreams.values()):
            upstream.start(self)
        if trailing:
            self._receive_frames(trailing)

    def _refuse(self, status: int, body: str, reason: str) -> None:
        """Answer the upgrade with an HTTP error and close."""
        self._on_refused(status, reason)
        self.state = State.CLOSED
        if self.transport is not None:
            self.transport.write(reject(status, body, [("X-Framegate-Error", _header_safe(reason))]))
            self.transport.close()

    # --- frames -----------------------------------------------------------------------

    def _receive_frames(self, data: bytes) -> None:
        try:
            events = self._decoder.feed(data)
        except ProtocolError as exc:
            self._handle_events(exc.events)
            self.close(exc.close_code, str(exc))
            return
        self._handle_events(events)

    def _handle_events(self, events: list[tuple[int, bytes]]) -> None:
        fast = self._fast
        for opcode, payload in events:
            if opcode == Opcode.TEXT or opcode == Opcode.BINARY:
                if self.state is not State.OPEN:
                    continue
                self._last_data = self.loop.time()
                if fast is not None:
                    fast.send(opcode, payload)
                else:
                    self._message(opcode, payload)
            elif opcode == Opcode.PING:
                self._write(self._encoder.pong(payload))
            elif opcode == Opcode.CLOSE:
                self._client_closed(payload)

    def _message(self, opcode: int, payload: bytes) -> None:
        assert self.session is not None
        if self._trace:
            logger.log(TRACE, "message in connectionId=%s bytes=%d", self.connection_id, len(payload))
        decision = self.session.receive_message(opcode, payload)
        if isinstance(decision, Forward):
            self._forward(decision)
        elif isinstance(decision, Reply):
            self.send_text(decision.text)
        elif isinstance(decision, Close):
            self.close(decision.code, decision.reason)

    def _forward(self, decision: Forward) -> None:
        upstream = self.upstreams.get(decision.integration_id)
        if upstream is not None:
            upstream.send(decision.opcode, decision.payload)
            return
        pending = self._connecting.get(decision.integration_id)
        if pending is not None:
            pending.append((decision.opcode, decision.payload))
            return
        # First use of this integration: connect it, holding the client's reading meanwhile.
        self._connecting[decision.integration_id] = [(decision.opcode, decision.payload)]
        assert self.flow is not None
        self.flow.pause(PAUSE_CONNECTING + decision.integration_id)
        self.loop.create_task(self._connect_route_upstream(decision.integration_id, decision.uri))

    async def _connect_route_upstream(self, key: str, uri: str) -> None:
        _, upstream, _ = await self._open(key, uri)
        pending = self._connecting.pop(key, [])
        if self.state is not State.OPEN:
            if upstream is not None:
                upstream.abort()
            return
        assert self.flow is not None and self.session is not None
        if upstream is None:
            for _ in pending:
                self.send_text(gateway_frames.internal_server_error(self.connection_id, ids.request_id()))
        else:
            self._add_upstream(upstream)
            upstream.start(self)
            for opcode, payload in pending:
                upstream.send(opcode, payload)
        self.flow.resume(PAUSE_CONNECTING + key)

    def _add_upstream(self, upstream: Upstream) -> None:
        self.upstreams[upstream.key] = upstream

    def _client_closed(self, payload: bytes) -> None:
        code, reason = parse_close(payload)
        if self.state is State.OPEN:
            # Client-initiated: echo its close, pass it on to the backends.
            self._write(self._encoder.close(None if code == CloseCode.NO_STATUS else code, reason))
            upstream_code = CloseCode.NORMAL if code == CloseCode.NO_STATUS else code
            for upstream in self.upstreams.values():
                upstream.close(upstream_code, reason)
            self.upstreams.clear()
            self._on_closed(code)
        self.state = State.CLOSING
        if self.transport is not None:
            self.transport.close()

    # --- upstream events (UpstreamOwner) ------------------------------------------------

    def upstream_message(self, upstream: Upstream, opcode: int, payload: bytes) -> None:
        if self.state is not State.OPEN:
            return
        self._last_data = self.loop.time()
        self._write(self._encoder.message(opcode, payload))

    def upstream_closed(self, upstream: Upstream, code: int, reason: str) -> None:
        self.upstreams.pop(upstream.key, None)
        if upstream is self._fast:
            self._fast = None
        if code == CloseCode.ABNORMAL:
            code, reason = CloseCode.INTERNAL_ERROR, REASON_BACKEND_LOST
        elif code == CloseCode.NO_STATUS:
            code = CloseCode.NORMAL
        self.close(code, reason)

    def upstream_pause_writing(self, upstream: Upstream) -> None:
        if self.flow is not None:
            self.flow.pause(PAUSE_PEER + upstream.key)

    def upstream_resume_writing(self, upstream: Upstream) -> None:
        if self.flow is not None:
            self.flow.resume(PAUSE_PEER + upstream.key)

    # --- sending and closing -----------------------------------------------------------

    def send_text(self, text: str) -> None:
        """One text message to the client (MOCK reply, gateway error frame)."""
        if self.state is State.OPEN:
            self._write(self._encoder.message(Opcode.TEXT, text.encode("utf-8")))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self, code: int, reason: str = "") -> None:
        """Gateway-initiated close of the client (and every upstream) with ``code``."""
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        self._write(self._encoder.close(code, reason))
        for upstream in self.upstreams.values():
            upstream.close(code, reason)
        self.upstreams.clear()
        self._fast = None
        self._on_closed(code)
        if self.transport is not None:
            self._timers.append(self.loop.call_later(CLOSE_TIMEOUT_S, self.transport.abort))

    def shutdown(self) -> None:
        """Drain: close an open connection with 1001, drop one still in its handshake."""
        if self.state is State.OPEN:
            self.close(CloseCode.GOING_AWAY, REASON_SHUTDOWN)
        elif self.transport is not None and self.state is not State.CLOSING:
            self.transport.abort()

    def _fail_internal(self) -> None:
        if self.state is State.OPEN:
            self.close(CloseCode.INTERNAL_ERROR, "internal error")
        elif self.state in (State.HANDSHAKE, State.CONNECTING):
            self._refuse(STATUS_INTERNAL, INTERNAL_BODY, "internal error")
        elif self.transport is not None:
            self.transport.abort()

    # --- timers -------------------------------------------------------------------------

    def _check_idle(self) -> None:
        if self.state is not State.OPEN:
            return
        remaining = self._last_data + self.config.idle_timeout - self.loop.time()
        if remaining > 0:
            self._timers.append(self.loop.call_later(remaining, self._check_idle))
            return
        self.close(CloseCode.GOING_AWAY, REASON_IDLE)

    def _max_duration(self) -> None:
        self.close(CloseCode.GOING_AWAY, REASON_MAX_DURATION)

    # --- event hooks: the one place per event for metrics/logs (observe) --------------

    def _on_accepted(self) -> None:
        assert self.session is not None
        target = self.session.target
        logger.info(
            "connected connectionId=%s apiId=%s stage=%s",
            self.connection_id,
            target.api.api_id,
            target.stage.stage_name,
        )

    def _on_refused(self, status: int, reason: str) -> None:
        logger.info("connect refused connectionId=%s status=%d reason=%s", self.connection_id, status, reason)

    def _on_upstream(self, uri: str, status: int) -> None:
        logger.debug("upstream %s answered %d connectionId=%s", uri, status, self.connection_id)

    def _on_closed(self, code: int) -> None:
        logger.info("closing connectionId=%s code=%d", self.connection_id, code)

    def _on_disconnected(self) -> None:
        if self.session is not None:
            self.session.disconnect()
        logger.debug("disconnected connectionId=%s", self.connection_id)


def _integration_timeout_s(session: Session, integration_id: str) -> float:
    """The integration's ``timeoutInMillis`` (AWS default 29 s) bounds connect + upgrade."""
    integration = session.target.snapshot.integrations.get(integration_id)
    timeout_ms = integration.timeout_in_millis if integration is not None else INTEGRATION_TIMEOUT_MS
    return timeout_ms / MS_PER_S


def _status_message(status: int) -> str:
    return {STATUS_BAD_GATEWAY: "Bad Gateway", STATUS_GATEWAY_TIMEOUT: "Gateway Timeout"}.get(status, "Forbidden")


def _header_safe(text: str) -> str:
    """One header line: printable ASCII only, no CR/LF."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)
