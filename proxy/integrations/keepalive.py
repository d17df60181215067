"""Pooled keep-alive HTTP/1.1 exchanges with plain ``http://`` backends: the hot path under ``http.send``.

Layer 4 (IO edge). Answers are parsed by ``httptools`` (MagicStack's binding
of llhttp, Node.js's parser); this module only renders the request head,
pools the connections and bounds what it keeps. ``https://`` and URLs with
credentials go through aiohttp (``proxy.integrations.http``).

Why not aiohttp here: every message on an HTTP or Lambda route is one
request, and on the benchmark machine aiohttp's client (tuned: one session,
no cookie jar, no auto headers, cached URLs) spends about as much CPU on one
64 B POST as the whole websockets + aiohttp peer spends on the message minus
its own aiohttp call, which caps framegate below the issue's 2x target
however little the gateway itself spends. h11, the sans-IO parser beside
wsproto, was measured as costly as aiohttp (pure Python state machine); the
llhttp parser costs a few microseconds. The figures are in
docs/performance.md#http-integrations and in the commit that made this choice.

What it does, and only that:

* one request at a time per connection (no pipelining); connections pooled
  per (host, port) up to ``per_host``, and over all backends up to ``total``
  (an idle connection to another backend is closed to make room); idle ones
  older than ``keepalive_s`` are closed, not reused;
* answers framed by ``Content-Length``, chunked transfer coding or the
  connection's end; 1XX interim answers skipped; the head is capped at
  ``MAX_REQUEST_HEAD_BYTES`` and the body at the caller's ``limit``
  (``TooBig``): a huge answer is refused, never buffered;
* a reused connection that ends before any answer byte (the backend closed
  it while idle: a stale keep-alive) is retried once on a new connection;
* a ``HEAD`` answer ends at its head, and its connection is not reused.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

import httptools

from proxy.limits import (
    INTEGRATION_KEEPALIVE_S,
    INTEGRATION_POOL_CONNECTIONS,
    INTEGRATION_POOL_CONNECTIONS_PER_HOST,
    MAX_REQUEST_HEAD_BYTES,
)

Pairs = tuple[tuple[str, str], ...]
Key = tuple[str, int]
_INTERIM: Final = range(100, 200)
_SWITCHING_PROTOCOLS: Final = 101
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_FRAMING_HEADERS: Final = frozenset({b"content-length", b"transfer-encoding"})
_NOT_FORWARDED: Final = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class AnswerError(Exception):
    """The backend's answer cannot be used (malformed, or cut short after it began)."""


class TooBig(AnswerError):
    """The answer is longer than the cap."""


class _Stale(AnswerError):
    """The connection ended before any byte of an answer."""


class Answer:
    """A complete answer: ``status``, ``headers`` (in order), ``body``; ``keep_alive``: the connection may be reused."""

    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self, status: int, headers: Pairs, body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


def render_head(method: str, target: str, host: str, headers: Pairs, length: int) -> bytes:
    """The request head: request line, Host, the mapped headers (framing ones are ours), Content-Length."""
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers if name.lower() not in _NOT_FORWARDED)
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One pooled connection; at most one exchange at a time. Also the parser's callback target."""

    def __init__(self, pool: KeepAlivePool, key: Key) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._limit = 0
        self._head_bytes = 0
        self._head_only = False
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self._headers_done = False
        self._framed = False
        self._started = False
        self._unasked = False
        self.idle_since = 0.0
        self.used = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def exchange(self, data: bytes, limit: int, head_only: bool) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._limit = limit
        self._head_only = head_only
        self._begin()
        self._answer = answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return answer

    def _begin(self) -> None:
        self._head_bytes = 0
        self._headers = []
        self._body = bytearray()
        self._headers_done = self._framed = self._started = False

    # httptools callbacks (names fixed by httptools.parser.protocol.HTTPProtocol)

    def on_message_begin(self) -> None:
        if self._answer is None:
            self._unasked = True  # a second answer behind the first: the next exchange would read it

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if name.lower() in _FRAMING_HEADERS:
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        status = self._parser.get_status_code()
        if status in _INTERIM:
            return
        if self._head_only:
            self._finish(keep_alive=False)  # llhttp would wait for the body a HEAD answer announces

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > self._limit:
            raise TooBig(f"the answer is longer than {self._limit} bytes")
        self._body += body

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status in _INTERIM and status != _SWITCHING_PROTOCOLS:
            self._begin()  # an interim answer: the real one follows
            self._started = True
            return
        self._finish(keep_alive=self._parser.should_keep_alive())

    def _finish(self, *, keep_alive: bool) -> None:
        answer = self._answer
        if answer is None or answer.done():
            return
        self._answer = None
        status = self._parser.get_status_code()
        answer.set_result(Answer(status, tuple(self._headers), bytes(self._body), keep_alive))

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        answer = self._answer
        if answer is None or answer.done():
            self.abort()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        self._started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, AnswerError) else AnswerError(str(exc)))
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(AnswerError(f"the answer cannot be read: {type(exc).__name__}: {exc}"))
            return
        if self._unasked:
            self.abort()
            return
        if not self._headers_done:
            # Until the head is complete every byte is head: bound what the header list may hold.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
                self._fail(AnswerError(f"the answer's head is longer than {MAX_REQUEST_HEAD_BYTES} bytes"))

    def expire(self) -> None:
        """The exchange's deadline passed: fail it with ``TimeoutError`` and drop the connection."""
        self._fail(TimeoutError())

    def _fail(self, exc: Exception) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        answer = self._answer
        if answer is None or answer.done():
            return
        status = self._parser.get_status_code() if self._headers_done else 0
        if self._headers_done and not self._framed and status not in _NO_BODY_STATUSES:
            self._finish(keep_alive=False)  # a body read until the connection's end is complete now
        elif not self._started:
            self._fail(_Stale("the backend closed the connection before answering"))
        else:
            self._fail(AnswerError("the backend closed the connection before its answer was complete"))

    def abort(self) -> None:
        """Close now; it stops counting against the pool's bounds at once."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._pool.forget(self)


class KeepAlivePool:
    """Keep-alive connections to plain ``http://`` backends (see the module doc), made inside the running loop.

    Args:
        per_host: connections in use or idle to one backend; more requests wait their turn.
        total: connections over all backends.
        keepalive_s: an idle connection older than this is closed, not reused.
    """

    def __init__(
        self,
        per_host: int = INTEGRATION_POOL_CONNECTIONS_PER_HOST,
        total: int = INTEGRATION_POOL_CONNECTIONS,
        keepalive_s: float = INTEGRATION_KEEPALIVE_S,
    ) -> None:
        self._per_host = per_host
        self._total = total
        self._keepalive_s = keepalive_s
        self._idle: dict[Key, list[_Connection]] = {}
        self._open: dict[Key, set[_Connection]] = {}
        self._count = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def open_connections(self) -> int:
        """Connections open or opening, over all backends."""
        return self._count

    def forget(self, connection: _Connection) -> None:
        """``connection`` is gone: it no longer counts against the bounds."""
        idle = self._idle.get(connection.key)
        if idle is not None and connection in idle:
            idle.remove(connection)
        opened = self._open.get(connection.key)
        if opened is not None and connection in opened:
            opened.discard(connection)
            self._count -= 1
        self._wake()

    def _wake(self) -> None:
        # Every waiter re-checks its own backend's bound: waking only the first could
        # wake one that still cannot go while another that could keeps waiting.
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _reusable(self, key: Key, now: float) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._keepalive_s:
                return connection
            connection.abort()
        return None

    def _make_room(self) -> bool:
        """Close one idle connection (any backend) so that a new one fits the total; False if none is idle."""
        for idle in self._idle.values():
            if idle:
                idle.pop(0).abort()
                return True
        return False

    async def _acquire(self, key: Key) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:
            connection = self._reusable(key, loop.time())
            if connection is not None:
                return connection
            opened = self._open.setdefault(key, set())
            if len(opened) < self._per_host and (self._count < self._total or self._make_room()):
                return await self._connect(key, opened)
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            await waiter

    async def _connect(self, key: Key, opened: set[_Connection]) -> _Connection:
        placeholder = _Connection(self, key)
        opened.add(placeholder)  # counts against the bounds while connecting
        self._count += 1
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self, key), key[0], key[1]
            )
        except BaseException:
            self.forget(placeholder)
            raise
        opened.discard(placeholder)
        opened.add(connection)
        return connection

    def _release(self, connection: _Connection, reusable: bool) -> None:
        if reusable and not connection.closed:
            connection.used = True
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(connection.key, []).append(connection)
            self._wake()
        else:
            connection.abort()

    async def request(self, key: Key, data: bytes, limit: int, timeout_s: float, *, head_only: bool = False) -> Answer:
        """Send ``data`` (a rendered request) to ``key`` = (host, port) and read the answer within ``timeout_s``.

        Raises:
            TimeoutError: no complete answer within ``timeout_s`` (waiting for a connection included).
            AnswerError: the answer cannot be used (``TooBig`` past ``limit``).
            OSError: the backend cannot be reached or reset the connection.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for _ in range(2):
            connection = self._reusable(key, loop.time())
            if connection is None:
                async with asyncio.timeout_at(deadline):
                    connection = await self._acquire(key)
            reused = connection.used
            answer_or_error = connection.exchange(data, limit, head_only)
            # One timer on the exchange rather than an asyncio.timeout scope: the common
            # case (an idle connection at hand) costs a call_at and its cancel per request.
            timer = loop.call_at(deadline, connection.expire)
            try:
                answer = await answer_or_error
            except _Stale:
                if reused:
                    continue  # the backend closed it while idle: once more on a new connection
                raise
            except BaseException:
                connection.abort()  # timed out or cancelled mid-exchange: its answer may still come
                raise
            finally:
                timer.cancel()
            self._release(connection, answer.keep_alive)
            return answer
        raise AnswerError("the backend closed two connections without answering")

    def close(self) -> None:
        """Close every connection (at shutdown)."""
        for connections in list(self._open.values()):
            for connection in list(connections):
                connection.abort()
        self._idle.clear()
