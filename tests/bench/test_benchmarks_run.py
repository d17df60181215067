"""``python -m benchmarks.run --quick`` runs end to end and writes its JSON and chart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.load_tools_vs_bench import _median, _per_round
from benchmarks.procfs import cpu_seconds, descendants, rss_kib
from benchmarks.run import WORKLOADS, _rounds, add_ratios, check_targets

REPO = Path(__file__).resolve().parents[2]
RUN_CEILING_S = 150.0


@pytest.mark.integration
def test_quick_matrix_for_direct_and_raw_relay_writes_text_json_and_png(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "benchmarks.run", "--quick", "--only", "direct,raw", "--no-client-compare"]
    done = subprocess.run(
        [*argv, "--out", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=RUN_CEILING_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "ratios.png").read_bytes().startswith(b"\x89PNG")
    table = result["table"]
    assert set(table) == {w.name for w in WORKLOADS}
    for workload in WORKLOADS:
        raw, direct = table[workload.name]["raw"], table[workload.name]["direct"]
        assert raw["errors"] == {} and direct["errors"] == {}, workload.name
        assert raw["headline"] > 0 and raw["x_raw"] == pytest.approx(1.0)
        assert direct["headline"] is None  # no proxy, no proxy CPU
    assert table["64B-closed"]["raw"]["msgs_per_s"] > 0
    assert table["connect"]["raw"]["connections_per_s"] > 0
    assert result["meta"]["reps"] == 1 and "64B-closed" in done.stdout
    assert (tmp_path / "latest.txt").read_text().splitlines()[1] in done.stdout  # the same table


def test_ratios_are_taken_against_raw_relay_and_websockets_proxy() -> None:
    table = {
        "64B-closed": {
            "raw": {"headline": 100.0, "p99_us": 50.0},
            "ws-proxy": {"headline": 40.0, "p99_us": 100.0},
            "framegate": {"headline": 95.0, "p99_us": 60.0},
        }
    }
    add_ratios(table)
    fg = table["64B-closed"]["framegate"]
    assert fg["x_raw"] == pytest.approx(0.95) and fg["x_ws"] == pytest.approx(2.375)
    assert fg["p99_x_raw"] == pytest.approx(1.2)
    verdicts = {(c["workload"], c["figure"], c["against"]): c["met"] for c in check_targets(table)}
    assert verdicts[("64B-closed", "headline", "raw")] is True
    assert verdicts[("64B-closed", "headline", "ws-proxy")] is False  # 2.375 < 2.5
    assert verdicts[("64B-closed", "p99_us", "raw")] is True
    assert verdicts[("idle", "headline", None)] is None  # not measured


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_procfs_measures_this_process_s_cpu_over_a_window() -> None:
    """What the benchmark takes: the CPU spent between two readings (threads that ended before are not in it)."""
    pid = os.getpid()
    before, times_before = cpu_seconds(pid), os.times()
    _spin(0.3)
    after, times_after = cpu_seconds(pid), os.times()
    spent = (times_after.user + times_after.system) - (times_before.user + times_before.system)
    assert after - before == pytest.approx(spent, abs=0.03)
    assert pid in descendants(pid)
    assert rss_kib(pid) > 1024


def test_repetitions_interleave_contenders_in_rotated_order() -> None:
    rounds = list(_rounds(["a", "b", "c"], 4))
    assert [rep for rep, _ in rounds] == [0, 1, 2, 3]
    assert [order for _, order in rounds] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_load_tools_take_each_tool_s_median_round_and_skip_failed_ones() -> None:
    rounds = [{"msgs_per_client_cpu_s": 9.0}, {"error": "failed"}, {"msgs_per_client_cpu_s": 3.0},
              {"msgs_per_client_cpu_s": 5.0}]  # fmt: skip
    assert _median(rounds) == {"msgs_per_client_cpu_s": 5.0, "rounds_measured": 3}
    assert _median([{"error": "x"}]) == {"error": "x"}
    runs = {"bench": [{"msgs_per_client_cpu_s": 7.0}], "other": [{"error": "x"}, {"msgs_per_client_cpu_s": 1.0}]}
    assert _per_round(runs) == [{"bench": 7.0, "other": None}, {"bench": None, "other": 1.0}]
