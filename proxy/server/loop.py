"""Event-loop choice: uvloop when installed, else the stdlib asyncio loop.

Layer 4. One place decides, so ``serve``, tests and benchmarks agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a hard dependency, kept optional for dev boxes
    uvloop = None  # type: ignore[assignment]

LOOP_NAME = "uvloop" if uvloop is not None else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop when available."""
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)
