"""``--workers N`` without ``--redis``: @connections calls reach a connection held by a sibling worker.

Layer 4. Workers share the data port, so a PostToConnection can arrive at
any of them while its client is held by one. The supervisor gives each
worker a Unix socket in a private directory (mode 0700: only the user the
workers run as can connect) and every worker the paths of the others
(``Config.route_socket``, ``Config.sibling_sockets``).

A call whose connection is not open here is sent to every sibling at once,
one connection each carrying one ``proxy.cluster.envelope`` call and its
reply, a line each. A sibling that does not hold the connection answers 410,
exactly as for a local call; the holder's answer is the one relayed, unchanged.
No sibling holding it (or none running: a dead worker's connections died with
it) is ``GoneException``; a sibling that did not answer within
``ROUTE_REPLY_TIMEOUT_S`` while nobody else held it is ``RouteTimeout``.

Nothing is kept per connection (``opened``/``closed`` do nothing): asking
the N - 1 siblings costs a few Unix-socket round trips per routed call,
against a registry write per connect on the connect path. With ``--redis``
the registry (``proxy.cluster.registry``) routes between workers and nodes
alike and this is not used (docs/cluster.md#registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable

from proxy.cluster.envelope import Answer, CallReply, CallRequest, EnvelopeError, Operation, decode, encode
from proxy.cluster.registry import Handler, run_handler
from proxy.errors import GoneException, RouteTimeout
from proxy.ids import request_id
from proxy.limits import MAX_ENVELOPE_BYTES, ROUTE_REPLY_TIMEOUT_S

logger = logging.getLogger(__name__)

LINE_END = b"\n"
"""Ends each envelope on a sibling connection (compact JSON has no raw newline)."""


class SiblingRouter:
    """This worker's side: serves its siblings' calls and sends its own calls to them.

    Args:
        path: this worker's socket.
        siblings: the other workers' sockets.
        handler: runs calls on this worker's connections (``proxy.server.management.serve_routed``).
    """

    def __init__(
        self,
        path: str,
        siblings: Iterable[str],
        handler: Handler,
        *,
        reply_timeout_s: float = ROUTE_REPLY_TIMEOUT_S,
    ) -> None:
        self.path = path
        self.siblings = tuple(siblings)
        self.handler = handler
        self.reply_timeout_s = reply_timeout_s
        self.node_id = f"worker:{os.getpid()}"
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on ``path`` (a socket left by this worker's previous life is replaced)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_ENVELOPE_BYTES + 1)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def opened(self, connection_id: str) -> None:
        """Nothing to note: siblings are asked when a call comes."""

    def closed(self, connection_id: str) -> None:
        """Nothing to note: siblings are asked when a call comes."""

    async def call(self, operation: Operation) -> Answer:
        """The holder's answer to ``operation``, whichever sibling holds its connection.

        Raises:
            GoneException: no running sibling holds it.
            RouteTimeout: a sibling did not answer in time and no other held it.
        """
        request = encode(CallRequest(request_id(), self.node_id, operation)) + LINE_END
        asks = [asyncio.ensure_future(self._ask(path, request)) for path in self.siblings]
        try:
            async with asyncio.timeout(self.reply_timeout_s):
                for asked in asyncio.as_completed(asks):
                    answer = await asked
                    if answer is not None and answer.status != GoneException.status:
                        return answer
        except TimeoutError:
            raise RouteTimeout(f"A worker did not answer within {self.reply_timeout_s:g} s") from None
        finally:
            for ask in asks:
                ask.cancel()
        raise GoneException(f"connection {operation.connection_id} is not open")

    async def _ask(self, path: str, request: bytes) -> Answer | None:
        """One sibling's answer; None if it is not running (restarting: its connections are gone)."""
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=MAX_ENVELOPE_BYTES + 1)
        except OSError:
            return None
        try:
            writer.write(request)
            reply = decode(await reader.readline())
            if not isinstance(reply, CallReply):
                raise EnvelopeError("a call where a reply was expected")
            return reply.answer
        except (OSError, ValueError) as exc:  # EnvelopeError, an over-long line; a sibling dying mid-call
            logger.warning("worker at %s gave no usable answer: %s", path, exc)
            return None
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A sibling's call: one request line in, one reply line out."""
        try:
            async with asyncio.timeout(self.reply_timeout_s):
                message = decode(await reader.readline())
            if not isinstance(message, CallRequest):
                raise EnvelopeError("a reply where a call was expected")
            answer = await run_handler(self.handler, message.operation)
            writer.write(encode(CallReply(message.request_id, answer)) + LINE_END)
            await writer.drain()
        except (OSError, ValueError, TimeoutError) as exc:
            logger.warning("dropped a sibling's @connections call: %s", exc)
        finally:
            writer.close()
