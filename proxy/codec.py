"""The frame codec: picks the Cython build, or its pure-Python twin.

Layer 2 (sans-IO). ``FRAMEGATE_PURE=1`` selects the twin at import time
(``proxy.build``), so a whole server or benchmark can run on it.

API (identical in both implementations; ``proxy._pycodec`` is the reference):

- ``FrameDecoder(*, server_side, max_frame=MAX_FRAME_BYTES, max_message=MAX_MESSAGE_BYTES)``
  ``.feed(data) -> list[Event]`` parses, unmasks and reassembles; raises
  ``ProtocolError`` (with ``close_code`` and the ``events`` decoded before the
  fault). ``.reassembled`` counts messages that arrived in more than one frame.
- ``FrameEncoder(*, client_side, max_frame=MAX_FRAME_BYTES)``
  ``.message(opcode, payload, mask_key=None) -> bytes`` fragments into frames
  of at most ``max_frame`` bytes; ``.close(code, reason)``, ``.ping(payload)``,
  ``.pong(payload)``. ``.fragmented`` counts messages sent in more than one frame.
- ``RelayPump(decoder, encoder, write, *, clock, admission, messages, read_bytes,
  written_bytes)`` ``.feed(data) -> list[Event]``: one direction of the relay fast
  path, a read at a time (relay, write, throttle and count in one call).
- ``monotonic()``: ``time.monotonic``'s clock, the one to give a pump as ``clock``
  (the compiled pump reads it in C rather than calling it).
- ``Tally()``: the cells the pump counts into (``.value``, ``.inc(amount)``); the
  metrics' counters are Tallies, so the compiled pump adds to them in C.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.build import twin

_chosen = twin("proxy._codec", "proxy._pycodec")
IMPLEMENTATION: str = _chosen.implementation
FALLBACK_REASON: str | None = _chosen.fallback_reason
"""Why the Cython build is not in use although nobody asked for the twin (None otherwise)."""

if TYPE_CHECKING:
    from proxy._codec import FrameDecoder, FrameEncoder, RelayPump, Tally, monotonic
else:
    FrameDecoder, FrameEncoder, RelayPump, Tally, monotonic = (
        _chosen.module.FrameDecoder,
        _chosen.module.FrameEncoder,
        _chosen.module.RelayPump,
        _chosen.module.Tally,
        _chosen.module.monotonic,
    )

__all__ = ["FALLBACK_REASON", "IMPLEMENTATION", "FrameDecoder", "FrameEncoder", "RelayPump", "Tally", "monotonic"]
