"""Shared fixtures: the ``codec`` fixture runs a test once per codec implementation."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def _load_codec(name: str) -> ModuleType:
    if name == "python":
        return importlib.import_module("proxy._pycodec")
    try:
        return importlib.import_module("proxy._codec")
    except ImportError:
        if os.environ.get("FRAMEGATE_REQUIRE_EXT") == "1":
            raise
        pytest.skip("Cython codec not built (python setup.py build_ext --inplace)")


@pytest.fixture(params=["cython", "python"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """A codec module (``FrameDecoder``, ``FrameEncoder``); every test using it runs on both."""
    return _load_codec(request.param)
