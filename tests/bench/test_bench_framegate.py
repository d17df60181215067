"""``framegate bench`` through ``framegate serve --backend``: counts, the gateway's 1009 grouped by code,
and its throttled frames counted as errors, not echoes."""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus

import pytest

from benchmarks.contenders import CONTENDERS, Running, set_route_throttling
from proxy.bench.process import ReadyProcess
from proxy.frames import CloseCode
from proxy.limits import BENCH_EXIT_REFUSALS, MAX_MESSAGE_BYTES

from .conftest import BenchRun

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def framegate(echo: ReadyProcess) -> Iterator[Running]:
    """``python -m proxy serve --backend <echo> --port 0 --admin-port 0 --db <tmp>``; url ends in /prod."""
    with CONTENDERS["framegate"](echo.url, None) as running:
        yield running


def test_bench_through_framegate_counts_every_echo(framegate: Running, bench: BenchRun) -> None:
    code, summary = bench(framegate.url, "-c", "4", "-w", "4", "-m", "400")
    assert code == 0 and summary["errors"] == {}
    assert summary["messages"] == 400 and summary["connections_opened"] == 4


def test_large_messages_are_refragmented_and_echoed(framegate: Running, bench: BenchRun) -> None:
    code, summary = bench(framegate.url, "-c", "2", "-m", "20", "--binary", "-s", str(64 * 1024))
    assert code == 0 and summary["errors"] == {} and summary["messages"] == 20


def test_message_over_the_cap_through_framegate_is_grouped_as_1009(
    framegate: Running, bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = bench(framegate.url, "-c", "2", "-d", "5", "--binary", "-s", str(MAX_MESSAGE_BYTES + 1))
    assert code == 1
    assert summary["errors"] == {f"close:{CloseCode.MESSAGE_TOO_BIG}": 2}
    assert "close 1009 MESSAGE_TOO_BIG" in capsys.readouterr().out


def test_unknown_stage_is_refused_with_the_gateways_status_and_body(
    framegate: Running, bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = framegate.url.removesuffix("/prod") + "/nostage"
    code, summary = bench(unknown, "-c", "3", "-d", "1")
    assert code == 1 and summary == {}
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"framegate bench: {unknown}: upgrade refused: HTTP 40")
    assert line.endswith("(Invalid stage identifier specified nostage)")  # framegate's X-Framegate-Error


THROTTLE_BURST = 50
"""Messages the throttled stage lets through (its rate is 0: none are refilled). A few go out before
measuring starts (how many depends on timing), so the measured echoes are fewer."""


@pytest.fixture
def throttled_framegate(echo: ReadyProcess) -> Iterator[Running]:
    with CONTENDERS["framegate"](echo.url, None) as running:
        set_route_throttling(running.admin, THROTTLE_BURST, 0.0)
        yield running


def test_throttled_frames_from_framegate_are_errors_not_echoes(
    throttled_framegate: Running, bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = bench(throttled_framegate.url, "-c", "1", "-w", "2", "-m", "200")
    [(key, throttled)] = summary["errors"].items()
    assert key == "reply:throttled"  # no timeouts, and no echo taken as missing or unexpected
    assert 0 < summary["messages"] < THROTTLE_BURST
    assert summary["messages"] + throttled >= 200
    out = capsys.readouterr().out
    assert "throttled (Too Many Requests)" in out
    # most replies were the gateway's refusals: the run fails and says so before any figure
    assert code == BENCH_EXIT_REFUSALS and summary["refusal_share"] > 0.5
    assert out.startswith("!! ") and "gateway refusals (throttled (Too Many Requests)" in out.splitlines()[0]


def test_connect_only_setups_answered_429_are_gateway_refusals(
    throttled_framegate: Running, bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stage's throttling answers most upgrades 429: the run measured the throttle, and says so."""
    code, summary = bench(throttled_framegate.url, "--connect-only", "-c", "2", "-m", "200")
    refused = summary["errors"][f"http:{HTTPStatus.TOO_MANY_REQUESTS}"]
    assert summary["messages"] < THROTTLE_BURST and summary["messages"] + refused >= 200
    assert summary["refusals"] == refused and summary["refusal_share"] > 0.5
    assert code == BENCH_EXIT_REFUSALS
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("!! ") and "gateway refusals (http 429 Too Many Requests" in first
