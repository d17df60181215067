"""Random tokens, pure Python: the reference twin of ``ext/_entropy.pyx`` (``proxy._entropy``).

Layer 1. Each call draws from ``os.urandom``; the compiled twin draws the
same bytes a block at a time.
"""

from __future__ import annotations

import binascii
import os

__all__ = ["token"]


def token(n: int) -> str:
    """Base64 of ``n`` (at most 45) fresh random bytes: a Sec-WebSocket-Key (16), a connection id (11)."""
    if n > 45:
        raise ValueError(f"base64 of {n} bytes: at most 45 here")
    return binascii.b2a_base64(os.urandom(n), newline=False).decode("ascii")
