"""Back-pressure between the two legs of a relay (uvicorn's ``FlowControl`` idea).

Layer 4. A transport's reading is paused for named reasons (the peer's write
buffer is above its high-water mark, an upstream is still connecting) and
resumes only when no reason is left, so two independent causes never undo
each other.
"""

from __future__ import annotations

import asyncio


class FlowControl:
    """Pause/resume reading one transport for a set of reasons.

    Args:
        transport: the transport whose reading is controlled.
    """

    __slots__ = ("_reasons", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._reasons: set[str] = set()

    @property
    def paused(self) -> bool:
        return bool(self._reasons)

    def pause(self, reason: str) -> None:
        """Stop reading until ``resume(reason)`` (and every other reason) is lifted."""
        if not self._reasons and not self._transport.is_closing():
            self._transport.pause_reading()
        self._reasons.add(reason)

    def resume(self, reason: str) -> None:
        """Lift ``reason``; reading resumes when it was the last one."""
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons and not self._transport.is_closing():
            self._transport.resume_reading()
