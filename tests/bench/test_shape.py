"""Load shapes: ramping --stages (connections, or the open-loop rate) and --churn, on 1 and 2 procs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.bench.main import run
from proxy.bench.process import ReadyProcess
from proxy.bench.shape import Stages
from proxy.cli import build_parser

from .conftest import BenchRun

pytestmark = pytest.mark.integration


def test_stage_arithmetic() -> None:
    stages = Stages.parse("10s:100,30s:1000,500ms:0")
    assert stages.total_s == 40.5 and stages.peak == 1000
    assert [stages.value_at(t) for t in (0, 5, 10, 25, 40, 41)] == [0, 50, 100, 550, 1000, 0]
    rate = Stages.parse("2s:300", start=100)  # 100/s rising to 300/s: 400 messages in 2 s
    assert rate.due_time(0) == 0 and rate.due_time(400) == pytest.approx(2.0)
    assert rate.due_time(100) == pytest.approx(3**0.5 - 1)  # 100 t + 50 t**2 = 100
    assert rate.due_time(401) is None
    assert Stages.parse("1m:5").total_s == 60


@pytest.mark.parametrize("text", ["10s", "10s:", "x:5", "0s:5", "10s:5;5s:1"])
def test_bad_stages_are_usage_errors(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(build_parser().parse_args(["bench", "--url", "ws://127.0.0.1:1/", "--stages", text])) == 2
    assert "--stages" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--stages", "1s:5", "-d", "3"],
        ["--stages", "1s:5", "--connect-only"],
        ["--churn", "5", "-r", "100"],
        ["--stages", "1s:5", "-c", "4"],  # the stages' targets are the connections: -c would be ignored
    ],
)
def test_shapes_that_cannot_combine_are_refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(build_parser().parse_args(["bench", "--url", "ws://127.0.0.1:1/", *args])) == 2
    assert "framegate bench: --" in capsys.readouterr().err


@pytest.mark.parametrize("procs", ["1", "2"])
def test_stages_ramp_connections_up_and_down(echo: ReadyProcess, bench: BenchRun, tmp_path: Path, procs: str) -> None:
    rows_path = tmp_path / "rows.jsonl"
    code, summary = bench(echo.url, "--stages", "1s:6,1s:6,1s:0", "-p", procs, f"--out=jsonl:{rows_path}")
    assert code == 0 and summary["errors"] == {} and summary["messages"] > 0
    assert summary["stages"] == "1s:6,1s:6,1s:0" and summary["connections"] == 6
    assert summary["connections_opened"] >= 6
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert [row["connections"] for row in rows][1] == 6
    assert rows[-1]["connections"] < 6 and summary["elapsed_s"] == pytest.approx(3, abs=0.5)


@pytest.mark.parametrize("procs", ["1", "2"])
def test_stages_ramp_the_open_loop_rate(echo: ReadyProcess, bench: BenchRun, procs: str) -> None:
    code, summary = bench(echo.url, "-c", "2", "-p", procs, "--rate", "100", "--stages", "1s:300")
    assert code == 0 and summary["mode"] == "open-loop" and summary["errors"] == {}
    # 100/s rising to 300/s over 1 s is 200 messages (a rate held at 100/s would be 100). The last
    # ones may still be in flight when the window ends, more of them on a loaded machine: the lower
    # bound tells a ramp from no ramp without depending on how busy the machine is.
    assert 150 <= summary["messages"] <= 200


@pytest.mark.parametrize(("procs", "window"), [("1", "1"), ("2", "4"), ("1", "16")])
def test_churn_replaces_each_connection_after_n_messages(
    echo: ReadyProcess, bench: BenchRun, procs: str, window: str
) -> None:
    code, summary = bench(echo.url, "-c", "2", "-p", procs, "-w", window, "--churn", "10", "-m", "100")
    assert code == 0 and summary["errors"] == {} and summary["messages"] == 100 and summary["churn"] == 10
    assert summary["connections_opened"] >= 10  # 100 messages, at most 10 per connection (even with -w 16)


def test_idle_connections_can_ramp(echo: ReadyProcess, bench: BenchRun) -> None:
    code, summary = bench(echo.url, "--idle", "1", "--stages", "0.5s:8,0.5s:8")
    assert code == 0 and summary["mode"] == "idle" and summary["connections_opened"] == 8
