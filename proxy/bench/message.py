"""The message a bench connection sends, numbered, and the check that a reply is its echo.

Layer 5. Every message starts with its per-connection sequence number in hex
(printable, so valid text), and the rest of the payload is the same for all.
A reply is then checked against the one message it must echo without keeping
copies: its length, its number and the shared rest (``startswith`` and
``endswith``, a memcmp each). The frame is encoded and masked once, and every
number, plain and masked, sits in a table built once: a send only splices the
masked number in, so the load generator stays cheap.

A reply that is not an echo of ours is grouped: the gateway's own error frames
(``proxy.gateway_frames``) by their ``"message"`` text, anything else as
unexpected. Counting those as echoes would inflate msgs/s.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Final

from proxy import gateway_frames
from proxy.codec import FrameEncoder
from proxy.frames import Opcode
from proxy.limits import BENCH_SEQUENCE_DIGITS, MAX_FRAME_BYTES

ECHO_TABLE_MAX_BYTES = 16 * 1024 * 1024
"""Bytes of echo frames built ahead for the exact check in place (``BenchConnection.data_received``):
messages up to about 250 bytes, where the per-message cost matters, with 4 hex digits of number."""
_MASK_KEY_BYTES = 4
_HEX_BASE = 16
_BYTE_VALUES = 256


def make_payload(size: int, seed: int) -> bytes:
    """``size`` printable ASCII bytes (valid as text or binary), reproducible from ``seed``."""
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    block = bytes(alphabet[(seed + i * 7919) % len(alphabet)] for i in range(min(size, 4096)))
    return (block * (size // max(len(block), 1) + 1))[:size]


@dataclass(frozen=True, slots=True)
class Message:
    """One connection's numbered message: masked frame parts to send, and what its echo looks like.

    Build it with ``Message.build``; numbers count from 0 per connection and
    wrap at ``16 ** digits``.
    """

    size: int
    digits: int
    """Width of the hex number that opens the payload."""
    head: bytes
    """Masked frame bytes before the number (the first frame's header)."""
    tail: bytes
    """Masked frame bytes after the number (rest of the message, continuations included)."""
    numbers: tuple[bytes, ...]
    """Every number in hex, as an echo starts with it."""
    masked_numbers: tuple[bytes, ...]
    """Every number as the frame carries it (masked)."""
    echo_tail: bytes
    """The plain payload after the number: every echo ends with it."""
    number_bits: int
    """``16 ** digits - 1``: numbers are taken modulo ``16 ** digits``."""
    echo_frames: tuple[bytes, ...]
    """Every number's echo as one unmasked frame, as a server sends it: empty for a message too large
    (``ECHO_TABLE_MAX_BYTES``) or fragmented."""
    echo_frame_bytes: int
    """Length of one such frame: header, number and tail."""

    @classmethod
    def build(cls, size: int, binary: bool, seed: int, max_frame: int = MAX_FRAME_BYTES) -> Message:
        """Encode the message once, fragmented at ``max_frame`` like any client must, masked with one key.

        A load generator's mask need not be unpredictable: one random non-zero
        byte four times masks every number alike wherever it sits, and the
        proxy still unmasks every byte (a zero key would leave it in clear).
        """
        digits = min(size, BENCH_SEQUENCE_DIGITS)
        payload = b"0" * digits + make_payload(size, seed)[digits:]
        opcode = Opcode.BINARY if binary else Opcode.TEXT
        key_byte = 1 + os.urandom(1)[0] % (_BYTE_VALUES - 1)
        key = bytes([key_byte]) * _MASK_KEY_BYTES
        encoder = FrameEncoder(client_side=True, max_frame=max_frame)
        frame: bytes = encoder.message(opcode, payload, mask_key=key)
        first = min(size, max_frame)
        header = len(encoder.message(opcode, payload[:first], mask_key=key)) - first
        number_format = b"%%0%dx" % digits
        numbers = tuple(number_format % number for number in range(_HEX_BASE**digits))
        mask = bytes(value ^ key_byte for value in range(_BYTE_VALUES))
        echo = FrameEncoder(client_side=False, max_frame=max_frame).message(opcode, payload)
        echo_frames: tuple[bytes, ...] = ()
        if size <= max_frame and len(echo) * len(numbers) <= ECHO_TABLE_MAX_BYTES:
            echo_head, echo_tail = echo[: len(echo) - size], echo[len(echo) - size + digits :]
            echo_frames = tuple(echo_head + number + echo_tail for number in numbers)
        return cls(
            size=size,
            digits=digits,
            head=frame[:header],
            tail=frame[header + digits :],
            numbers=numbers,
            masked_numbers=tuple(number.translate(mask) for number in numbers),
            echo_tail=payload[digits:],
            number_bits=_HEX_BASE**digits - 1,
            echo_frames=echo_frames,
            echo_frame_bytes=len(echo),
        )

    def frame(self, number: int) -> bytes:
        """Message ``number``, ready to write."""
        return self.head + self.masked_numbers[number & self.number_bits] + self.tail

    def frames(self, first: int, count: int) -> bytes:
        """Messages ``first`` to ``first + count - 1`` in one buffer (one write)."""
        return b"".join([self.frame(number) for number in range(first, first + count)])

    def is_echo(self, payload: bytes, number: int) -> bool:
        """Whether ``payload`` is exactly message ``number``."""
        return (
            len(payload) == self.size
            and payload.startswith(self.numbers[number & self.number_bits])
            and payload.endswith(self.echo_tail)
        )

    def echo_number(self, payload: bytes) -> int | None:
        """The number of the message ``payload`` echoes (modulo ``16 ** digits``); None if it echoes none of ours."""
        if len(payload) != self.size or not payload.endswith(self.echo_tail):
            return None
        number = payload[: self.digits]
        if number.strip(b"0123456789abcdef"):
            return None
        return int(number, _HEX_BASE)

    def ahead(self, number: int, expected: int) -> int:
        """How many messages after ``expected`` the echoed ``number`` is (modulo the wrap)."""
        return (number - expected) & self.number_bits


# --- replies that are not echoes ----------------------------------------------------------

THROTTLED: Final = "throttled"
FORBIDDEN: Final = "forbidden"
INTERNAL_SERVER_ERROR: Final = "internal_server_error"
BAD_REQUEST_BODY: Final = "bad_request_body"
MISSING: Final = "missing"
UNEXPECTED: Final = "unexpected"

REPLY_GROUPS: Final[dict[str, str]] = {
    THROTTLED: "throttled (Too Many Requests)",
    FORBIDDEN: "forbidden",
    INTERNAL_SERVER_ERROR: "internal server error",
    BAD_REQUEST_BODY: "bad request body",
    MISSING: "missing echo (a later one came first)",
    UNEXPECTED: "unexpected reply",
}
"""Group of a wrong reply -> how the summary names it."""


def _message_text(frame: str) -> str:
    text: str = json.loads(frame)["message"]
    return text


_GATEWAY_MESSAGES: Final[dict[str, str]] = {
    _message_text(gateway_frames.too_many_requests("c", "r")): THROTTLED,
    _message_text(gateway_frames.forbidden("c", "r")): FORBIDDEN,
    _message_text(gateway_frames.internal_server_error("c", "r")): INTERNAL_SERVER_ERROR,
    _message_text(gateway_frames.bad_request_body("c", "m")): BAD_REQUEST_BODY,
}
"""The gateway's error texts, read from the frames it sends (one source for both sides)."""


def reply_group(payload: bytes) -> str:
    """The group of a reply that echoes none of our messages: a gateway error frame's, else ``UNEXPECTED``."""
    if not payload.startswith(b"{"):
        return UNEXPECTED
    try:
        message = json.loads(payload).get("message")
    except (ValueError, AttributeError):  # not JSON (UnicodeDecodeError is a ValueError), or not an object
        return UNEXPECTED
    return _GATEWAY_MESSAGES.get(message, UNEXPECTED) if isinstance(message, str) else UNEXPECTED
