"""WebSocket wire vocabulary: opcodes and close codes (RFC 6455 section 5.2, 7.4).

Layer 1. Codec events are plain ``(opcode, payload)`` tuples rather than
objects: the hot path creates one tuple per message and nothing else.
"""

from __future__ import annotations

from enum import IntEnum

Event = tuple[int, bytes]
"""A decoded event: ``(Opcode, payload)``.

TEXT/BINARY carry a whole reassembled message (TEXT is valid UTF-8, left as
bytes so a proxy never decodes it); PING/PONG their payload; CLOSE the raw,
already validated close body (use ``parse_close``).
"""


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    """Never sent: reported when a close frame had no body."""
    ABNORMAL = 1006
    """Never sent: reported when the TCP connection dropped without a close."""
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


_SENDABLE_RESERVED = frozenset(int(code) for code in CloseCode if code not in (CloseCode.NO_STATUS, CloseCode.ABNORMAL))
"""The RFC 6455 codes a close frame may carry: every ``CloseCode`` but the two reported-only ones."""
APPLICATION_CODES_MIN = 3000
APPLICATION_CODES_MAX = 4999
"""RFC 6455 7.4.2: 3000-3999 are registered for libraries and frameworks, 4000-4999 private to applications."""


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame on the wire (RFC 6455 7.4).

    1005, 1006 and 1015 are reserved for reporting and never sent; 3000-4999
    belong to libraries and applications.
    """
    return code in _SENDABLE_RESERVED or APPLICATION_CODES_MIN <= code <= APPLICATION_CODES_MAX


def parse_close(payload: bytes) -> tuple[int, str]:
    """Split a close body the decoder already validated into ``(code, reason)``.

    An empty body means no status code was given: ``(1005, "")``.
    """
    if not payload:
        return CloseCode.NO_STATUS, ""
    return payload[0] << 8 | payload[1], payload[2:].decode("utf-8")
