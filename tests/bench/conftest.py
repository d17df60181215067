"""Fixtures for the load generator's tests: a real echo backend and a bench runner."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.bench.main import run
from proxy.bench.process import ReadyProcess, echo_backend
from proxy.cli import build_parser

BenchRun = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture(scope="module")
def echo() -> Iterator[ReadyProcess]:
    with echo_backend() as process:
        yield process


@pytest.fixture
def bench(tmp_path: Path) -> BenchRun:
    """Run ``framegate bench URL ARGS... --json FILE`` in-process; return (exit code, parsed JSON).

    The JSON is ``{}`` when the run never started (the endpoint was refused up front).
    """

    def go(url: str, *args: str) -> tuple[int, dict[str, Any]]:
        out = tmp_path / "summary.json"
        parsed = build_parser().parse_args(["bench", "--url", url, "--timeout", "5", *args, "--json", str(out)])
        code = run(parsed)
        return code, json.loads(out.read_text()) if out.exists() else {}

    return go
