"""AWS-shaped identifiers, from an injectable random source.

Layer 1. ``random_bytes`` defaults to ``os.urandom`` (connection and request
ids: ``proxy._entropy``'s pool of it); tests pass a seeded source to get
stable ids.
"""

from __future__ import annotations

import binascii
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.build import twin

RandomBytes = Callable[[int], bytes]

if TYPE_CHECKING:
    from proxy._entropy import token
else:
    token = twin("proxy._entropy", "proxy._pyentropy").module.token

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
API_ID_CHARS = 10
RESOURCE_ID_CHARS = 7
CONNECTION_ID_BYTES = 11
"""11 random bytes encode to 16 base64 characters ending in one ``=``, like ``KVmb8fjMIAMCFgQ=``."""


_UNBIASED_BELOW = 256 - 256 % len(_ALPHABET)
"""The largest multiple of the alphabet's size a byte can reach: rejecting bytes from it on keeps the draw uniform."""


def _lower_alnum(length: int, random_bytes: RandomBytes) -> str:
    out: list[str] = []
    while len(out) < length:
        out.extend(_ALPHABET[b % len(_ALPHABET)] for b in random_bytes(length) if b < _UNBIASED_BELOW)
    return "".join(out[:length])


def api_id(random_bytes: RandomBytes = os.urandom) -> str:
    """A 10-character ``[a-z0-9]`` API id, e.g. ``u9jlm1pv1h``."""
    return _lower_alnum(API_ID_CHARS, random_bytes)


def resource_id(random_bytes: RandomBytes = os.urandom) -> str:
    """A 7-character ``[a-z0-9]`` id for routes, integrations, deployments, mappings."""
    return _lower_alnum(RESOURCE_ID_CHARS, random_bytes)


def connection_id(random_bytes: RandomBytes | None = None) -> str:
    """A 16-character base64 connection, request or message id, e.g. ``KVmb8fjMIAMCFgQ=``.

    Without ``random_bytes``, from ``proxy._entropy``'s pooled ``os.urandom`` (one per connection).
    """
    if random_bytes is None:
        return token(CONNECTION_ID_BYTES)
    return binascii.b2a_base64(random_bytes(CONNECTION_ID_BYTES), newline=False).decode("ascii")


pooled_id: Callable[[], str] = functools.partial(token, CONNECTION_ID_BYTES)
"""``connection_id()`` as one C call: the id of each connection and of each message (no Python frame)."""


def request_id(random_bytes: RandomBytes | None = None) -> str:
    """A request or message id: the same 16-character base64 shape as a connection id."""
    return connection_id(random_bytes)
