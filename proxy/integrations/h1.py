"""A keep-alive HTTP/1.1 client for plain ``http://`` integration backends: the hot path under ``http.send``.

Layer 3 core (``ResponseParser``, sans-IO) with its IO edge (``H1Pool``).
Why hand-written: every message on an HTTP or Lambda route is one request,
and aiohttp's client spends 170-180 us of CPU on one 64 B POST on the
benchmark machine (more than a websockets + aiohttp relay spends on the whole
message); this client writes one pre-rendered request and frames the answer
in a few string operations. It does only what integrations need, and says so:

* ``http://`` only, one request at a time per connection (no pipelining),
  keep-alive connections pooled per (host, port) up to a bound, idle ones
  closed after ``INTEGRATION_KEEPALIVE_S``;
* answers framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the
  connection's end; 1XX interim answers skipped; head and body capped;
* a reused connection that ends before any answer byte (the backend closed it
  while idle) is retried once on a new connection, as browsers do.

``https://`` and anything else stays with aiohttp (``proxy.integrations.http.send``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

from proxy.limits import INTEGRATION_KEEPALIVE_S, INTEGRATION_POOL_CONNECTIONS_PER_HOST, MAX_REQUEST_HEAD_BYTES

Pairs = tuple[tuple[str, str], ...]
_CRLF: Final = b"\r\n"
_HEAD_END: Final = b"\r\n\r\n"
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_CONTINUE_MIN, _FINAL_MIN = 100, 200
_HEX: Final = 16


class H1Error(Exception):
    """The backend's answer cannot be framed (malformed head, bad chunk, conflicting lengths)."""


class TooBig(H1Error):
    """The answer is longer than the cap."""


class ResponseParser:
    """One HTTP/1.1 answer from bytes, sans-IO: ``feed`` until it returns True.

    Args:
        limit: most body bytes accepted (``TooBig`` past it).
        head_limit: most head bytes accepted.
        head_request: the request was HEAD (an answer without a body).
    """

    __slots__ = (
        "_buffer",
        "_chunk_left",
        "_head_limit",
        "_head_request",
        "_length",
        "_limit",
        "_mode",
        "body",
        "headers",
        "keep_alive",
        "status",
    )

    _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _UNTIL_CLOSE, _DONE = range(7)

    def __init__(self, limit: int, head_limit: int = MAX_REQUEST_HEAD_BYTES, head_request: bool = False) -> None:
        self._limit = limit
        self._head_limit = head_limit
        self._head_request = head_request
        self._buffer = bytearray()
        self._mode = self._HEAD
        self._length = 0
        self._chunk_left = 0
        self.status = 0
        self.headers: Pairs = ()
        self.body = bytearray()
        self.keep_alive = False

    @property
    def started(self) -> bool:
        """Whether any byte of an answer arrived."""
        return bool(self._buffer) or self._mode != self._HEAD

    @property
    def until_close(self) -> bool:
        """The body ends with the connection."""
        return self._mode == self._UNTIL_CLOSE

    def feed(self, data: bytes) -> bool:
        """Take the next bytes; True once the answer is complete.

        Raises:
            H1Error: the answer cannot be framed; ``TooBig`` past a cap.
        """
        self._buffer += data
        while True:
            mode = self._mode
            if mode == self._HEAD:
                if not self._head():
                    return False
            elif mode == self._LENGTH:
                return self._take_length()
            elif mode == self._CHUNK_SIZE:
                if not self._chunk_size():
                    return False
            elif mode == self._CHUNK_DATA:
                if not self._chunk_data():
                    return False
            elif mode == self._TRAILERS:
                return self._trailers()
            elif mode == self._UNTIL_CLOSE:
                self._append(self._buffer)
                self._buffer.clear()
                return False
            else:
                return True

    def _append(self, data: bytes | bytearray) -> None:
        if len(self.body) + len(data) > self._limit:
            raise TooBig(f"the answer is longer than {self._limit} bytes")
        self.body += data

    def _head(self) -> bool:
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            if len(self._buffer) > self._head_limit:
                raise H1Error(f"the answer's head is longer than {self._head_limit} bytes")
            return False
        if end > self._head_limit:
            raise H1Error(f"the answer's head is longer than {self._head_limit} bytes")
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        del self._buffer[: end + len(_HEAD_END)]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or rest[3:4] not in ("", " "):
            raise H1Error(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        close = version == "HTTP/1.0"
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise H1Error(f"malformed header line {line[:80]!r}")
            value = value.strip()
            headers.append((name, value))
            lowered = name.lower()
            if lowered == "content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    raise H1Error(f"bad Content-Length {value[:40]!r}")
                length = int(value)
            elif lowered == "transfer-encoding":
                chunked = value.lower() == "chunked"
                if not chunked:
                    raise H1Error(f"unsupported Transfer-Encoding {value[:40]!r}")
            elif lowered == "connection":
                tokens = {token.strip().lower() for token in value.split(",")}
                close = "close" in tokens or (close and "keep-alive" not in tokens)
        if _CONTINUE_MIN <= status < _FINAL_MIN:
            return True  # an interim answer: the real one follows
        self.status = status
        self.headers = tuple(headers)
        self.keep_alive = not close
        if self._head_request or status in _NO_BODY_STATUSES:
            self._mode = self._DONE
        elif chunked:
            self._mode = self._CHUNK_SIZE
        elif length is not None:
            if length > self._limit:
                raise TooBig(f"the answer is longer than {self._limit} bytes")
            self._length = length
            self._mode = self._LENGTH
        else:
            self.keep_alive = False
            self._mode = self._UNTIL_CLOSE
        return True

    def _take_length(self) -> bool:
        needed = self._length - len(self.body)
        if len(self._buffer) > needed:
            raise H1Error("the backend sent more than its Content-Length")
        self.body += self._buffer
        self._buffer.clear()
        if len(self.body) == self._length:
            self._mode = self._DONE
            return True
        return False

    def _chunk_size(self) -> bool:
        end = self._buffer.find(_CRLF)
        if end < 0:
            if len(self._buffer) > self._head_limit:
                raise H1Error("a chunk size line is too long")
            return False
        text = self._buffer[:end].split(b";", 1)[0].strip()
        del self._buffer[: end + len(_CRLF)]
        try:
            size = int(text, _HEX)
        except ValueError:
            raise H1Error(f"bad chunk size {bytes(text[:20])!r}") from None
        if size < 0:
            raise H1Error("negative chunk size")
        if size == 0:
            self._mode = self._TRAILERS
        else:
            if len(self.body) + size > self._limit:
                raise TooBig(f"the answer is longer than {self._limit} bytes")
            self._chunk_left = size
            self._mode = self._CHUNK_DATA
        return True

    def _chunk_data(self) -> bool:
        needed = self._chunk_left + len(_CRLF)
        if len(self._buffer) < needed:
            return False
        if self._buffer[self._chunk_left : needed] != _CRLF:
            raise H1Error("a chunk does not end with CRLF")
        self._append(self._buffer[: self._chunk_left])
        del self._buffer[:needed]
        self._mode = self._CHUNK_SIZE
        return True

    def _trailers(self) -> bool:
        if self._buffer.startswith(_CRLF):
            del self._buffer[: len(_CRLF)]
        else:
            end = self._buffer.find(_HEAD_END)
            if end < 0:
                if len(self._buffer) > self._head_limit:
                    raise H1Error("the trailers are too long")
                return False
            del self._buffer[: end + len(_HEAD_END)]
        if self._buffer:
            raise H1Error("the backend sent more than its chunked body")
        self._mode = self._DONE
        return True

    def finish(self) -> None:
        """The connection ended: complete a body read until close, else fail.

        Raises:
            H1Error: the answer was cut short.
        """
        if self._mode == self._UNTIL_CLOSE:
            self._mode = self._DONE
        elif self._mode != self._DONE:
            raise H1Error("the backend closed the connection before its answer was complete")


def render_request(method: str, target: str, host: str, headers: Pairs, body: bytes) -> bytes:
    """The request bytes: request line, Host, the mapped headers, Content-Length, then the body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers if name.lower() not in ("host", "content-length"))
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --- IO edge -----------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One pooled keep-alive connection; at most one exchange at a time."""

    def __init__(self, pool: H1Pool, key: tuple[str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser: ResponseParser | None = None
        self._answer: asyncio.Future[ResponseParser] | None = None
        self.idle_since = 0.0
        self.used = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def exchange(self, data: bytes, parser: ResponseParser) -> asyncio.Future[ResponseParser]:
        assert self.transport is not None
        self._parser = parser
        self._answer = answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return answer

    def data_received(self, data: bytes) -> None:
        parser, answer = self._parser, self._answer
        if parser is None or answer is None or answer.done():
            self.abort()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        try:
            complete = parser.feed(data)
        except H1Error as exc:
            answer.set_exception(exc)
            self.abort()
            return
        if complete:
            self._parser = self._answer = None
            answer.set_result(parser)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        parser, answer = self._parser, self._answer
        self._parser = self._answer = None
        if parser is None or answer is None or answer.done():
            return
        try:
            parser.finish()
        except H1Error as error:
            answer.set_exception(Cut(str(error), started=parser.started))
            return
        answer.set_result(parser)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Cut(H1Error):
    """The connection ended mid-answer; ``started``: whether any answer byte came."""

    def __init__(self, message: str, *, started: bool) -> None:
        super().__init__(message)
        self.started = started


class H1Pool:
    """Keep-alive connections to plain ``http://`` backends, per (host, port), made inside the running loop.

    Args:
        per_host: connections in use or idle to one backend; more requests wait their turn.
        keepalive_s: an idle connection older than this is closed, not reused.
    """

    def __init__(
        self, per_host: int = INTEGRATION_POOL_CONNECTIONS_PER_HOST, keepalive_s: float = INTEGRATION_KEEPALIVE_S
    ) -> None:
        self._per_host = per_host
        self._keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: dict[tuple[str, int], set[_Connection]] = {}
        self._waiters: dict[tuple[str, int], deque[asyncio.Future[None]]] = {}

    def forget(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.key)
        if idle is not None and connection in idle:
            idle.remove(connection)
        self._open.get(connection.key, set()).discard(connection)
        self._wake(connection.key)

    def _wake(self, key: tuple[str, int]) -> None:
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _acquire(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:
            idle = self._idle.get(key)
            now = loop.time()
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < self._keepalive_s:
                    return connection
                connection.abort()
            opened = self._open.setdefault(key, set())
            if len(opened) < self._per_host:
                placeholder = _Connection(self, key)
                opened.add(placeholder)  # counts against the bound while connecting
                try:
                    _, connection = await loop.create_connection(lambda: _Connection(self, key), key[0], key[1])
                except BaseException:
                    opened.discard(placeholder)
                    self._wake(key)
                    raise
                opened.discard(placeholder)
                opened.add(connection)
                return connection
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(key, deque()).append(waiter)
            await waiter

    def _release(self, connection: _Connection, reusable: bool) -> None:
        if reusable and not connection.closed:
            connection.used = True
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(connection.key, []).append(connection)
            self._wake(connection.key)
        else:
            connection.abort()

    async def request(
        self, host: str, port: int, data: bytes, limit: int, *, head_request: bool = False
    ) -> ResponseParser:
        """Send ``data`` (a rendered request) to ``host:port`` and read the answer.

        Raises:
            H1Error: the answer cannot be framed (``TooBig`` past ``limit``).
            OSError: the backend cannot be reached or reset the connection.
        """
        key = (host, port)
        for _ in range(2):
            connection = await self._acquire(key)
            reused = connection.used
            parser = ResponseParser(limit, head_request=head_request)
            try:
                answer = await connection.exchange(data, parser)
            except Cut as cut:
                connection.abort()
                if reused and not cut.started:
                    continue  # the backend closed it while idle: once more on a new connection
                raise
            except BaseException:
                connection.abort()  # timed out or cancelled mid-exchange: its answer may still come
                raise
            self._release(connection, answer.keep_alive)
            return answer
        raise H1Error("the backend closed two connections without answering")

    def close(self) -> None:
        for connections in self._open.values():
            for connection in list(connections):
                connection.abort()
        self._idle.clear()
