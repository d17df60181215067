"""The data plane: one ``asyncio.Protocol`` per client WebSocket connection.

Layer 4, the only place client sockets live. Per connection (the states and
the one table of their transitions are below, ``_TRANSITIONS``):

1. HANDSHAKE: the request head is parsed by ``proxy.handshake`` under a
   deadline and a size cap.
2. CONNECTING: the catalog resolves (Host, path) to a stage and the
   deployment it points at; ``$connect`` is throttled and integrated; a
   ws:// ``$connect`` or ``$default`` upstream is opened *before* answering,
   so a backend that refuses or is down gives the client an HTTP error
   instead of a 101. This is the state that waits for ``$connect``'s outcome.
3. OPEN: frames go through ``proxy.codec`` (AWS caps enforced there); each
   message is routed, throttled and integrated by ``proxy.session``, whose
   decision ``_act`` carries out; upstream messages come back re-fragmented.
   Back-pressure pauses the other side, and the client itself while its own
   write buffer is full. The fast path: when every message goes unread to one
   ws:// upstream and nothing logs per message (``ConnectionObserver.bulk_counters``), a read's
   messages are relayed, throttled and counted in one ``RelayPump.feed``
   call; backend reads always reach the client that way (``upstream_pump``).
4. CLOSING/CLOSED: close codes propagate both ways; ``$disconnect`` runs.

A request head for the @connections API (``proxy.handshake.ManagementRequest``)
is handed, with its transport, to ``proxy.server.management``, which finds
open connections in ``Gateway.open_connections`` and calls ``push``,
``describe`` and ``close`` on them. With ``--redis`` or ``--workers N`` the
gateway also has a ``registry``, told which connections open and close, so
that calls arriving at other processes reach them (a lone process has none).

Time comes from the gateway's one clock (``Gateway.clock``: the event loop,
or a test's fake clock), and every deadline of a connection waits in the
gateway's shared ``Deadlines``. Observability is one ``Observer`` call per
event (``proxy.server.observer``), after throttling
(``proxy.throttle.Throttler``) has decided.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Final, cast

from proxy.codec import FrameDecoder, FrameEncoder, RelayPump, monotonic
from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.control.context import MESSAGE_EVENT, RequestContext
from proxy.control.model import DEFAULT, Stage
from proxy.errors import HandshakeError, IntegrationError, NotFoundException, ProtocolError
from proxy.frames import CloseCode, Event, Opcode, parse_close
from proxy.handshake import ClientHandshake, ManagementRequest, ServerHandshake, SharedHeaders, UpgradeRequest
from proxy.ids import pooled_id
from proxy.integrations.runner import IntegrationRunner
from proxy.limits import CLOSE_TIMEOUT_S, MAX_PUSH_BUFFER_BYTES, MS_PER_S, RESOLVED_TARGET_CACHE
from proxy.server.deadlines import Clock, Deadlines, Guard
from proxy.server.flow import FlowControl
from proxy.server.invocations import Invocations
from proxy.server.management import ConnectionInfo, Directory, ManagementProtocol
from proxy.server.observer import THROTTLED_CONNECT_MESSAGE, ConnectionObserver, Observer
from proxy.server.refusal import Refusal, refuse
from proxy.server.upstream import Upstream, open_upstream
from proxy.session import Client, Close, Decision, Forward, Invoke, LazyContext, Reply, Session
from proxy.throttle import Throttler

logger = logging.getLogger(__name__)

# --- the connection's states (C ints in gateway.pxd) ----------------------------------

#: Reading the upgrade request's head, under the handshake deadline and the head-size cap.
_HANDSHAKE: Final = 0
#: The request is complete: awaiting ``$connect``'s outcome before the 101 (throttling,
#: the ``$connect`` integration, the upgrade of the ws:// upstream opened for it). Client
#: bytes that come now are kept for after the 101, and reading stops. An integration that
#: answers later (an HTTP or Lambda ``$connect``) waits here and ends in ``_accept`` or
#: ``_refuse``.
_CONNECTING: Final = 1
#: The 101 is sent: messages flow both ways.
_OPEN: Final = 2
#: A close frame or an HTTP refusal is sent (or the client's close answered): waiting, at
#: most the close timeout, for the transport to end. Input is only read for the client's
#: answer to our close.
_CLOSING: Final = 3
#: The transport is gone; ``$disconnect`` ran if the connection was open (an integration
#: that answers later is started from ``connection_lost`` and not waited for).
_CLOSED: Final = 4

_STATE_NAMES: Final = ("HANDSHAKE", "CONNECTING", "OPEN", "CLOSING", "CLOSED")

# --- what moves a connection between states --------------------------------------------

#: The upgrade request is complete.
_REQUESTED: Final = 0
#: The 101 is written.
_ACCEPTED: Final = 1
#: An HTTP error is written instead of a 101.
_REFUSED: Final = 2
#: The gateway wrote its close frame.
_CLOSE_SENT: Final = 3
#: The client's close frame arrived (and was answered).
_CLOSE_RECEIVED: Final = 4
#: The transport ended.
_LOST: Final = 5

_EVENT_NAMES: Final = ("REQUESTED", "ACCEPTED", "REFUSED", "CLOSE_SENT", "CLOSE_RECEIVED", "LOST")

_TRANSITIONS: Final[dict[tuple[int, int], int]] = {
    (_HANDSHAKE, _REQUESTED): _CONNECTING,
    (_HANDSHAKE, _REFUSED): _CLOSING,
    (_CONNECTING, _ACCEPTED): _OPEN,
    (_CONNECTING, _REFUSED): _CLOSING,
    (_OPEN, _CLOSE_SENT): _CLOSING,
    (_OPEN, _CLOSE_RECEIVED): _CLOSING,
    (_HANDSHAKE, _LOST): _CLOSED,
    (_CONNECTING, _LOST): _CLOSED,
    (_OPEN, _LOST): _CLOSED,
    (_CLOSING, _LOST): _CLOSED,
}
"""(state, event) -> the next state: every change of ``ClientConnection._state`` is one of these."""

_NEXT: Final = tuple(
    _TRANSITIONS.get((state, event), -1) for state in range(len(_STATE_NAMES)) for event in range(len(_EVENT_NAMES))
)
"""``_TRANSITIONS`` as a flat table indexed by ``state * len(_EVENT_NAMES) + event`` (-1: not allowed).

The same table, read per connection without building a key tuple and hashing it."""
_EVENTS: Final = len(_EVENT_NAMES)

# Enum members read per connection, as module constants: gateway.pxd types them C ints,
# so compiled code skips EnumType's attribute hook.
_TEXT: Final = Opcode.TEXT
_BINARY: Final = Opcode.BINARY
_PING: Final = Opcode.PING
_CLOSE: Final = Opcode.CLOSE
_NORMAL: Final = CloseCode.NORMAL
_GOING_AWAY: Final = CloseCode.GOING_AWAY
_NO_STATUS: Final = CloseCode.NO_STATUS
_ABNORMAL: Final = CloseCode.ABNORMAL
_INTERNAL_ERROR: Final = CloseCode.INTERNAL_ERROR
_OK: Final = HTTPStatus.OK
_MULTIPLE_CHOICES: Final = HTTPStatus.MULTIPLE_CHOICES

_FORBIDDEN: Final = "Forbidden"
_INTERNAL: Final = "Internal server error"
_UNSENDABLE = frozenset({_NO_STATUS, _ABNORMAL})


class ConnectionStateError(RuntimeError):
    """A bug: the connection was asked for a state change its transition table does not allow.

    The gateway's own mistake, never the client's (h11's ``LocalProtocolError``):
    the catch-all at the connection boundary logs it and closes with 1011.
    """


def epoch_ms() -> int:
    """Wall-clock milliseconds, for ``$context`` times (never for deadlines)."""
    return time.time_ns() // 1_000_000


def _forwarded_for(request: UpgradeRequest, source_ip: str) -> str:
    previous = request.header("x-forwarded-for")
    return f"{previous}, {source_ip}" if previous else source_ip


@functools.lru_cache(maxsize=RESOLVED_TARGET_CACHE)
def _context_headers(api_id: str, stage_name: str, domain_name: str) -> SharedHeaders:
    """The upstream upgrade's headers that every connection to one stage through one Host sends alike.

    Vetted and rendered once, not per connection; as many as the catalog
    keeps resolved targets (the Host is the client's).
    """
    return SharedHeaders.of(
        (
            ("X-Framegate-Api-Id", api_id),
            ("X-Framegate-Stage", stage_name),
            # The Host the client used: with the stage, the backend's @connections endpoint.
            ("X-Forwarded-Host", domain_name),
        )
    )


class Gateway:
    """What all client connections share: the loop, the clock, settings, catalog, throttler, observer, encoders.

    Encoders keep no per-connection state, so one per role serves everyone.
    Built inside the running loop, which it keeps: a connection asks the
    gateway, not ``asyncio.get_running_loop()`` (a ``getpid`` syscall each).
    Compiled as an extension type too (``gateway.pxd``): a connection reads
    these fields as C struct members.

    Args:
        clock: the time source and timer of every connection deadline and
            activity stamp; the running loop by default. Tests pass a fake
            clock to move time by hand.
        runner: runs HTTP and Lambda integrations and authorizers
            (``proxy.server.invocations``); one from ``config`` by default.
            Whoever made the gateway closes it (``IntegrationRunner.close``)
            after ``drain``.
        credentials: ``--credentials`` (secret key by access key id), which
            verify ``AWS_IAM`` upgrades and sign @connections API calls; None
            refuses every ``AWS_IAM`` upgrade.
        registry: ``--redis`` or ``--workers N``: told of every connection
            that opens (past its 101) and closes, and routes @connections
            calls for the connections of other processes; None: this
            process's only.
    """

    def __init__(
        self,
        config: Config,
        catalog: MemoryCatalog,
        observer: Observer,
        throttler: Throttler,
        clock: Clock | None = None,
        runner: IntegrationRunner | None = None,
        credentials: Mapping[str, str] | None = None,
        registry: Directory | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.catalog = catalog
        self.observer = observer
        self.throttler = throttler
        self.clock: Clock = clock if clock is not None else self.loop
        # Pumps stamp each read. The loop's clock is CLOCK_MONOTONIC (uvloop's and
        # asyncio's alike), which the codec's ``monotonic`` reads in C; any other
        # clock is read through its ``time``.
        self.activity_clock: Callable[[], float] = monotonic if clock is None else clock.time
        self.server_encoder = FrameEncoder(client_side=False, max_frame=config.max_frame)
        self.client_encoder = FrameEncoder(client_side=True, max_frame=config.max_frame)
        observer.metrics.frames_fragmented.add_source(lambda: self.server_encoder.fragmented)
        self.deadlines = Deadlines(self.clock)
        self.connections: set[ClientConnection] = set()
        self.open_connections: dict[str, ClientConnection] = {}
        """Connections past their 101 by id, until their transport ends: what the @connections API reaches."""
        self._max_connections = config.max_connections
        self.credentials = credentials
        self.registry = registry
        self.callers: set[ManagementProtocol] = set()
        """Open connections of @connections API callers (closed at ``drain``)."""
        self._idle: asyncio.Event | None = None
        self.runner = runner if runner is not None else IntegrationRunner.from_config(config)
        self.background: set[asyncio.Task[None]] = set()
        """``$disconnect`` integrations still running after their connection ended (``drain`` waits)."""

    @property
    def protocol(self) -> Callable[[], asyncio.BaseProtocol]:
        """The protocol factory for ``create_server``: a new ``ClientConnection`` per call.

        ``ClientConnection`` is an ``asyncio.Protocol`` by shape only: the cast
        says so once, here, rather than a ``typing.cast`` call per connection.
        """
        return cast(Callable[[], asyncio.BaseProtocol], self._connection)

    def _connection(self) -> ClientConnection | Refusal:
        cap = self._max_connections
        if cap is not None and len(self.connections) + len(self.callers) >= cap:
            return refuse(cap)  # 503 and close: see proxy.server.refusal
        return ClientConnection(self)

    def forget(self, connection: ClientConnection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout_s: float) -> None:
        """Close every connection with 1001 and wait for them, then for their ``$disconnect`` calls.

        At most ``timeout_s`` in all: connections still open then are aborted,
        ``$disconnect`` calls still running are cancelled.
        """
        for caller in list(self.callers):
            caller.close()
        loop = self.loop
        ends = loop.time() + timeout_s
        if self.connections:
            self._idle = asyncio.Event()
            for connection in list(self.connections):
                connection.shut_down()
            try:
                async with asyncio.timeout_at(ends):
                    await self._idle.wait()
            except TimeoutError:
                for connection in list(self.connections):
                    connection.abort()
        if self.background:
            _, late = await asyncio.wait(set(self.background), timeout=max(0.0, ends - loop.time()))
            for task in late:
                task.cancel()


class ClientConnection:
    """One client: handshake, relay, close (see the module docstring).

    An ``asyncio.Protocol`` by shape, not by base class: setup.py compiles this
    module as it is into an extension type (``gateway.pxd``), which cannot
    derive from a Python class; uvloop only calls the methods.

    Where things happen:

    - ``_transition``: every state change, checked against ``_TRANSITIONS``.
    - ``_feed``: every byte from the client, from a read or kept for after the 101.
    - ``_act``: every decision of the session about a message, one branch per kind.
    - ``deadline_passed``: every deadline, one at a time (``_guard``), per state.
    """

    __slots__ = (
        "_catalog",
        "_clock",
        "_close_code",
        "_config",
        "_connect_context",
        "_deadlines",
        "_decoder",
        "_early",
        "_flow",
        "_forwarded_for",
        "_gateway",
        "_guard",
        "_handshake",
        "_invocations",
        "_last_activity",
        "_loop",
        "_observer",
        "_opened_at",
        "_opening",
        "_pending",
        "_pong",
        "_pump",
        "_pump_generation",
        "_session",
        "_source_ip",
        "_stage",
        "_stage_generation",
        "_state",
        "_subprotocols",
        "_transport",
        "_upstreams",
        "_writing_paused",
    )

    def __init__(self, gateway: Gateway) -> None:
        # Shared, from the gateway.
        self._gateway = gateway
        self._catalog = gateway.catalog
        self._config = gateway.config
        self._loop = gateway.loop
        self._clock = gateway.clock
        self._deadlines = gateway.deadlines
        # State and the one deadline.
        self._state = _HANDSHAKE
        self._guard: Guard | None = None
        """Where the connection's one deadline waits (see ``deadline_passed``)."""
        self._close_code: int = _ABNORMAL
        # The client's transport.
        self._transport: asyncio.Transport | None = None
        self._flow: FlowControl | None = None
        self._writing_paused = False
        self._pong: bytes | None = None
        """The latest ping's payload, not answered yet (a pong may answer only the latest ping)."""
        # The upgrade.
        self._handshake: ServerHandshake | None = ServerHandshake(self._config.max_request_head)
        self._early = b""
        """Client bytes that came before the 101 was written (fed after it)."""
        self._source_ip = "-"
        self._forwarded_for = "-"
        self._subprotocols: tuple[str, ...] = ()
        self._session: Session | None = None
        self._connect_context: LazyContext | None = None
        # Messages.
        self._decoder: FrameDecoder | None = None
        self._stage: Stage | None = None
        self._stage_generation = -1
        self._observer: ConnectionObserver | None = None
        self._pump: RelayPump | None = None
        """Set while reads take the fast path (only when OPEN: every way out goes through ``_close_upstreams``)."""
        self._pump_generation = -1
        self._last_activity = 0.0
        self._opened_at = 0.0
        # Upstreams.
        self._upstreams: dict[str, Upstream] = {}
        self._opening: dict[str, Upstream] = {}
        """Upstreams dialled, not yet answered (``upstream_accepted`` moves them to ``_upstreams``)."""
        self._pending: list[tuple[str, int, bytes]] = []
        """Messages for upstreams still opening: (url, opcode, payload)."""
        # HTTP and Lambda integrations: made on first use, so relaying connections never pay for it.
        self._invocations: Invocations | None = None

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        # Typed as the Transport uvloop's is by shape (no typing.cast call per connection).
        self._transport = transport
        self._flow = FlowControl(transport)
        config = self._config
        transport.set_write_buffer_limits(config.write_high_water, config.write_low_water)
        peer = transport.get_extra_info("peername")
        self._source_ip = str(peer[0]) if peer else "-"
        self._guard = self._deadlines.guard(self, config.handshake_timeout)
        self._gateway.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> bool | None:
        """The client half-closed: let the transport close (``asyncio.Protocol``'s default)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self._state == _OPEN or self._state == _CLOSING
        self._transition(_LOST)
        self._clear_guard()
        self._close_upstreams(_GOING_AWAY, "client went away")
        self._pending.clear()
        if self._invocations is not None:
            self._invocations.cancel()  # a client gone during $connect cancels its call
        session = self._session
        if was_open and session is not None and self._observer is not None:
            gateway = self._gateway
            if gateway.open_connections.pop(session.connection_id, None) is not None and gateway.registry is not None:
                gateway.registry.closed(session.connection_id)
            context = session.disconnect()
            reassembled = self._decoder.reassembled if self._decoder is not None else 0
            self._observer.closed(self._current_stage(), self._close_code, context, reassembled=reassembled)
            invoke = session.disconnect_invocation(context)
            if invoke is not None:
                self._invocations_for().disconnect(invoke)
        self._transport = None
        self._gateway.forget(self)

    def pause_writing(self) -> None:
        """The client's write buffer passed the high-water mark: stop everything that writes to it.

        The backends (their messages) and the client itself (pongs, error
        frames and replies it provokes): a client that does not read stops
        being read, so TCP pushes back on its sends.
        """
        self._writing_paused = True
        if self._flow is not None:
            self._flow.pause()
        for upstream in self._upstreams.values():
            if upstream.flow is not None:
                upstream.flow.pause()

    def resume_writing(self) -> None:
        self._writing_paused = False
        for upstream in self._upstreams.values():
            if upstream.flow is not None:
                upstream.flow.resume()
        if self._pong is not None and self._state == _OPEN:
            self._answer_ping()
        if self._flow is not None:
            self._flow.resume()

    @property
    def connection_id(self) -> str:
        return self._session.connection_id if self._session is not None else "-"

    # --- state and deadline -------------------------------------------------------------

    def _transition(self, event: int) -> None:
        """Move to the state ``_TRANSITIONS`` gives for ``event``.

        Raises:
            ConnectionStateError: the table has no such move from the current state.
        """
        state: int = _NEXT[self._state * _EVENTS + event]
        if state < 0:
            raise ConnectionStateError(f"{_EVENT_NAMES[event]} in state {_STATE_NAMES[self._state]}")
        self._state = state

    def deadline_passed(self) -> None:
        """The connection's deadline fell due; what it was depends on the state.

        - HANDSHAKE: the upgrade's (408).
        - CONNECTING: the upgrade's again; ``$connect``'s own timeouts govern
          now (the upstream's or the HTTP/Lambda integration's
          ``timeoutInMillis``, the authorizer's), so wait once more.
        - OPEN: a lifetime check (idle timeout, maximum duration); the next
          one is set for whichever comes first.
        - CLOSING: the client did not answer our close (or read our refusal) in time.
        """
        self._guard = None
        state = self._state
        if state == _HANDSHAKE:
            deadline = self._config.handshake_timeout
            self._refuse(HTTPStatus.REQUEST_TIMEOUT, f"upgrade not completed within {deadline:g} s")
        elif state == _CONNECTING:
            self._guard = self._deadlines.guard(self, self._config.handshake_timeout)
        elif state == _OPEN:
            self._lifetime()
        elif state == _CLOSING:
            self.abort()

    def _clear_guard(self) -> None:
        if self._guard is not None:
            self._guard.discard(self)
            self._guard = None

    def _lifetime(self) -> None:
        """Close at the idle timeout or the maximum duration, or wait for whichever comes first."""
        config = self._config
        now = self._clock.time()
        ends = self._opened_at + config.max_connection_duration
        if now >= ends:
            self.close(_GOING_AWAY, "Connection duration exceeded")
            return
        idle_ends = self._latest_activity() + config.idle_timeout
        if now >= idle_ends:
            self.close(_GOING_AWAY, "Going away: idle timeout")
        else:
            self._guard = self._deadlines.guard_at(self, min(idle_ends, ends))

    def _latest_activity(self) -> float:
        """When a frame last came from the client or a backend (pumps stamp their own reads)."""
        latest = self._last_activity
        if self._pump is not None:
            latest = max(latest, self._pump.last_activity)
        for upstream in self._upstreams.values():
            latest = max(latest, upstream.last_activity)
        return latest

    # --- input ------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Every byte from the client goes through here, in order: reads, and what waited for the 101."""
        try:
            pump = self._pump
            if pump is None or self._pump_generation != self._catalog.generation:
                state = self._state
                if state == _HANDSHAKE:
                    data = self._handshake_data(data)
                    if not data:
                        return
                    state = self._state  # the 101 went out at once: the bytes behind the request are frames
                if state == _OPEN:
                    self._refresh_lane()
                    pump = self._pump
                elif state == _CONNECTING:
                    # Frames before the 101 (RFC 6455 allows none, clients pipeline anyway): keep
                    # this read for after the 101 and stop reading until then.
                    assert self._flow is not None
                    if not self._early:
                        self._flow.pause()
                    self._early += data
                    return
                elif state == _CLOSING and self._decoder is not None:
                    self._frames(data)
                    return
                else:  # closing after a protocol error or a refusal: discarded until EOF or the close timeout
                    return
            if pump is not None:
                # The fast path: relayed, throttled and counted in one call per read.
                try:
                    events = pump.feed(data)
                except ProtocolError as exc:  # what came before the fault has gone
                    self._events(exc.events)
                    self._protocol_error(exc)
                    return
                if events:
                    self._events(events)  # control frames, and messages past the throttling budget
            else:
                self._frames(data)
        except Exception:
            # The one catch-all, at the connection boundary: never let a bug kill the server.
            logger.exception("internal error connectionId=%s", self.connection_id)
            self.close(_INTERNAL_ERROR, _INTERNAL)

    def _handshake_data(self, data: bytes) -> bytes:
        """Parse the request head; return the bytes behind it when the 101 went out at once."""
        assert self._handshake is not None
        try:
            request = self._handshake.receive_data(data)
        except HandshakeError as exc:
            self._refuse(exc.status_hint, str(exc), exc.headers)
            return b""
        if request is None:
            return b""
        if isinstance(request, ManagementRequest):
            self._hand_over(request)
            return b""
        self._start(request)
        return self._take_early() if self._state == _OPEN else b""

    def _hand_over(self, request: ManagementRequest) -> None:
        """A request for the @connections API: its transport goes to a ``ManagementProtocol``."""
        self._clear_guard()
        transport = self._transport
        self._transport = None
        self._handshake = None
        self._gateway.forget(self)
        if transport is not None:
            ManagementProtocol(self._gateway, transport, self._source_ip).start(request.data)

    def _take_early(self) -> bytes:
        early = self._early
        self._early = b""
        return early

    # --- $connect ---------------------------------------------------------------------

    def _start(self, request: UpgradeRequest) -> None:
        """The request is complete: resolve its stage, admit it, and run ``$connect``."""
        self._transition(_REQUESTED)
        gateway = self._gateway
        try:
            target = gateway.catalog.resolve(request.host, request.path)
        except NotFoundException as exc:
            self._refuse(HTTPStatus.FORBIDDEN, _FORBIDDEN, [("X-Framegate-Error", str(exc))])
            return
        self._stage, self._stage_generation = target.stage, self._catalog.generation  # resolved just now
        user_agent = request.header("user-agent")
        # Built as _make does (see Forward).
        client = tuple.__new__(Client, (self._source_ip, user_agent, target.domain_name, request.query))
        self._forwarded_for = _forwarded_for(request, self._source_ip)
        self._subprotocols = request.subprotocols
        session = self._session = Session(target, pooled_id(), client, pooled_id, epoch_ms)
        context = self._connect_context = session.connect_context()
        stage = target.stage
        refused = gateway.throttler.admit_connect(session.api_id, stage)
        gateway.observer.connect_request(session.api_id, stage, session.connection_id, context, refused)
        if refused is not None:
            self._refuse(HTTPStatus.TOO_MANY_REQUESTS, THROTTLED_CONNECT_MESSAGE)
            return
        # Required parameters, an authorizer, an HTTP or Lambda integration answer later: the
        # connection stays CONNECTING until connect_decided.
        invoke = session.connect_invocation(context)
        if invoke is not None:
            self._invocations_for().connect(invoke, request)
            return
        self._admitted(None)

    def connect_decided(self, status: int, message: str, subprotocol: str | None, metric: str | None) -> None:
        """``$connect``'s checks and HTTP/Lambda integration answered (``proxy.server.invocations``).

        Args:
            status: 200 goes on (a MOCK ``$connect``, the ws:// upstream, the
                101); any other refuses the upgrade with it and ``message``.
            subprotocol: chosen by the integration (sent only if the client offered it).
            metric: the ``StageMetrics`` attribute a refusal counts in.
        """
        if self._state != _CONNECTING:
            return
        if status != _OK:
            self._refuse(status, message, (), metric)
            return
        if subprotocol is not None and subprotocol not in self._subprotocols:
            logger.info("$connect chose subprotocol %r the client did not offer: not sent", subprotocol)
            subprotocol = None
        try:
            self._admitted(subprotocol)
            if self._state == _OPEN:
                early = self._take_early()
                if early:
                    self._feed(early)
        except Exception:
            logger.exception("internal error connectionId=%s", self.connection_id)
            self.close(_INTERNAL_ERROR, _INTERNAL)

    def _admitted(self, subprotocol: str | None) -> None:
        """``$connect`` let the client in so far: a MOCK ``$connect``, then the ws:// upstream or the 101."""
        session = self._session
        context = self._connect_context
        assert session is not None and context is not None
        try:
            status = session.connect_status(context)
            forward = session.handshake_upstream()
        except IntegrationError as exc:
            logger.warning("$connect failed connectionId=%s: %s", session.connection_id, exc)
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, _INTERNAL)
            return
        if not _OK <= status < _MULTIPLE_CHOICES:
            self._refuse(status, _FORBIDDEN if status == HTTPStatus.FORBIDDEN else f"$connect answered {status}")
            return
        if forward is None:
            self._accept(subprotocol, context)
        else:
            assert self._handshake is not None
            self._dial(forward, self._subprotocols, self._handshake.key)

    def _dial(self, forward: Forward, subprotocols: Sequence[str], key: str = "") -> None:
        """Open the upstream ``forward`` names; ``upstream_accepted`` or ``upstream_refused`` follows.

        ``key``: the client's Sec-WebSocket-Key, passed on to the upstream opened for its upgrade.
        """
        session = self._session
        assert session is not None
        target = session.target
        headers = (("X-Framegate-Connection-Id", session.connection_id), ("X-Forwarded-For", self._forwarded_for))
        shared = _context_headers(session.api_id, target.stage.stage_name, target.domain_name)
        gateway = self._gateway
        try:
            self._opening[forward.url] = open_upstream(
                self,
                forward.url,
                ClientHandshake(forward.url, headers, subprotocols, key, shared),
                gateway.client_encoder,
                gateway.server_encoder,
                timeout_s=forward.timeout_s,
                max_message=self._config.max_message,
                loop=self._loop,
                deadlines=gateway.deadlines,
            )
        except HandshakeError as exc:
            self._upstream_failed(forward.url, exc)

    def _accept(self, subprotocol: str | None, context: LazyContext) -> None:
        """Write the 101 and open the connection; the caller feeds what came early (``_take_early``)."""
        assert self._transport is not None and self._handshake is not None and self._session is not None
        self._transport.write(self._handshake.accept(subprotocol))
        self._transition(_ACCEPTED)
        session = self._session
        self._gateway.open_connections[session.connection_id] = self
        if self._gateway.registry is not None:
            self._gateway.registry.opened(session.connection_id)
        target = session.target
        self._observer = self._gateway.observer.connected(session.api_id, target.stage, session.connection_id, context)
        config = self._config
        self._decoder = FrameDecoder(server_side=True, max_frame=config.max_frame, max_message=config.max_message)
        self._last_activity = self._opened_at = self._clock.time()
        first_check = min(config.idle_timeout, config.max_connection_duration)
        if self._guard is None or config.handshake_timeout > first_check:
            self._clear_guard()
            self._guard = self._deadlines.guard(self, first_check)
        # Else the upgrade's deadline, due sooner, serves as the lifetime's first check
        # (``_lifetime`` then waits for the real one): no second entry per connection.
        for upstream in list(self._upstreams.values()):
            upstream.start()
        if self._early:  # reading stopped when they came
            assert self._flow is not None
            self._flow.resume()
        self._early = self._handshake.trailing + self._early
        self._handshake = None

    def _refuse(
        self, status: int, message: str, headers: Sequence[tuple[str, str]] = (), metric: str | None = None
    ) -> None:
        """Answer the upgrade with an HTTP error and close (``metric``: see ``Observer.refused``)."""
        session = self._session
        context = self._connect_context
        if session is not None and context is not None and status != HTTPStatus.TOO_MANY_REQUESTS:
            # connect_request already counted and logged its 429s
            self._gateway.observer.refused(session.api_id, session.target.stage, status, context, metric)
        self._transition(_REFUSED)
        self._wait_for_the_end()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(ServerHandshake.reject(status, message, headers))
        transport.close()

    # --- messages ---------------------------------------------------------------------

    def _refresh_lane(self) -> None:
        """Decide whether reads take the fast path; again whenever the catalog or the upstreams change."""
        self._drop_pump()
        self._pump_generation = self._catalog.generation
        session, observer, decoder = self._session, self._observer, self._decoder
        if self._state != _OPEN or session is None or observer is None or decoder is None:
            return
        forward = session.passthrough()
        upstream = self._upstreams.get(forward.url) if forward is not None else None
        if upstream is None or upstream.outbox is None or not upstream.relaying:
            return
        stage = self._current_stage()
        counters = observer.bulk_counters(stage, DEFAULT)
        if counters is not None:
            self._pump = RelayPump(
                decoder,
                self._gateway.client_encoder,
                upstream.outbox.write_through,
                clock=self._gateway.activity_clock,
                admission=self._gateway.throttler.admission(session.api_id, stage, DEFAULT),
                messages=counters,
                read_bytes=observer.bytes_in,
            )

    def _drop_pump(self) -> None:
        """Leave the fast path, keeping the time of its last read for the idle timeout."""
        if self._pump is not None:
            self._last_activity = max(self._last_activity, self._pump.last_activity)
            self._pump = None

    def _frames(self, data: bytes) -> None:
        """A read on the per-message path: decoded here, each message routed and acted on."""
        decoder = self._decoder
        assert decoder is not None and self._observer is not None
        self._observer.bytes_in.inc(len(data))
        self._last_activity = self._clock.time()
        upstreams = self._upstreams
        for upstream in upstreams.values():
            if upstream.outbox is not None:
                upstream.outbox.cork()  # this read's messages leave in one write per upstream
        try:
            try:
                events = decoder.feed(data)
            except ProtocolError as exc:
                self._events(exc.events)
                self._protocol_error(exc)
                return
            self._events(events)
        finally:
            for upstream in upstreams.values():
                if upstream.outbox is not None:
                    upstream.outbox.uncork()

    def _protocol_error(self, exc: ProtocolError) -> None:
        """Close with the fault's code; the stream cannot be parsed further, so stop reading it."""
        self.close(exc.close_code, str(exc))
        self._decoder = None
        transport = self._transport
        if transport is not None and transport.can_write_eof():
            # Half-close: the peer reads our close frame, then EOF; unread input does not reset it.
            transport.write_eof()

    def _events(self, events: list[Event]) -> None:
        for opcode, payload in events:
            if self._state != _OPEN:
                # Closing: what crossed our close frame is dropped, but the client's
                # answer may sit behind it in the same read.
                if opcode == _CLOSE:
                    self._close_transport()
                    return
                continue
            if opcode == _PING:
                # Answered before the next message or at the end of the read, whichever is first:
                # consecutive pings get one pong, for the latest (as RFC 6455 allows).
                self._pong = payload
                continue
            if self._pong is not None and not self._writing_paused:
                self._answer_ping()
            if opcode in (_TEXT, _BINARY):
                self._message(opcode, payload)
            elif opcode == _CLOSE:
                self._client_closed(payload)
        if self._pong is not None and not self._writing_paused:
            self._answer_ping()  # while paused, resume_writing answers the latest one

    def _answer_ping(self) -> None:
        pong = self._pong
        assert pong is not None
        self._pong = None
        self._write(self._gateway.server_encoder.pong(pong))

    def _message(self, opcode: int, payload: bytes) -> None:
        """One message on the per-message path: route, throttle, integrate, then ``_act``."""
        session = self._session
        observer = self._observer
        assert session is not None and observer is not None
        route = session.route(opcode, payload)
        context = session.lazy_context(MESSAGE_EVENT, route.route_key if route is not None else "-")
        # Error frames are not queued for a client over its write buffer's high-water mark: a
        # flood of small messages would otherwise buy many times its size in frames we hold.
        if route is None:
            observer.unrouted(self._current_stage(), context)
            if not self._writing_paused:
                self._act(session.no_route(context.request_id))
            return
        stage = self._current_stage()
        refused = self._gateway.throttler.admit_message(session.api_id, stage, route.route_key)
        if refused is not None:
            observer.message(stage, route.route_key, payload, context, refused)
            if not self._writing_paused:
                self._act(session.throttled(context.request_id, self._config.throttled_frame))
            return
        decision = session.integrate(route, opcode, payload, context.get)
        if type(decision) is Invoke:  # its access line waits for the answer (integration_answered)
            observer.message(stage, route.route_key, payload, context, None, True)
        else:
            observer.message(stage, route.route_key, payload, context, None)
        self._act(decision, opcode, payload)

    def _act(self, decision: Decision, opcode: int = _TEXT, payload: bytes = b"") -> None:
        """Carry out the session's decision about one message: one branch per kind of ``Decision``.

        ``Invoke`` (HTTP, Lambda) starts the call through ``proxy.server.invocations``;
        its answer comes back through ``integration_answered``, checked
        against the state (the connection may have closed meanwhile).
        """
        if decision is None:
            return
        if isinstance(decision, Forward):
            upstream = self._upstreams.get(decision.url)
            if upstream is not None:
                upstream.send(opcode, payload)
            else:
                self._open_later(decision, opcode, payload)
        elif isinstance(decision, Reply):
            self._send(_TEXT, decision.text.encode())
        elif isinstance(decision, Close):
            self.close(decision.code, decision.reason)
        elif isinstance(decision, Invoke):
            self._invocations_for().message(decision)

    def _invocations_for(self) -> Invocations:
        """The connection's ``Invocations``, made on first use."""
        invocations = self._invocations
        if invocations is None:
            gateway = self._gateway
            assert self._session is not None and self._flow is not None
            invocations = self._invocations = Invocations(
                self,
                self._session,
                gateway.runner,
                gateway.observer,
                self._flow,
                gateway.background,
                gateway.credentials,
            )
        return invocations

    def integration_answered(
        self, text: str | None, context: RequestContext, latency_s: float | None, metric: str | None
    ) -> None:
        """A message's HTTP/Lambda integration answered: count and log it, then send ``text`` if still open."""
        if self._observer is not None and self._session is not None:
            self._observer.integrated(self._current_stage(), context, latency_s, metric)
        if text is not None and self._state == _OPEN:
            self._send(_TEXT, text.encode())

    def _open_later(self, forward: Forward, opcode: int, payload: bytes) -> None:
        """First message for a non-``$default`` ws:// route: queue it and connect, reading paused."""
        self._pending.append((forward.url, opcode, payload))
        if forward.url not in self._opening:
            assert self._flow is not None
            self._flow.pause()
            self._dial(forward, ())

    def _take_pending(self, url: str) -> list[tuple[int, bytes]]:
        """Remove and return, in order, the messages queued for the upstream at ``url``."""
        taken = [(opcode, payload) for queued, opcode, payload in self._pending if queued == url]
        self._pending = [item for item in self._pending if item[0] != url]
        return taken

    def _send(self, opcode: int, payload: bytes) -> None:
        """One message of the gateway's own (a reply) to the client."""
        if self._transport is not None and self._observer is not None:
            frames = self._gateway.server_encoder.message(opcode, payload)
            self._transport.write(frames)
            self._observer.sent(1, len(frames))

    def _write(self, data: bytes) -> None:
        """A control frame to the client."""
        if self._transport is not None:
            self._transport.write(data)
            if self._observer is not None:
                self._observer.bytes_out.inc(len(data))

    def _close_transport(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _current_stage(self) -> Stage:
        """The stage as the catalog has it now: route settings apply to open connections too.

        Looked up again only after the catalog changed.
        """
        catalog = self._catalog
        if self._stage is None or self._stage_generation != catalog.generation:
            session = self._session
            assert session is not None
            target = session.target
            self._stage = catalog.stage(session.api_id, target.stage.stage_name) or target.stage
            self._stage_generation = catalog.generation
        return self._stage

    # --- upstream callbacks -------------------------------------------------------------

    def upstream_accepted(self, upstream: Upstream, subprotocol: str | None, seconds: float) -> None:
        session = self._session
        assert session is not None and self._flow is not None
        self._gateway.observer.upstream_opened(session.api_id, session.target.stage, seconds)
        del self._opening[upstream.url]
        self._upstreams[upstream.url] = upstream
        if self._writing_paused and upstream.flow is not None:
            upstream.flow.pause()
        if self._state == _CONNECTING:  # the $connect / $default upstream: now the client's 101
            assert self._connect_context is not None
            self._accept(subprotocol, self._connect_context)
            early = self._take_early()
            if early:
                self._feed(early)
            return
        # A route's upstream, opened by its first message: send what queued meanwhile.
        upstream.start()
        for opcode, payload in self._take_pending(upstream.url):
            upstream.send(opcode, payload)
        self._refresh_lane()
        self._flow.resume()

    def upstream_refused(self, upstream: Upstream, error: HandshakeError) -> None:
        del self._opening[upstream.url]
        self._upstream_failed(upstream.url, error)

    def _upstream_failed(self, url: str, exc: HandshakeError) -> None:
        """Before the 101 the client is refused; after, the messages queued for ``url`` get an error.

        The client learns only the status: the error names the backend, whose
        URL may carry credentials (``upstream`` redacts them for the log).
        """
        self._gateway.observer.upstream_failed()
        if self._state == _CONNECTING:
            logger.info("upstream refused connectionId=%s: %s", self.connection_id, exc)
            status = exc.status_hint
            message = _INTERNAL if status >= HTTPStatus.INTERNAL_SERVER_ERROR else _FORBIDDEN
            self._refuse(status, message, [("X-Framegate-Error", _status_phrase(status))])
            return
        logger.info("route upstream failed connectionId=%s: %s", self.connection_id, exc)
        session = self._session
        assert session is not None and self._flow is not None
        for _ in self._take_pending(url):
            self._act(session.internal_error(None))
        self._flow.resume()

    def upstream_pump(self, decoder: FrameDecoder, encoder: FrameEncoder) -> RelayPump:
        """Backend messages straight to the client, counted like ``ConnectionObserver.sent``."""
        assert self._transport is not None and self._observer is not None
        observer = self._observer
        return RelayPump(
            decoder,
            encoder,
            self._transport.write,
            clock=self._gateway.activity_clock,
            messages=(observer.stage_metrics.message_count,),
            written_bytes=observer.bytes_out,
        )

    def upstream_closed(self, upstream: Upstream, code: int | None, reason: str) -> None:
        for url, known in list(self._upstreams.items()):
            if known is upstream:
                del self._upstreams[url]
        self._refresh_lane()
        if code is None:
            self.close(_INTERNAL_ERROR, "Backend connection lost")
        elif code in _UNSENDABLE:
            self.close(_NORMAL, reason)
        else:
            self.close(code, reason)

    def upstream_pause(self) -> None:
        if self._flow is not None:
            self._flow.pause()

    def upstream_resume(self) -> None:
        if self._flow is not None:
            self._flow.resume()

    # --- the @connections API (proxy.server.management) ------------------------------

    @property
    def is_open(self) -> bool:
        """Past the 101 and not closing: messages may be pushed."""
        return self._state == _OPEN

    def push(self, payload: bytes) -> bool:
        """PostToConnection: ``payload`` to the client as one message, framed as the gateway's own.

        Text when ``payload`` is UTF-8 (always, from a JSON or text caller),
        else binary: a text frame of other bytes would make the client fail
        the connection. Counts as activity for the idle timeout.

        Returns:
            False, sending nothing, when the client is over its write
            high-water mark and this push would take its write buffer past
            ``MAX_PUSH_BUFFER_BYTES``: a client that does not read costs a
            bounded amount of memory.
        """
        transport = self._transport
        assert self._state == _OPEN and transport is not None and self._observer is not None
        try:
            payload.decode()
            opcode = _TEXT
        except UnicodeDecodeError:
            opcode = _BINARY
        frames = self._gateway.server_encoder.message(opcode, payload)
        if self._writing_paused and transport.get_write_buffer_size() + len(frames) > MAX_PUSH_BUFFER_BYTES:
            return False
        transport.write(frames)
        self._observer.sent(1, len(frames))
        self._last_activity = self._clock.time()
        return True

    def describe(self) -> ConnectionInfo:
        """GetConnection's answer (only for a connection past its 101)."""
        session = self._session
        assert session is not None
        now_ms = epoch_ms()
        idle_ms = int((self._clock.time() - self._latest_activity()) * MS_PER_S)
        client = session.client
        stage_name = session.target.stage.stage_name
        return ConnectionInfo(
            session.api_id, stage_name, session.connected_at_ms, now_ms - idle_ms, client.source_ip, client.user_agent
        )

    # --- closing ----------------------------------------------------------------------

    def _client_closed(self, payload: bytes) -> None:
        """The client started the closing handshake: answer it, pass it on, and end the transport."""
        code, reason = parse_close(payload)
        self._close_code = code
        self._transition(_CLOSE_RECEIVED)
        self._pong = None
        self._write(self._gateway.server_encoder.close(None if code == _NO_STATUS else code, reason))
        self._close_upstreams(_NORMAL if code in _UNSENDABLE else code, reason)
        self._clear_guard()
        transport = self._transport
        if transport is not None:
            transport.close()  # ends once its buffer is written; a client that never reads it is dropped
            if transport.get_write_buffer_size():
                self._wait_for_the_end()

    def _close_upstreams(self, code: int, reason: str) -> None:
        """Pass a close on to every upstream, opening ones too, and forget them (their callbacks no longer reach us)."""
        for upstream in self._upstreams.values():
            upstream.close(code, reason)
        for upstream in self._opening.values():
            upstream.close(code, reason)
        self._upstreams.clear()
        self._opening.clear()
        self._drop_pump()

    def _wait_for_the_end(self) -> None:
        """CLOSING: the transport must end within the close timeout (a client that never reads is dropped)."""
        self._clear_guard()
        if self._transport is not None:
            self._guard = self._deadlines.guard(self, CLOSE_TIMEOUT_S)

    def close(self, code: int, reason: str = "") -> None:
        """Close the client with ``code`` (and its upstreams with the same code)."""
        if self._state != _OPEN:
            if self._state == _HANDSHAKE or self._state == _CONNECTING:
                self.abort()
            return
        self._transition(_CLOSE_SENT)
        self._close_code = code
        self._pong = None
        self._write(self._gateway.server_encoder.close(code, reason))
        self._close_upstreams(code, reason)
        self._wait_for_the_end()

    def shut_down(self) -> None:
        """Server shutdown: 1001 to open connections, drop the others."""
        if self._state == _OPEN:
            self.close(_GOING_AWAY, "Server shutting down")
        elif self._state != _CLOSED:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _status_phrase(status: int) -> str:
    """The standard reason phrase of ``status``, for telling a client what failed without details."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Upstream error"
