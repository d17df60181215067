"""One WebSocket connection from the gateway to a backend (a ws:// integration).

Layer 4. The client role of the relay: the upgrade goes through
``proxy.handshake.ClientHandshake``, frames through ``proxy.codec`` (masked,
re-fragmented to the frame cap). Once started, every read of the backend goes
through the owner's ``RelayPump`` (``UpstreamOwner.upstream_pump``), which
re-encodes its messages for the client in one write; control frames and closes
are handled here and passed on. The owner's write buffer pausing pauses this
socket's reading and vice versa (``FlowControl``). Deadlines (the upgrade's,
the close handshake's) wait in the gateway's shared ``Deadlines``, on its clock.

Opening is callbacks, not a coroutine to await: the owner hears
``upstream_accepted`` from the read that holds the 101, or
``upstream_refused`` once, and never both (a future to await would cost a
task step, two coroutine frames and a cancel-based deadline per connection).

Errors and log lines name the backend by ``proxy.redact.redact_url``: an
integration URI may carry credentials.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Final, Protocol
from urllib.parse import urlsplit

from proxy.codec import FrameDecoder, FrameEncoder, RelayPump
from proxy.errors import HandshakeError, PayloadTooBig, ProtocolError
from proxy.frames import CloseCode, Event, Opcode, parse_close
from proxy.handshake import ClientHandshake
from proxy.limits import CLOSE_TIMEOUT_S, UPSTREAM_URL_CACHE
from proxy.redact import redact_url
from proxy.server import tls
from proxy.server.deadlines import DeadlineQueue, Deadlines
from proxy.server.flow import FlowControl, Outbox

_DEFAULT_PORTS = {"ws": 80, "wss": 443}

# Enum members read per connection, as module constants: upstream.pxd types them C ints,
# so compiled code skips EnumType's attribute hook.
_PING: Final = Opcode.PING
_CLOSE: Final = Opcode.CLOSE
_NO_STATUS: Final = CloseCode.NO_STATUS
_MESSAGE_TOO_BIG: Final = CloseCode.MESSAGE_TOO_BIG
_INTERNAL_ERROR: Final = CloseCode.INTERNAL_ERROR


class UpstreamOwner(Protocol):
    """The client connection an upstream belongs to."""

    def upstream_accepted(self, upstream: Upstream, subprotocol: str | None, seconds: float) -> None:
        """The backend answered 101 (choosing ``subprotocol``), ``seconds`` after ``open_upstream``."""
        ...

    def upstream_refused(self, upstream: Upstream, error: HandshakeError) -> None:
        """The upgrade failed: unreachable (502), no answer in time (504) or the backend's refusal."""
        ...

    def upstream_pump(self, decoder: FrameDecoder, encoder: FrameEncoder) -> RelayPump:
        """Where backend messages go once the upstream starts: ``decoder`` reads them, ``encoder`` re-frames them."""
        ...

    def upstream_closed(self, upstream: Upstream, code: int | None, reason: str) -> None:
        """The backend closed (``code`` None: the socket died without a close frame)."""
        ...

    def upstream_pause(self) -> None:
        """The upstream's write buffer is full: stop reading the client."""
        ...

    def upstream_resume(self) -> None: ...


class Upstream:
    """The gateway's WebSocket client to one backend, for one client connection.

    An ``asyncio.Protocol`` by shape (see ``ClientConnection``): compiled as it is, typed by ``upstream.pxd``.
    """

    __slots__ = (
        "_clock",
        "_closing",
        "_deadlines",
        "_decoder",
        "_dialing",
        "_downstream",
        "_encoder",
        "_guard",
        "_handshake",
        "_held",
        "_holding",
        "_loop",
        "_owner",
        "_pump",
        "_reported",
        "_started",
        "_transport",
        "_waiter",
        "flow",
        "outbox",
        "url",
    )

    def __init__(
        self,
        owner: UpstreamOwner,
        url: str,
        handshake: ClientHandshake,
        encoder: FrameEncoder,
        downstream: FrameEncoder,
        max_message: int,
        loop: asyncio.AbstractEventLoop,
        deadlines: Deadlines,
    ) -> None:
        self._owner = owner
        self.url = url
        self._loop = loop
        self._deadlines = deadlines
        self._clock = deadlines.clock
        self._started = self._clock.time()
        self._guard: DeadlineQueue | None = None
        """Where this upstream's deadline waits: the upgrade's until the 101, then the close handshake's."""
        self._dialing: Coroutine[asyncio.Future[object], None, object] | None = None
        """``create_connection`` until it returns (see ``_step``)."""
        self._waiter: asyncio.Future[object] | None = None
        """The future it waits on now."""
        self._handshake: ClientHandshake | None = handshake
        self._encoder = encoder
        self._downstream = downstream
        # Backends are ours to trust with frame sizes: only the message cap applies
        # to what they send; the client gets it re-fragmented to the frame cap.
        self._decoder = FrameDecoder(server_side=False, max_frame=max_message, max_message=max_message)
        self._transport: asyncio.Transport | None = None
        self._closing = False
        self._reported = False
        self.flow: FlowControl | None = None
        self.outbox: Outbox | None = None
        self._held: bytes | None = None
        """Backend bytes received between its 101 and ``start`` (None once started or closed)."""
        self._holding = False
        """Reading paused from the 101 until ``start`` (the owner did not start it at once)."""
        self._pump: RelayPump | None = None
        """The owner's, from ``start`` until ``close``: every backend message goes to the client through it."""

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport  # uvloop's is a Transport by shape
        self.flow = FlowControl(self._transport)
        self.outbox = Outbox(self._transport)
        assert self._handshake is not None
        self._transport.write(self._handshake.request_bytes)

    def data_received(self, data: bytes) -> None:
        if self._handshake is None:
            pump = self._pump
            try:
                if pump is not None:
                    # Every message goes to the client, one write per read; control frames are ours.
                    events = pump.feed(data)
                elif self._closing:
                    # Ours to finish: still decoded, since the backend's close answers ours; its messages go nowhere.
                    events = self._decoder.feed(data)
                elif self._held is not None:
                    self._held += data  # at most one read that raced the pause, or one before start
                    return
                else:
                    return
            except ProtocolError as exc:  # what came before the fault has gone
                self._events(exc.events)
                self._protocol_error(exc)
                return
            if events:
                self._events(events)
            return
        try:
            accepted = self._handshake.receive_data(data)
        except HandshakeError as exc:
            self._fail_handshake(exc)
            return
        if accepted is not None:
            self._handshake = None
            self._clear_guard()
            # Hold the backend until the owner starts it (the client may not have
            # its 101 yet): keep what came with the 101, and stop reading unless
            # the owner started it right away (most do: no read stop and restart).
            self._held = accepted.trailing
            self._owner.upstream_accepted(self, accepted.subprotocol, self._clock.time() - self._started)
            if self._held is not None and not self._closing and self.flow is not None:
                self._holding = True
                self.flow.pause()

    def eof_received(self) -> bool | None:
        if self._handshake is not None:
            self._fail_handshake(self._handshake.receive_eof())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake is not None:
            self._fail_handshake(self._handshake.receive_eof())
        self._clear_guard()  # the backend answered our close in time
        self._transport = None
        self._report(None, "backend connection lost")

    def pause_writing(self) -> None:
        self._owner.upstream_pause()

    def resume_writing(self) -> None:
        self._owner.upstream_resume()

    # --- what the owner calls -----------------------------------------------------------

    def dial(self, host: str, port: int, context: ssl.SSLContext | None, timeout_s: float) -> None:
        """Connect and send the upgrade; no 101 within ``timeout_s`` (the integration timeout) is a 504.

        Raises:
            HandshakeError: 502 when connecting fails at once (nothing is left running).
        """
        self._guard = self._deadlines.guard(self, timeout_s)
        # An asyncio protocol by shape, not by class: typeshed's bound says otherwise.
        self._dialing = self._loop.create_connection(self._as_protocol, host, port, ssl=context)  # type: ignore[type-var]
        try:
            self._step()
        except HandshakeError:
            self._clear_guard()
            raise

    def _step(self) -> None:
        """Run ``create_connection`` to its next wait: the steps of a task, without one.

        A task per dial is a measurable share of a connection's set-up (its
        allocation, a first step through ``call_soon``, registration in
        asyncio's task set). ``create_connection`` only ever waits on futures:
        each wait resumes it here (``_resumed``) until it returns or fails.

        Raises:
            HandshakeError: 502 when the backend cannot be reached.
        """
        connecting = self._dialing
        assert connecting is not None
        try:
            waiter = connecting.send(None)
        except StopIteration:  # connected: the transport has called connection_made
            self._dialing = self._waiter = None
            return
        except OSError as exc:
            self._dialing = self._waiter = None
            message = f"backend {redact_url(self.url)} is unreachable: {exc.strerror or exc}"
            raise HandshakeError(message, HTTPStatus.BAD_GATEWAY) from exc
        self._waiter = waiter
        waiter.add_done_callback(self._resumed)

    def _resumed(self, waiter: asyncio.Future[object]) -> None:
        if waiter is not self._waiter:
            return  # given up (``_stop_dialing``)
        try:
            self._step()
        except HandshakeError as exc:
            self._fail_handshake(exc)

    def _as_protocol(self) -> Upstream:
        """The protocol factory: this upstream, an ``asyncio.Protocol`` by shape (see the class docstring)."""
        return self

    def deadline_passed(self) -> None:
        """The guard fell due: no 101 within the integration timeout (a 504), or no answer to our close."""
        guard = self._guard
        self._guard = None
        if self._handshake is not None:
            assert guard is not None
            message = f"backend {redact_url(self.url)} did not answer within {guard.delay_s:g} s"
            self._fail_handshake(HandshakeError(message, HTTPStatus.GATEWAY_TIMEOUT))
        elif self._transport is not None:
            self._transport.abort()

    def start(self) -> None:
        """Begin delivering messages to the owner: what came with the 101 first, then resume reading."""
        held = self._held
        if held is None:
            return
        self._held = None
        self._pump = self._owner.upstream_pump(self._decoder, self._downstream)
        if held:
            self.data_received(held)
        if self._holding and self.flow is not None:
            self._holding = False
            self.flow.resume()

    @property
    def last_activity(self) -> float:
        """When the backend last sent something to relay (the gateway's activity clock; 0 before ``start``)."""
        return self._pump.last_activity if self._pump is not None else 0.0

    @property
    def relaying(self) -> bool:
        """Started, open and not closing: frames written to ``outbox`` will reach the backend."""
        return self._held is None and self._handshake is None and self.outbox is not None and not self._closing

    def send(self, opcode: int, payload: bytes) -> None:
        """Relay one message (re-fragmented and masked)."""
        if self.outbox is not None and not self._closing:
            self.outbox.write(self._encoder.message(opcode, payload))

    def close(self, code: int | None, reason: str = "") -> None:
        """Start the closing handshake; the socket is dropped if the backend does not answer."""
        transport = self._transport
        self._reported = True  # the owner initiated this: no callback
        self._pump = None  # the client hears nothing more of this backend (see data_received)
        self._held = None
        if self._handshake is not None:
            self._stop_dialing()
        if transport is None or self._closing:
            return
        self._closing = True
        if self._handshake is not None:
            transport.abort()
            return
        assert self.outbox is not None
        self.outbox.write(self._encoder.close(code, reason))
        self.outbox.uncork()  # the owner may forget this upstream before it would uncork it
        self._guard = self._deadlines.guard(self, CLOSE_TIMEOUT_S)

    # --- frames -------------------------------------------------------------------------

    def _events(self, events: list[Event]) -> None:
        """Control frames (every data message was relayed)."""
        for opcode, payload in events:
            if opcode == _PING:
                if self.outbox is not None:
                    self.outbox.write(self._encoder.pong(payload))
            elif opcode == _CLOSE:
                self._backend_closed(payload)
                return

    def _backend_closed(self, payload: bytes) -> None:
        code, reason = parse_close(payload)
        transport = self._transport
        if transport is not None and self.outbox is not None:
            if not self._closing:
                self._closing = True
                self.outbox.write(self._encoder.close(None if code == _NO_STATUS else code, reason))
            self.outbox.uncork()
            transport.close()
        self._report(code, reason)

    def _protocol_error(self, exc: ProtocolError) -> None:
        if self._transport is not None and self.outbox is not None and not self._closing:
            self._closing = True
            self.outbox.write(self._encoder.close(exc.close_code, str(exc)))
            self.outbox.uncork()
            self._transport.close()
        if isinstance(exc, PayloadTooBig):
            # The caps bind backends too: the client learns its backend sent too much.
            self._report(_MESSAGE_TOO_BIG, f"Backend exceeded the cap: {exc}")
        else:
            self._report(_INTERNAL_ERROR, f"Backend protocol error: {exc}")

    def _report(self, code: int | None, reason: str) -> None:
        if not self._reported:
            self._reported = True
            self._owner.upstream_closed(self, code, reason)

    def _fail_handshake(self, exc: HandshakeError) -> None:
        """Give up the upgrade; the owner hears of it unless it gave up first (``close``)."""
        if self._handshake is None:
            return
        self._handshake = None
        self._stop_dialing()
        if self._transport is not None:
            self._transport.abort()
        if not self._reported:
            self._reported = True
            self._owner.upstream_refused(self, exc)

    def _stop_dialing(self) -> None:
        """Give up connecting, as cancelling a task would: the waiter cancelled, ``create_connection`` closed."""
        self._clear_guard()
        connecting, waiter = self._dialing, self._waiter
        self._dialing = self._waiter = None
        if waiter is not None:
            waiter.cancel()  # a connect finishing later then closes its socket silently
        if connecting is not None:
            connecting.close()  # create_connection closes its transport on the way out

    def _clear_guard(self) -> None:
        if self._guard is not None:
            self._guard.discard(self)
            self._guard = None


def _address(url: str) -> tuple[str, int, ssl.SSLContext | None]:
    host, port, secure = _endpoint(url)
    # One verifying context for every wss:// dial (--backend-ca, else the system store).
    return host, port, tls.backend_context() if secure else None


@functools.lru_cache(maxsize=UPSTREAM_URL_CACHE)
def _endpoint(url: str) -> tuple[str, int, bool]:
    """Host, port and wss-ness of ``url``, parsed once per URL rather than per connection."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        message = f"integration URI is not a ws:// or wss:// URL: {redact_url(url)}"
        raise HandshakeError(message, HTTPStatus.INTERNAL_SERVER_ERROR)
    return parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme], parts.scheme == "wss"


def open_upstream(
    owner: UpstreamOwner,
    url: str,
    handshake: ClientHandshake,
    encoder: FrameEncoder,
    downstream: FrameEncoder,
    *,
    timeout_s: float,
    max_message: int,
    loop: asyncio.AbstractEventLoop,
    deadlines: Deadlines,
) -> Upstream:
    """Start connecting to ``url`` and upgrading; ``owner`` hears how it went (see the module docstring).

    ``encoder`` writes to the backend; ``downstream`` re-encodes its messages for
    the client. ``loop`` is the running loop, passed in: asking asyncio for it
    costs a ``getpid`` syscall. ``deadlines`` keeps the upgrade's and the
    close handshake's deadlines (shared by the gateway's upstreams).

    Raises:
        HandshakeError: 500 when ``url`` is not a ws:// or wss:// URL, 502 when connecting
            fails at once (nothing was started, or it was stopped).
    """
    host, port, context = _address(url)
    upstream = Upstream(owner, url, handshake, encoder, downstream, max_message, loop, deadlines)
    upstream.dial(host, port, context, timeout_s)
    return upstream
