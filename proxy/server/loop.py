"""The event loop: uvloop (a hard dependency), else asyncio's own; and where a listener is bound.

Layer 4. One place decides, so ``serve``, ``echo-backend`` and ``bench`` run
on the same loop and announce their listeners alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop when installed, else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def bound_url(server: asyncio.Server, scheme: str = "ws") -> str:
    """The ``SCHEME://HOST:PORT`` a bound server listens on (IPv6 hosts bracketed)."""
    host, port = server.sockets[0].getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
