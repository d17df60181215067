"""Back-pressure: pause reading one side while the other cannot keep up.

Layer 4. A transport's ``pause_writing`` (its buffer passed the high-water
mark) pauses reading on the peer connection; ``resume_writing`` (below the
low-water mark) resumes it. A connection may be paused for several reasons at
once (several upstreams, an upstream still connecting), so pauses are counted
and reading resumes only when the last one ends (uvicorn's ``FlowControl``).
"""

from __future__ import annotations

import asyncio


class FlowControl:
    """Counted pauses of one transport's reading."""

    __slots__ = ("_pauses", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pauses = 0

    @property
    def paused(self) -> bool:
        return self._pauses > 0

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
