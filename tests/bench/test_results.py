"""Results for machines: thresholds and their exit code, per-second --out rows, the JSON record, Ctrl-C."""

from __future__ import annotations

import csv
import json
import os
import selectors
import signal
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from proxy import __version__
from proxy.bench.main import run
from proxy.bench.process import REPO_ROOT, ReadyProcess
from proxy.bench.series import COLUMNS
from proxy.bench.threshold import Threshold
from proxy.cli import build_parser
from proxy.limits import BENCH_EXIT_INTERRUPTED, BENCH_EXIT_THRESHOLDS, CLOSE_TIMEOUT_S, HANDSHAKE_TIMEOUT_S

from .conftest import BenchRun

pytestmark = pytest.mark.integration


def test_thresholds_that_hold_exit_0_and_are_recorded(echo: ReadyProcess, bench: BenchRun) -> None:
    held = ["p99<10s", "errors<0.1%", "msgs_per_s>1", "connect_max<=10000ms", "errors<1"]
    code, summary = bench(echo.url, "-c", "2", "-m", "200", *(f"--threshold={t}" for t in held))
    assert code == 0
    assert [(t["threshold"], t["ok"]) for t in summary["thresholds"]] == [(t, True) for t in held]
    assert summary["headline"] == ["thresholds: all 5 held"]


def test_a_breached_threshold_exits_99_and_says_so_first(
    echo: ReadyProcess, bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = bench(echo.url, "-c", "2", "-m", "100", "--threshold", "msgs_per_s>1e12", "--threshold", "p50<1s")
    assert code == BENCH_EXIT_THRESHOLDS == 99
    breached, held = summary["thresholds"]
    assert breached["ok"] is False and breached["observed"] == summary["msgs_per_s"] and held["ok"] is True
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("!! thresholds breached: msgs_per_s>1e12 (observed ")


@pytest.mark.parametrize(
    ("threshold", "message"),
    [("p99 5ms", "expected METRIC<VALUE"), ("p42<5ms", "unknown metric 'p42'"), ("p99<5%", "us, ms or s")],
)
def test_bad_threshold_is_a_usage_error(threshold: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["bench", "--url", "ws://127.0.0.1:1/", "--threshold", threshold])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_threshold_units() -> None:
    assert Threshold.parse("p99<5ms").limit == 5000.0 and Threshold.parse("p99.9<=2s").limit == 2e6
    assert Threshold.parse("max<250us").limit == 250.0 and Threshold.parse("p50<3").limit == 3000.0
    rate = Threshold.parse("errors<0.1%")
    assert rate.percent and rate.check({"errors": 1, "attempts": 2000}) == (0.05, True)
    assert rate.check({"errors": 1, "attempts": 100})[1] is False


@pytest.mark.parametrize("flag", ["--json", "--out"])
def test_unwritable_output_paths_fail_before_the_run(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no" / "such" / "file"
    value = str(missing) if flag == "--json" else f"jsonl:{missing}"
    # port 1: were the run started, it would fail to connect (exit 1), not exit 2
    args = build_parser().parse_args(["bench", "--url", "ws://127.0.0.1:1/", flag, value])
    assert run(args) == 2
    assert capsys.readouterr().err == f"framegate bench: {flag} {missing}: no such directory {missing.parent}\n"


def test_json_records_version_timestamps_command_and_verdict(echo: ReadyProcess, bench: BenchRun) -> None:
    code, summary = bench(echo.url, "-c", "1", "-m", "50")
    assert code == 0 and summary["exit_code"] == 0
    assert summary["version"] == __version__
    assert summary["started_at"] < summary["ended_at"] and summary["started_at"].endswith("+00:00")
    assert summary["command"][0] == "framegate" and summary["interrupted"] is False


@pytest.mark.parametrize("procs", ["1", "2"])
def test_out_writes_one_row_per_second_as_jsonl_and_csv(
    echo: ReadyProcess, bench: BenchRun, tmp_path: Path, procs: str
) -> None:
    jsonl, table = tmp_path / "rows.jsonl", tmp_path / "rows.csv"
    code, summary = bench(echo.url, "-c", "2", "-p", procs, "-d", "2.5", f"--out=jsonl:{jsonl}", f"--out=csv:{table}")
    assert code == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 3  # two whole seconds and the last half
    assert [round(row["elapsed_s"]) for row in rows[:2]] == [1, 2] and rows[2]["elapsed_s"] >= 2.4
    for row in rows:
        assert list(row) == list(COLUMNS)
        assert row["connections"] == 2 and row["msgs_per_s"] > 0 and row["errors_total"] == 0
        assert 0 < row["p50_us"] <= row["p90_us"] <= row["p99_us"] <= row["max_us"]
        assert row["mb_per_s"] == pytest.approx(row["msgs_per_s"] * 64 / 1e6, rel=1e-2)
    with table.open(newline="") as f:
        records = list(csv.DictReader(f))
    assert [float(r["msgs_per_s"]) for r in records] == [row["msgs_per_s"] for row in rows]
    # the rows account for every measured message (rates are rounded to 0.1/s)
    seconds = [rows[0]["elapsed_s"]] + [b["elapsed_s"] - a["elapsed_s"] for a, b in pairwise(rows)]
    total = sum(row["msgs_per_s"] * s for row, s in zip(rows, seconds, strict=True))
    assert total == pytest.approx(summary["messages"], rel=0.02)


def test_a_worker_keeps_the_sigint_disposition_it_had(echo: ReadyProcess, bench: BenchRun) -> None:
    """A worker process ignores SIGINT outside its loop: the loop must not leave Python's
    KeyboardInterrupt handler behind, or the parent's forwarded copy of a Ctrl-C kills it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code, _ = bench(echo.url, "-c", "1", "-m", "20")
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 0
    assert after is signal.SIG_IGN


@pytest.mark.parametrize(("procs", "whole_group"), [("1", False), ("2", False), ("2", True)])
def test_sigint_stops_cleanly_and_prints_the_summary_so_far(
    echo: ReadyProcess, tmp_path: Path, procs: str, whole_group: bool
) -> None:
    """Ctrl-C in a terminal signals the whole process group (``whole_group``): workers get SIGINT twice."""
    fifo, summary_path = tmp_path / "rows.fifo", tmp_path / "summary.json"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open first, so bench's open for writing does not block
    argv = [sys.executable, "-m", "proxy", "bench", "--url", echo.url, "-c", "2", "-p", procs, "-d", "600"]
    argv += [f"--out=jsonl:{fifo}", "--json", str(summary_path)]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(reader, selectors.EVENT_READ)
            assert selector.select(timeout=HANDSHAKE_TIMEOUT_S + 5), "no per-second row"
        first_row = json.loads(os.read(reader, 65536).decode().splitlines()[0])
        assert first_row["msgs_per_s"] > 0
        if whole_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=CLOSE_TIMEOUT_S + 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(reader)
    assert proc.returncode == BENCH_EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert out.startswith("!! interrupted: the figures cover the ")
    summary = json.loads(summary_path.read_text())
    assert summary["interrupted"] is True and summary["messages"] > 0 and summary["elapsed_s"] < 600
    assert summary["errors"] == {}
