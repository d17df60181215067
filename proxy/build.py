"""Compiled parts or their pure-Python twins: ``FRAMEGATE_PURE=1`` selects every twin.

Layer 1. Read once at import time, because the choice precedes everything
else (a whole server or benchmark runs on the twins); this is the one
environment variable read outside ``proxy.cli``. ``proxy.codec``,
``proxy.throttle`` and ``proxy.handshake`` pick their implementation with ``twin``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Final, NamedTuple

PURE: Final = os.environ.get("FRAMEGATE_PURE") == "1"


class Twin(NamedTuple):
    """The implementation in use: the module, ``"cython"`` or ``"python"``, and why not the compiled one."""

    module: ModuleType
    implementation: str
    fallback_reason: str | None
    """Why the compiled build is not in use although nobody asked for the twin (None otherwise)."""


def twin(compiled: str, reference: str) -> Twin:
    """The ``compiled`` module unless ``FRAMEGATE_PURE=1`` or it is not built; else its ``reference`` twin."""
    if PURE:
        return Twin(importlib.import_module(reference), "python", None)
    try:
        return Twin(importlib.import_module(compiled), "cython", None)
    except ImportError as exc:
        return Twin(importlib.import_module(reference), "python", str(exc))
