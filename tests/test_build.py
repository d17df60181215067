"""``proxy.build.twin``: the compiled part when it is built, its pure twin (and why) when it is not."""

from __future__ import annotations

import sys

import pytest

from proxy import build


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
