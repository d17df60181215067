"""``proxy.build``: compiled parts when built, else their pure twins (and why); ``FRAMEGATE_PURE=1``: Python only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import ModuleType

import pytest

from proxy import build
from tests.helpers.servers import ROOT


def test_a_missing_compiled_part_falls_back_to_its_twin_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "proxy._throttle", None)  # None in sys.modules makes the import fail
    chosen = build.twin("proxy._throttle", "proxy._pythrottle")
    assert (chosen.module.__name__, chosen.implementation) == ("proxy._pythrottle", "python")
    assert chosen.fallback_reason is not None and "proxy._throttle" in chosen.fallback_reason


def test_framegate_pure_picks_the_twin_with_nothing_to_warn_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "PURE", True)
    assert build.twin("proxy._codec", "proxy._pycodec") == (sys.modules["proxy._pycodec"], "python", None)


def test_a_built_part_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "PURE", False)
    chosen = build.twin("proxy._pycodec", "proxy._pythrottle")  # any importable module stands for a built part
    assert (chosen.module.__name__, chosen.implementation, chosen.fallback_reason) == ("proxy._pycodec", "cython", None)


def _connection_module_files(pure: bool) -> dict[str, str]:
    """Where a fresh interpreter loads each ``COMPILED_SOURCES`` module from."""
    code = (
        "import importlib, json; from proxy.build import COMPILED_SOURCES as names; "
        "print(json.dumps({name: importlib.import_module(name).__file__ for name in names}))"
    )
    env = {key: value for key, value in os.environ.items() if key != "FRAMEGATE_PURE"}
    env["PYTHONPATH"] = str(ROOT)
    if pure:
        env["FRAMEGATE_PURE"] = "1"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    files: dict[str, str] = json.loads(done.stdout)
    return files


def test_framegate_pure_runs_the_connection_modules_from_their_source() -> None:
    files = _connection_module_files(pure=True)
    assert set(files) == set(build.COMPILED_SOURCES)
    assert all(path.endswith(".py") for path in files.values()), files


def test_the_connection_modules_run_compiled_when_built() -> None:
    files = _connection_module_files(pure=False)
    if any(path.endswith(".py") for path in files.values()) and os.environ.get("FRAMEGATE_REQUIRE_EXT") != "1":
        pytest.skip("the connection modules are not compiled (python setup.py build_ext --inplace)")
    assert not any(path.endswith(".py") for path in files.values()), files


def test_each_module_compiled_as_it_is_has_its_pxd() -> None:
    for name in build.COMPILED_SOURCES:  # setup.py reads the same list from proxy/build.py
        assert (ROOT / (name.replace(".", "/") + ".pxd")).is_file(), name


def test_serve_is_told_which_connection_modules_run_interpreted(monkeypatch: pytest.MonkeyPatch) -> None:
    interpreted, compiled = ModuleType("proxy.session"), ModuleType("proxy.server.gateway")
    interpreted.__file__ = "/x/proxy/session.py"
    compiled.__file__ = "/x/proxy/server/gateway.cpython-311-x86_64-linux-gnu.so"
    monkeypatch.setattr(build, "PURE", False)
    reason = build.source_fallback_reason([compiled, interpreted])
    assert reason is not None and "proxy.session" in reason and "gateway" not in reason
    assert build.source_fallback_reason([compiled]) is None
    monkeypatch.setattr(build, "PURE", True)  # asked for: nothing to warn about
    assert build.source_fallback_reason([interpreted]) is None
