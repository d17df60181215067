"""The data port beyond its means: connections over ``--max-connections``, and accept errors.

Layer 4. ``Gateway``'s protocol factory hands a connection over the cap a
``Refusal`` instead of a ``ClientConnection``: it answers 503 as soon as the
request arrives and parses nothing; its descriptor is held only until the client closes, at most
``REFUSAL_LINGER_S``, so a flood over the cap cannot take the descriptors
served connections, the admin port and upstreams need (the cap is derived
from the fd limit for that; see ``proxy.limits.FDS_PER_CONNECTION``).

Accept errors (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) reach the loop's
exception handler, where ``AcceptErrors`` counts them
(``framegate_accept_errors_total``) and logs at most one line per interval
with the count since the last. asyncio's loop reports each one ("socket.accept()
out of system resource") and retries a second later; libuv, under uvloop, takes
EMFILE itself (it closes a spare descriptor, accepts and drops the pending
connections) and reports only what that cannot absorb, so the cap is what keeps
the gateway from that edge.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

from proxy.handshake import ServerHandshake
from proxy.limits import ACCEPT_ERROR_LOG_INTERVAL_S, REFUSAL_LINGER_S
from proxy.metrics import FastCounter

logger = logging.getLogger(__name__)

OVER_CAPACITY_MESSAGE = "the gateway is at its connection limit: retry later"
_RESPONSE = ServerHandshake.reject(HTTPStatus.SERVICE_UNAVAILABLE, OVER_CAPACITY_MESSAGE)
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ASYNCIO_ACCEPT_MESSAGE = "socket.accept() out of system resource"

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class RateLimitedLog:
    """A warning logged at most once per ``interval_s``, carrying how many events it stands for."""

    def __init__(self, message: str, clock: Callable[[], float], interval_s: float = ACCEPT_ERROR_LOG_INTERVAL_S):
        self._message = message
        self._clock = clock
        self._interval_s = interval_s
        self._next_s = float("-inf")
        self._pending = 0

    def event(self, *args: object) -> None:
        """Count one event; log (with the count) if the interval since the last line has passed."""
        self._pending += 1
        now = self._clock()
        if now < self._next_s:
            return
        logger.warning(self._message + " (%d since the last report)", *args, self._pending)
        self._pending = 0
        self._next_s = now + self._interval_s


class Refusal:
    """A connection over the cap: 503 and a FIN once its request starts to arrive; closed when the
    client closes, or after ``REFUSAL_LINGER_S`` whatever it does.

    An ``asyncio.Protocol`` by shape. The request is not parsed (the answer
    does not depend on it) but read: closing with it unread would reset the
    connection, and an answer sent before the request confuses clients.
    """

    __slots__ = ("_timer", "_transport")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are one by shape only
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._transport = None  # answered: later bytes of the request are dropped
        transport.write(_RESPONSE)
        if transport.can_write_eof():
            transport.write_eof()

    def eof_received(self) -> bool:
        return False  # the client has read the answer and closed: close too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class AcceptErrors:
    """The loop's exception handler in front of the previous one: counts and logs accept errors.

    Args:
        counter: ``framegate_accept_errors_total``.
        clock: the loop's ``time`` (seconds), for the log's rate limit.
        fallback: the handler for everything else (the loop's default).
    """

    def __init__(self, counter: FastCounter, clock: Callable[[], float], fallback: ExceptionHandler) -> None:
        self._counter = counter
        self._fallback = fallback
        self._log = RateLimitedLog("data port: accept failed: %s", clock)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == _ASYNCIO_ACCEPT_MESSAGE or (
            isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES
        ):
            self._counter.inc()
            self._log.event(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
            return
        self._fallback(loop, context)


def install_accept_errors(loop: asyncio.AbstractEventLoop, counter: FastCounter) -> AcceptErrors:
    """Put an ``AcceptErrors`` in front of ``loop``'s current exception handler."""
    previous = loop.get_exception_handler()
    handler = AcceptErrors(
        counter, loop.time, previous or (lambda loop, context: loop.default_exception_handler(context))
    )
    loop.set_exception_handler(handler)
    return handler


_OVER_CAPACITY_LOG = RateLimitedLog("data port: %d connections open (--max-connections): answering 503", time.monotonic)


def refuse(cap: int) -> Refusal:
    """The protocol for a connection over ``cap``; logged, rate-limited."""
    _OVER_CAPACITY_LOG.event(cap)
    return Refusal()
