"""Back-pressure: pause reading one side while the other cannot keep up.

Layer 4. A transport's ``pause_writing`` (its buffer passed the high-water
mark) pauses reading on the peer connection; ``resume_writing`` (below the
low-water mark) resumes it. A connection may be paused for several reasons at
once (several upstreams, an upstream still connecting), so pauses are counted
and reading resumes only when the last one ends (uvicorn's ``FlowControl``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FlowControl:
    """Counted pauses of one transport's reading."""

    __slots__ = ("_pauses", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pauses = 0

    def pause(self) -> None:
        self._pauses += 1
        if self._pauses == 1 and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._pauses == 0:
            return
        self._pauses -= 1
        if self._pauses == 0 and not self._transport.is_closing():
            self._transport.resume_reading()


class Outbox:
    """All writes to one transport, coalesced while corked into one ``write`` (one syscall).

    The gateway corks the *other* side's outbox while it handles one read, so
    the 32 messages of a pipelined read leave in one send instead of 32. Every
    write to the transport goes through here, so order is kept; ``flush``
    before closing it.
    """

    __slots__ = ("_corked", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._corked = False

    def write(self, data: bytes) -> None:
        if self._corked:
            self._pending.append(data)
        else:
            self._transport.write(data)

    @property
    def write_through(self) -> Callable[[bytes], None]:
        """The transport's own ``write``, one call shorter: for callers that know nothing is corked.

        The gateway's relay fast path runs between reads, when no outbox is
        corked (only a read on the per-message path corks, and uncorks before
        it returns), so writing around the outbox keeps the order.
        """
        return self._transport.write

    def cork(self) -> None:
        self._corked = True

    def uncork(self) -> None:
        self._corked = False
        self.flush()

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
