"""Shared fixtures: the ``codec`` fixture runs a test once per codec implementation (``load_twin``)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
from types import ModuleType

import pytest

from tests.helpers.redis import redis_server  # noqa: F401 (a fixture, shared by every test module)

ASYNC_TEST_CEILING_S = 60.0
"""Upper bound for one async test; a ceiling against hangs, never a synchronisation device."""


def load_twin(compiled: str, reference: str, name: str) -> ModuleType:
    """The ``"cython"`` build ``proxy.<compiled>`` or the ``"python"`` reference ``proxy.<reference>``.

    Skips a Cython case when the extension is not built, unless FRAMEGATE_REQUIRE_EXT=1 (CI) makes that a failure.
    """
    if name == "python":
        return importlib.import_module(f"proxy.{reference}")
    try:
        return importlib.import_module(f"proxy.{compiled}")
    except ImportError:
        if os.environ.get("FRAMEGATE_REQUIRE_EXT") == "1":
            raise
        pytest.skip(f"proxy.{compiled} not built (python setup.py build_ext --inplace)")


def _load_codec(name: str) -> ModuleType:
    return load_twin("_codec", "_pycodec", name)


@pytest.fixture(params=["cython", "python"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """A codec module (``FrameDecoder``, ``FrameEncoder``); every test using it runs on both."""
    return _load_codec(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests on a fresh event loop (uvloop when installed), under a ceiling."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    coroutine = asyncio.wait_for(pyfuncitem.obj(**kwargs), ASYNC_TEST_CEILING_S)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)
    return True
