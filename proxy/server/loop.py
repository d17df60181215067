"""The event loop: uvloop (a hard dependency), else asyncio's own.

Layer 4. One place decides, so ``serve``, ``echo-backend`` and ``bench`` run
on the same loop.
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
