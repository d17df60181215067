"""Compiled parts or their pure-Python twins: ``FRAMEGATE_PURE=1`` selects every twin.

Layer 1. Read once at import time, because the choice precedes everything
else (a whole server or benchmark runs on the twins); this is the one
environment variable read outside ``proxy.cli``. ``proxy.codec``,
``proxy.throttle`` and ``proxy.handshake`` pick their implementation with ``twin``.

The data plane's connection classes have no twin to keep in step: their
plain-Python modules (``COMPILED_SOURCES``) are also compiled as they are,
typed by the ``.pxd`` beside each, and the compiled module shadows its source
on import. ``FRAMEGATE_PURE=1`` loads the source instead (``SourceFirst``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Final, NamedTuple

PURE: Final = os.environ.get("FRAMEGATE_PURE") == "1"
COMPILED_SOURCES: Final = (
    "proxy.frames",
    "proxy.handshake",
    "proxy.session",
    "proxy.throttle",
    "proxy.server.observer",
    "proxy.server.flow",
    "proxy.server.deadlines",
    "proxy.server.upstream",
    "proxy.server.gateway",
)
"""Plain Python modules setup.py also compiles in place, each typed by its ``.pxd``.

``tests/test_pxd_consistency.py`` holds each ``.pxd`` to its ``.py`` without a compiler."""


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


class SourceFirst(importlib.abc.MetaPathFinder):
    """Loads the ``COMPILED_SOURCES`` modules from their ``.py`` even where the compiled one sits beside it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED_SOURCES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or spec.origin.endswith(".py"):
            return spec
        source = Path(spec.origin).with_name(fullname.rpartition(".")[2] + ".py")
        return importlib.util.spec_from_file_location(fullname, source)


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from a compiled extension rather than Python source."""
    return not (module.__file__ or "").endswith(".py")


def source_fallback_reason(modules: Iterable[ModuleType]) -> str | None:
    """Why ``COMPILED_SOURCES`` modules run interpreted although nobody asked for that (None otherwise)."""
    if PURE:
        return None
    interpreted = [module.__name__ for module in modules if not is_compiled(module)]
    return f"{', '.join(interpreted)} run from source" if interpreted else None


if PURE and not any(isinstance(finder, SourceFirst) for finder in sys.meta_path):
    sys.meta_path.insert(0, SourceFirst())
