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
import errno
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast
from urllib.parse import urlsplit

from proxy.bench.message import MISSING, UNEXPECTED, Message, reply_group
from proxy.codec import FrameDecoder, FrameEncoder
from proxy.errors import ProtocolError
from proxy.frames import CloseCode, Opcode, parse_close
from proxy.handshake import accept_token, new_key
from proxy.limits import MAX_REQUEST_HEAD_BYTES

_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect and what to ask for, parsed once from ``--url``."""

    host: str
    port: int
    path: str
    host_header: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError(f"only ws:// URLs are supported, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"URL has no host: {url!r}")
        port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname, port, path, parts.netloc)


def error_key(kind: str, code: int | str) -> str:
    """How errors are grouped: ``close:1009``, ``http:429``, ``connect:ECONNREFUSED``, ``timeout:connect``,
    ``reply:throttled``."""
    return f"{kind}:{code}"


def _os_error_key(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return error_key("connect", name)


class Listener:
    """What a connection reports to its driver; the driver overrides what it needs."""

    def opened(self, conn: BenchConnection) -> None: ...

    def messages(self, conn: BenchConnection, count: int, received_ns: int) -> None:
        """``count`` echoes of the oldest outstanding messages arrived in one read at ``received_ns``."""

    def rejected(self, conn: BenchConnection, key: str, answers: bool) -> None:
        """A reply that is not an echo of an outstanding message, grouped as ``key``.

        ``answers``: it stands for an outstanding message that will never be
        echoed (a gateway error frame, or an echo found missing); the connection
        drops that message's send time itself.
        """

    def failed(self, conn: BenchConnection | None, key: str) -> None:
        """``conn`` is None when no socket was ever connected."""

    def closed(self, conn: BenchConnection) -> None: ...


class BenchConnection(asyncio.Protocol):
    """One client connection: upgrade, then numbered pre-encoded messages out and echoes in.

    Args:
        target: where and what path to upgrade.
        listener: receives ``opened``/``messages``/``rejected``/``failed``/``closed``.
        message: the message this connection sends, numbered from 0.
        clock: nanosecond monotonic clock, injected by the driver.
    """

    def __init__(self, target: Target, listener: Listener, message: Message, clock: Callable[[], int]) -> None:
        self.target = target
        self.listener = listener
        self.message = message
        self.clock = clock
        self.pending: deque[int] = deque()
        """Send (or scheduled send) times of messages not yet answered, oldest first."""
        self.sent = 0
        self.answered = 0
        """Messages answered so far: the number of the oldest outstanding one."""
        self.refused = 0
        """Gateway error frames not yet matched to an outstanding message (see the module docstring)."""
        self.started_ns = clock()
        self.connect_ns = 0
        """Connect plus handshake time, set once open."""
        self.is_open = False
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[bool] = loop.create_future()
        """True once upgraded; False if the connection failed before that."""
        self.done: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._nonce = new_key()
        self._decoder = FrameDecoder(server_side=False)
        self._encoder = FrameEncoder(client_side=True)
        self._closing = False
        self._failed = False

    # --- asyncio.Protocol -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._transport.write(self._request())

    def data_received(self, data: bytes) -> None:
        if self.is_open:
            self._frames_received(data)
        else:
            self._head_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.is_open and not self._closing and not self._failed:
            self.fail(error_key("close", CloseCode.ABNORMAL))
        elif not self.is_open and not self._failed:
            self.fail(error_key("handshake", "eof"))
        self.is_open = False
        self._transport = None
        if not self.done.done():
            self.done.set_result(None)
        self.listener.closed(self)

    # --- handshake --------------------------------------------------------------
    def _request(self) -> bytes:
        t = self.target
        return (
            f"GET {t.path} HTTP/1.1\r\nHost: {t.host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

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
        status = self._check_response(head)
        if status != HTTPStatus.SWITCHING_PROTOCOLS:
            self.fail(error_key("http", status))
            return
        self.is_open = True
        self.connect_ns = self.clock() - self.started_ns
        self.ready.set_result(True)
        self.listener.opened(self)
        if rest:
            self._frames_received(rest)

    def _check_response(self, head: str) -> int:
        """The status code; a 101 whose Sec-WebSocket-Accept is wrong counts as 0 (not an upgrade)."""
        lines = head.split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            return 0
        if status != HTTPStatus.SWITCHING_PROTOCOLS:
            return status
        expected = accept_token(self._nonce)
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-accept":
                return status if value.strip() == expected else 0
        return 0

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
            elif opcode == Opcode.PING:
                self._write(self._encoder.pong(payload))
            elif opcode == Opcode.CLOSE:
                self._report(echoes)
                self._close_received(payload)
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

    def _close_received(self, payload: bytes) -> None:
        code, _reason = parse_close(payload)
        if not self._closing:
            self._closing = True
            self._write(self._encoder.close(None if code == CloseCode.NO_STATUS else code))
            self.fail(error_key("close", code))
        if self._transport is not None:
            self._transport.close()

    # --- driver API -----------------------------------------------------------------
    def send(self, stamp_ns: int, count: int = 1) -> None:
        """Write this connection's next ``count`` messages in one write.

        ``stamp_ns`` is when they were (or were due to be) sent.
        """
        assert self._transport is not None
        if count == 1:
            self.pending.append(stamp_ns)
            self._transport.write(self.message.frame(self.sent))
        else:
            self.pending.extend([stamp_ns] * count)
            self._transport.write(self.message.frames(self.sent, count))
        self.sent += count

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

    def close(self, code: int = CloseCode.NORMAL) -> None:
        """Start the closing handshake (the server's close frame ends it)."""
        if self._closing or self._transport is None:
            return
        self._closing = True
        self._write(self._encoder.close(code))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def fail(self, key: str, close_code: int | None = None) -> None:
        """Report ``key`` once and drop the connection (after a close frame when ``close_code``)."""
        if self._failed:
            return
        self._failed = True
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


async def open_connection(
    target: Target, listener: Listener, message: Message, clock: Callable[[], int], timeout: float
) -> BenchConnection | None:
    """Connect; connection errors go to ``listener.failed`` and return None.

    The connection is returned as soon as TCP is up; ``listener.opened`` fires
    when the upgrade completes.
    """
    loop = asyncio.get_running_loop()
    started = clock()
    try:
        _transport, conn = await asyncio.wait_for(
            loop.create_connection(lambda: BenchConnection(target, listener, message, clock), target.host, target.port),
            timeout,
        )
    except TimeoutError:
        listener.failed(None, error_key("timeout", "connect"))
        return None
    except OSError as exc:
        listener.failed(None, _os_error_key(exc))
        return None
    conn.started_ns = started
    return conn
