"""The load generator's WebSocket client: a raw ``asyncio.Protocol`` on ``proxy.codec``.

Layer 5 (IO). No websockets library and no coroutine per message: the
handshake is a fixed request and a status-line check, messages are
pre-encoded once (``proxy.bench.message``: a send patches in the message's
number), and every reply is handled inside ``data_received`` by a callback
into the driver (``proxy.bench.worker``).
That is what lets one process out-run a ``websockets`` client several times
over, so the load side is not what a benchmark measures.

Only an echo of an outstanding message counts, found by its number (echoes
keep each connection's order). Anything else is an error grouped
``reply:<group>``. A gateway error frame such as the throttled
``{"message": "Too Many Requests", ...}`` stands for one outstanding message
that will never be echoed, but not for a known one: the gateway answers it
at once, so it may overtake the echoes of earlier messages. It is resolved
when a later echo arrives (the messages skipped are the refused ones, any
beyond them are missing), when every outstanding message is refused, or when
the oldest is overdue (``overdue``). An echo of no outstanding message (late
or repeated) answers nothing.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from time import monotonic_ns as time_ns
from typing import TypeVar, cast

from proxy.bench.endpoint import Target, describe_failure, error_key
from proxy.bench.message import MISSING, UNEXPECTED, Message, reply_group
from proxy.codec import FrameDecoder, FrameEncoder
from proxy.errors import ProtocolError
from proxy.frames import CloseCode, Opcode, parse_close
from proxy.handshake import accept_token, new_key
from proxy.limits import BENCH_REFUSAL_BODY_BYTES, MAX_REQUEST_HEAD_BYTES

_HEAD_END = b"\r\n\r\n"
REFUSAL_REASON_HEADER = "x-framegate-error"
"""The header in which framegate says why it refused an upgrade (lower case, as heads are parsed)."""


class Listener:
    """What a connection reports to its driver; the driver overrides what it needs."""

    def opened(self, conn: WebSocketClient) -> None: ...

    def messages(self, conn: BenchConnection, count: int, received_ns: int) -> None:
        """``count`` echoes of the oldest outstanding messages arrived in one read at ``received_ns``."""

    def rejected(self, conn: BenchConnection, key: str, answers: bool) -> None:
        """A reply that is not an echo of an outstanding message, grouped as ``key``.

        ``answers``: it stands for an outstanding message that will never be
        echoed (a gateway error frame, or an echo found missing); the connection
        drops that message's send time itself.
        """

    def failed(self, conn: WebSocketClient | None, key: str) -> None:
        """``conn`` is None when no socket was ever connected."""

    def closed(self, conn: WebSocketClient) -> None: ...


class WebSocketClient(asyncio.Protocol):
    """One client connection's upgrade, control frames and failure handling; subclasses handle messages.

    Args:
        target: where and what to upgrade.
        listener: receives ``opened``/``failed``/``closed`` (and what a subclass reports).
        clock: nanosecond monotonic clock, injected by the driver.
    """

    def __init__(self, target: Target, listener: Listener, clock: Callable[[], int]) -> None:
        self.target = target
        self.listener = listener
        self.clock = clock
        self.started_ns = clock()
        self.connect_ns = 0
        """Connect plus handshake time, set once open."""
        self.is_open = False
        """Upgraded and not closing: messages may be sent."""
        self.upgraded = False
        """The upgrade succeeded (stays True while closing)."""
        self.refusal = ""
        """A refused upgrade: ``HTTP 403 Forbidden: <start of the body>``."""
        self.subprotocol: str | None = None
        """The subprotocol the server chose, if any."""
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[bool] = loop.create_future()
        """True once upgraded; False if the connection failed before that."""
        self.done: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._refused_status = 0
        self._refused_reason = ""
        """framegate's X-Framegate-Error on a refused upgrade: the exact reason its body leaves out."""
        self._body_wanted = 0
        self._nonce = new_key()
        self._decoder = FrameDecoder(server_side=False)
        self._encoder = FrameEncoder(client_side=True)
        self._closing = False
        self._failed = False

    # --- asyncio.Protocol -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._transport.write(self.target.request(self._nonce))

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self._frames_received(data)
        elif self._refused_status:
            self._body_received(data)
        else:
            self._head_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused_status:
            self._refused()
        elif self.upgraded and not self._closing and not self._failed:
            self.fail(error_key("close", CloseCode.ABNORMAL))
        elif not self.upgraded and not self._failed and not self._closing:
            self.fail(error_key("handshake", "eof"))
        self.is_open = False
        self._transport = None
        if not self.ready.done():
            self.ready.set_result(False)
        if not self.done.done():
            self.done.set_result(None)
        self.listener.closed(self)

    # --- handshake --------------------------------------------------------------
    def _head_received(self, data: bytes) -> None:
        self._head += data
        end = self._head.find(_HEAD_END)
        if end < 0:
            if len(self._head) > MAX_REQUEST_HEAD_BYTES:
                self.fail(error_key("handshake", "oversized"))
            return
        head = bytes(self._head[:end]).decode("latin-1")
        rest = bytes(self._head[end + len(_HEAD_END) :])
        self._head.clear()
        status, headers = _parse_head(head)
        if status != HTTPStatus.SWITCHING_PROTOCOLS:
            self._refused_status = status or 1
            self._refused_reason = headers.get(REFUSAL_REASON_HEADER, "")[:BENCH_REFUSAL_BODY_BYTES]
            length = headers.get("content-length", "")
            self._body_wanted = min(int(length), BENCH_REFUSAL_BODY_BYTES) if length.isdigit() else 0
            self._body_received(rest)
            return
        problem = self._check_upgrade(headers)
        if problem:
            self.fail(error_key("handshake", problem))
            return
        self.is_open = self.upgraded = True
        self._upgraded()
        self.connect_ns = self.clock() - self.started_ns
        self.ready.set_result(True)
        self.listener.opened(self)
        if rest:
            self._frames_received(rest)

    def _check_upgrade(self, headers: dict[str, str]) -> str:
        """Why a 101 is not a valid upgrade for us ('' if it is)."""
        if headers.get("sec-websocket-accept") != accept_token(self._nonce):
            return "bad_accept"
        chosen = headers.get("sec-websocket-protocol")
        if chosen is not None:
            if chosen not in self.target.subprotocols:
                return "subprotocol"
            self.subprotocol = chosen
        return ""

    def _body_received(self, data: bytes) -> None:
        """Keep the start of a refused upgrade's body, to say why it was refused."""
        self._head += data[: max(0, BENCH_REFUSAL_BODY_BYTES - len(self._head))]
        if len(self._head) >= self._body_wanted:
            self._refused()

    def _refused(self) -> None:
        status = self._refused_status
        if self._failed:
            return
        body = bytes(self._head).decode("utf-8", "replace").strip()
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "(no valid status line)"
        self.refusal = f"HTTP {status} {phrase}" + (f": {' '.join(body.split())}" if body else "")
        if self._refused_reason:
            self.refusal += f" ({self._refused_reason})"
        self.fail(error_key("http", status if status > 1 else "invalid"))

    def _upgraded(self) -> None:
        """The upgrade succeeded; frames follow (a subclass prepares for them)."""

    # --- frames -------------------------------------------------------------------
    def _frames_received(self, data: bytes) -> None:
        try:
            events = self._decoder.feed(data)
        except ProtocolError as exc:
            self._dispatch(exc.events)
            self.fail(error_key("protocol", exc.close_code), close_code=exc.close_code)
            return
        self._dispatch(events)

    def _dispatch(self, events: list[tuple[int, bytes]]) -> None:
        raise NotImplementedError

    def _control(self, opcode: int, payload: bytes) -> bool:
        """Answer a ping, run a close; True once closing (stop dispatching)."""
        if opcode == Opcode.PING:
            self._write(self._encoder.pong(payload))
        elif opcode == Opcode.CLOSE:
            self._close_received(payload)
            return True
        return False

    def _close_received(self, payload: bytes) -> None:
        code, _reason = parse_close(payload)
        self.is_open = False
        if not self._closing:
            self._closing = True
            self._write(self._encoder.close(None if code == CloseCode.NO_STATUS else code))
            self.fail(error_key("close", code))
        if self._transport is not None:
            self._transport.close()

    # --- driver API -----------------------------------------------------------------
    def write_message(self, payload: bytes, binary: bool) -> None:
        """Send one message built at run time (scenarios); echo mode writes pre-encoded frames instead."""
        self._write(self._encoder.message(Opcode.BINARY if binary else Opcode.TEXT, payload))

    def close(self, code: int = CloseCode.NORMAL) -> None:
        """Start the closing handshake (the server's close frame ends it); nothing is sent after it.

        Before the upgrade has completed there is no WebSocket to close: the
        connection is dropped, and that is not an error (the run or a ramp let it go).
        """
        self.is_open = False
        if self._closing or self._transport is None:
            return
        self._closing = True
        if not self.upgraded:
            self._transport.abort()
            return
        self._write(self._encoder.close(code))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def fail(self, key: str, close_code: int | None = None) -> None:
        """Report ``key`` once and drop the connection (after a close frame when ``close_code``)."""
        if self._failed:
            return
        self._failed = True
        self.is_open = False
        if not self.ready.done():
            self.ready.set_result(False)
        self.listener.failed(self, key)
        if close_code is not None and not self._closing:
            self._closing = True
            self._write(self._encoder.close(close_code))
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


def _parse_head(head: str) -> tuple[int, dict[str, str]]:
    """Status code (0 if the status line is not HTTP) and headers, names lower-cased."""
    lines = head.split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return 0, {}
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


class SendBatch:
    """Sends queued during one event-loop turn, written once per connection when the turn's callbacks are done.

    The first send of a turn schedules ``flush`` with ``call_soon``: it runs
    after every read callback of the turn and before the loop polls again, so
    no reply can arrive for a message still queued. The writes of a turn then
    go out back to back, and the server wakes once for all of them instead of
    once per message: that wake-up is most of what a loopback ``write`` costs
    (``docs/bench.md#cost-per-message-against-artillery-and-locust``).

    Args:
        clock: nanosecond monotonic clock; read once per flush to stamp the
            messages sent without a due time (closed loop).
    """

    __slots__ = ("_clock", "_loop", "_queued")

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._queued: list[BenchConnection] = []

    def add(self, conn: BenchConnection) -> None:
        """``conn`` has messages to write at the end of this turn."""
        if not self._queued:
            self._loop.call_soon(self.flush)
        self._queued.append(conn)

    def flush(self) -> None:
        """Write every queued connection's messages, one write each."""
        queued = self._queued
        if not queued:
            return
        self._queued = []
        now = self._clock()
        for conn in queued:
            conn.flush(now)


class BenchConnection(WebSocketClient):
    """Echo mode: numbered pre-encoded messages out, each reply checked as the echo of one of them.

    Args:
        target: where and what path to upgrade.
        listener: receives ``opened``/``messages``/``rejected``/``failed``/``closed``.
        message: the message this connection sends, numbered from 0.
        clock: nanosecond monotonic clock, injected by the driver.
        batch: where sends wait for the end of the loop turn (shared by the driver's connections).
    """

    def __init__(
        self, target: Target, listener: Listener, message: Message, clock: Callable[[], int], batch: SendBatch
    ) -> None:
        super().__init__(target, listener, clock)
        self.message = message
        self.batch = batch
        self.pending: deque[int] = deque()
        """Send (or scheduled send) times of written messages not yet answered, oldest first."""
        self.sent = 0
        """Messages written so far: the number of the next one."""
        self.answered = 0
        """Messages answered so far: the number of the oldest outstanding one."""
        self.refused = 0
        """Gateway error frames not yet matched to an outstanding message (see the module docstring)."""
        self.queued = 0
        """Messages waiting for the end of the loop turn (``SendBatch``)."""
        self._due: list[int] = []
        """Due times of the queued messages sent with one (open loop); the others are stamped when written."""
        self._exact = False
        """Every reply so far was an exact echo frame, checked in place (``data_received``); False: the decoder."""
        self._partial = b""
        """The start of an exact echo frame whose rest has not arrived yet."""

    def _upgraded(self) -> None:
        self._exact = bool(self.message.echo_frames)

    def data_received(self, data: bytes) -> None:
        """Echo mode's hot path: whole exact echo frames are checked in place, anything else goes to the decoder.

        While every reply has been an exact echo, a read is compared byte for
        byte with the frames that echo the oldest outstanding messages, built
        once (``Message.echo_frames``): a stricter check than decoding and
        comparing the payload, with no object per message. The first read
        holding anything else (a gateway refusal, a ping, a close, an echo
        framed differently) is fed to the decoder from the first byte not
        matched, and so is every later read: until then the decoder has only
        ever seen whole frames.
        """
        if not self._exact:
            super().data_received(data)
            return
        if self._partial:
            data = self._partial + data
            self._partial = b""
        message = self.message
        frames, bits, length = message.echo_frames, message.number_bits, message.echo_frame_bytes
        answered = start = self.answered
        sent = self.sent
        size = len(data)
        offset = 0
        if size == length:  # one whole frame: every read of a closed loop
            if answered < sent and data == frames[answered & bits]:
                answered += 1
                offset = size
        else:
            while answered < sent and offset + length <= size and data.startswith(frames[answered & bits], offset):
                answered += 1
                offset += length
        if answered != start:
            self.answered = answered
            self.listener.messages(self, answered - start, self.clock())
        if offset < size:
            self._not_an_echo(data[offset:] if offset else data)

    def _not_an_echo(self, rest: bytes) -> None:
        """Bytes after the last whole echo of a read: the start of the next echo (kept), else the decoder's."""
        message = self.message
        if (
            self.answered < self.sent
            and len(rest) < message.echo_frame_bytes
            and message.echo_frames[self.answered & message.number_bits].startswith(rest)
        ):
            self._partial = rest
            return
        self._exact = False
        super()._frames_received(rest)

    def _frames_received(self, data: bytes) -> None:
        if self._exact:
            self.data_received(data)
        else:
            super()._frames_received(data)

    def _dispatch(self, events: list[tuple[int, bytes]]) -> None:
        echoes = 0
        is_echo = self.message.is_echo
        for opcode, payload in events:
            if opcode == Opcode.TEXT or opcode == Opcode.BINARY:
                if self.answered < self.sent and is_echo(payload, self.answered):
                    self.answered += 1
                    echoes += 1
                else:
                    self._report(echoes)  # the echoes before it keep their order
                    echoes = 0
                    self._wrong_reply(payload)
            elif self._control(opcode, payload):
                self._report(echoes)
                return
        self._report(echoes)

    def _report(self, echoes: int) -> None:
        # One callback per read, not per message: a pipelined read answers with one write.
        if echoes:
            self.listener.messages(self, echoes, self.clock())
        if self.refused and self.refused >= len(self.pending):
            self._skip(len(self.pending))  # all refused: none is awaited, none may time out

    def _wrong_reply(self, payload: bytes) -> None:
        """Group a reply that is not the echo of the oldest outstanding message."""
        number = self.message.echo_number(payload)
        if number is None:
            self._refusal(error_key("reply", reply_group(payload)))
            return
        skipped = self.message.ahead(number, self.answered)
        if skipped >= len(self.pending):
            self.listener.rejected(self, error_key("reply", UNEXPECTED), False)
            return
        self._skip(skipped)
        self.answered += 1
        self.listener.messages(self, 1, self.clock())

    def _refusal(self, key: str) -> None:
        """A reply that is not ours stands for one outstanding message, if any is left unmatched."""
        answers = self.refused < len(self.pending)
        if answers:
            self.refused += 1
        self.listener.rejected(self, key, answers)

    def _skip(self, count: int) -> None:
        """The ``count`` oldest outstanding messages will never be echoed: refused ones, else missing."""
        for _ in range(count):
            self.pending.popleft()
            self.answered += 1
            if self.refused:
                self.refused -= 1
            else:
                self.listener.rejected(self, error_key("reply", MISSING), True)
        self.refused = min(self.refused, len(self.pending))  # frames beyond the outstanding were unsolicited

    def send(self, count: int = 1, due_ns: int | None = None) -> None:
        """Queue this connection's next ``count`` messages; they are written at the end of the loop turn.

        ``due_ns``: when they were due to be sent (open loop: their intended
        time); None stamps them when written. A connection uses one or the other.
        """
        if not self.queued:
            self.batch.add(self)
        self.queued += count
        if due_ns is not None:
            self._due.extend([due_ns] * count)

    def flush(self, now_ns: int) -> None:
        """Write the queued messages in one write (``SendBatch``); dropped if the connection is closing."""
        count = self.queued
        if not count:
            return
        self.queued = 0
        due = self._due
        transport = self._transport
        if transport is None or transport.is_closing() or not self.is_open:
            due.clear()
            return
        pending = self.pending
        if due:
            pending.extend(due)
            due.clear()
        elif count == 1:
            pending.append(now_ns)
        else:
            pending.extend([now_ns] * count)
        message = self.message
        if count == 1:
            transport.write(message.head + message.masked_numbers[self.sent & message.number_bits] + message.tail)
        else:
            transport.write(message.frames(self.sent, count))
        self.sent += count

    def close(self, code: int = CloseCode.NORMAL) -> None:
        """Write what is queued, then start the closing handshake."""
        if self.queued:
            self.flush(self.clock())
        super().close(code)

    def overdue(self, deadline_ns: int) -> bool:
        """Whether the oldest outstanding message was sent before ``deadline_ns`` and is still awaited.

        An overdue message that an unmatched refusal can explain is taken as
        the refused one instead: with every message refused, no echo comes to
        resolve them, and they must not pile up or time out.
        """
        pending = self.pending
        while self.refused and pending and pending[0] < deadline_ns:
            self._skip(1)
        return bool(pending) and pending[0] < deadline_ns


Client = TypeVar("Client", bound=WebSocketClient)


async def _connect(target: Target, factory: Callable[[], Client], tls: ssl.SSLContext | None, timeout: float) -> Client:
    """TCP (and TLS) connect within ``timeout``; raises ``TimeoutError`` or ``OSError``."""
    loop = asyncio.get_running_loop()
    hostname = target.server_hostname if tls is not None else None
    _transport, conn = await asyncio.wait_for(
        loop.create_connection(factory, target.host, target.port, ssl=tls, server_hostname=hostname), timeout
    )
    return conn


async def open_connection(
    target: Target,
    factory: Callable[[], Client],
    listener: Listener,
    clock: Callable[[], int],
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> Client | None:
    """Connect (and TLS handshake); connection errors go to ``listener.failed`` and return None.

    The connection is returned as soon as TCP (and TLS) is up; ``listener.opened``
    fires when the upgrade completes.
    """
    started = clock()
    try:
        conn = await _connect(target, factory, tls, timeout)
    except TimeoutError:
        listener.failed(None, error_key("timeout", "connect"))
        return None
    except OSError as exc:
        listener.failed(None, describe_failure(exc)[0])
        return None
    conn.started_ns = started
    return conn


class _Probe(Listener):
    def __init__(self) -> None:
        self.key = ""

    def failed(self, conn: WebSocketClient | None, key: str) -> None:
        self.key = self.key or key


async def probe(target: Target, tls: ssl.SSLContext | None, timeout: float) -> str:
    """Open and close one connection before a run: '' if it upgrades, else a one-line reason.

    What makes every connection fail (a bad host, TLS, a refused upgrade) is
    then said once, plainly, instead of as a table of thousands of errors.
    """
    listener = _Probe()
    try:
        conn = await _connect(target, lambda: _ProbeConnection(target, listener, time_ns), tls, timeout)
    except TimeoutError:
        return f"cannot connect to {target.host}:{target.port} within {timeout:g} s"
    except OSError as exc:
        return f"{target.host}:{target.port}: {describe_failure(exc)[1]}"
    try:
        ok = await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
    except TimeoutError:
        conn.abort()
        return f"no upgrade response within {timeout:g} s"
    if not ok:
        conn.abort()
        if conn.refusal:
            return f"upgrade refused: {conn.refusal}"
        return f"upgrade failed: {describe_handshake(listener.key)}"
    conn.close()
    try:
        await asyncio.wait_for(asyncio.shield(conn.done), timeout)
    except TimeoutError:
        conn.abort()
    return ""


class _ProbeConnection(WebSocketClient):
    def _dispatch(self, events: list[tuple[int, bytes]]) -> None:
        for opcode, payload in events:
            if self._control(opcode, payload):
                return


_HANDSHAKE_PROBLEMS = {
    "handshake:bad_accept": "the 101 response's Sec-WebSocket-Accept is wrong (not a WebSocket server?)",
    "handshake:subprotocol": "the server chose a subprotocol that was not offered",
    "handshake:eof": "the server closed the connection before answering the upgrade",
    "handshake:oversized": "the upgrade response head is too large",
}


def describe_handshake(key: str) -> str:
    """A readable reason for a ``handshake:*`` error key."""
    return _HANDSHAKE_PROBLEMS.get(key, key)
