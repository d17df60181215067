"""The end-to-end benchmark matrix: every contender in front of one echo backend, same run, same load.

``python -m benchmarks.run [--quick] [--only direct,raw-relay,...] [--reps N] [--out DIR]``

Starts ``framegate echo-backend``, then in turn each contender (direct, framegate
with the Cython codec, framegate with ``FRAMEGATE_PURE=1``, a raw uvloop TCP
relay, a ``websockets``-library proxy, nginx with one worker when installed) and
drives each workload through it with ``framegate bench``. With ``taskset`` the
proxy runs on CPU 1 and the load generator and backend on CPU 0, so throughput
is bounded by the load side and the discriminating figure is **work per proxy
CPU-second**: messages (or MB, or setups) divided by the proxy's on-CPU time
over the measured window, read from /proc (schedstat, in ns) at the bench's start/end marks.
Each workload runs ``--reps`` times, repetitions interleaved (every contender
once per round, in rotated order, so a drift in the shared machine's load does
not land on one contender); medians are reported, with each contender's figure
as a ratio to the raw relay and to the websockets proxy.

Output: a table on stdout and in ``latest.txt``, JSON and a PNG bar chart of
the ratios under ``benchmarks/results/`` (or ``--out``). The full matrix takes a few minutes;
``--quick`` (1 repetition, 2 s loads) is the smoke run the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import client_vs_websockets
from benchmarks.contenders import CONTENDERS, Running
from benchmarks.procfs import cpu_seconds, rss_kib
from proxy.bench.process import REPO_ROOT, echo_backend, python_argv, raise_fd_limit
from proxy.bench.worker import MARK_PREFIX

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LOAD_CPU, PROXY_CPU = 0, 1
FULL_REPS, FULL_SECONDS, FULL_WARMUP_S = 3, 2.5, 0.3
QUICK_REPS, QUICK_SECONDS, QUICK_WARMUP_S = 1, 2.0, 0.25
BENCH_SLACK_S = 60.0
"""Ceiling on one bench process beyond its planned time (connect and close phases)."""
SEED = 6
RAW, WS = "raw", "ws-proxy"
KIB = 1024
MB = 1_000_000


@dataclass(frozen=True, slots=True)
class Workload:
    """One row group of the matrix.

    Attributes:
        figure: the headline: ``msgs``/``mb``/``setups`` per proxy CPU-second
            (higher is better) or ``kib_per_conn`` of proxy RSS (lower is better).
        timed: runs for the matrix duration (others are bounded by count).
        fresh: each repetition gets a newly started contender, so an RSS delta is not
            hidden by heap an earlier workload grew and the allocator kept.
    """

    name: str
    title: str
    args: tuple[str, ...]
    figure: str
    timed: bool
    fresh: bool = False


IDLE_ARGS = ("--idle", "2000", "--ramp-up", "3", "-d", "1", "--timeout", "30")
"""Opened over 3 s (slow upgraders would otherwise time out) and held 1 s before RSS is read."""
WORKLOADS = (
    Workload("64B-closed", "64 B closed loop, 50 conns", ("-c", "50", "-s", "64"), "msgs", True),
    Workload("64B-pipelined", "64 B pipelined, 10 conns x 32", ("-c", "10", "-w", "32", "-s", "64"), "msgs", True),
    Workload("64KiB-binary", "64 KiB binary, 10 conns", ("-c", "10", "-s", "65536", "--binary"), "mb", True),
    Workload("connect", "2000 setups, 50 at a time", ("--connect-only", "-c", "50", "-m", "2000"), "setups", False),
    Workload("idle", "2000 idle connections", IDLE_ARGS, "kib_per_conn", False, fresh=True),
)
HEADLINE_UNITS = {
    "msgs": "msgs/proxy-CPU-s",
    "mb": "MB/proxy-CPU-s",
    "setups": "setups/proxy-CPU-s",
    "kib_per_conn": "KiB RSS/conn",
}
TARGETS = (
    # (workload, figure, comparator, bound, against): issue 6's targets for framegate (Cython)
    ("64B-closed", "headline", ">=", 0.9, RAW),
    ("64B-closed", "headline", ">=", 2.5, WS),
    ("64B-pipelined", "headline", ">=", 0.8, RAW),
    ("64KiB-binary", "headline", ">=", 0.85, RAW),
    ("64B-closed", "p99_us", "<=", 1.3, RAW),
    ("connect", "headline", ">=", 0.7, RAW),
    ("idle", "headline", "<=", 8.0, None),
)


def _pinning() -> tuple[int | None, int | None]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return LOAD_CPU, PROXY_CPU
    return None, None


def _bench_argv(url: str, workload: Workload, seconds: float, warmup: float, json_path: Path) -> list[str]:
    timing = ("-d", str(seconds), "--warmup", str(warmup)) if workload.timed else ()
    return python_argv(
        "-m", "proxy", "bench", "--url", url, *workload.args, *timing,
        "--seed", str(SEED), "--marks", "--json", str(json_path),
    )  # fmt: skip


def run_once(running: Running, workload: Workload, seconds: float, warmup: float, cpu: int | None) -> dict[str, Any]:
    """One bench process against one contender; proxy CPU and RSS sampled at its marks."""
    pid = running.pid
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "bench.json"
        argv = [
            *(["taskset", "-c", str(cpu)] if cpu is not None else []),
            *_bench_argv(running.url, workload, seconds, warmup, json_path),
        ]
        rss_before = rss_kib(pid) if pid else 0
        marks: dict[str, tuple[float, int]] = {}
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=raise_fd_limit,
        )  # fmt: skip
        watchdog = threading.Timer(seconds + warmup + BENCH_SLACK_S, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(MARK_PREFIX):
                    name = line.split()[-1]
                    marks[name] = (cpu_seconds(pid), rss_kib(pid)) if pid else (0.0, 0)
            proc.wait()
        finally:
            watchdog.cancel()
        summary: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    return _figures(workload, summary, marks, rss_before, pid is not None)


def _figures(
    workload: Workload, summary: dict[str, Any], marks: dict[str, tuple[float, int]], rss_before: int, proxied: bool
) -> dict[str, Any]:
    if not summary:
        return {"failed": True}
    cpu = marks["end"][0] - marks["start"][0] if proxied and {"start", "end"} <= marks.keys() else 0.0
    work = {
        "msgs": summary["messages"],
        "mb": summary["messages"] * summary["size"] / MB,
        "setups": summary["messages"],
    }
    timed_messages = workload.timed and summary["messages"] > 0
    figures: dict[str, Any] = {
        "msgs_per_s": summary["msgs_per_s"],
        "mb_per_s": summary["mb_per_s"],
        "connections_per_s": summary["connections_per_s"],
        "p50_us": summary["latency_us"]["p50"] if timed_messages else None,
        "p99_us": summary["latency_us"]["p99"] if timed_messages else None,
        "connect_p99_ms": summary["connect_ms"]["p99"],
        "proxy_cpu_s": cpu,
        "errors": summary["errors"],
        "codec": summary["codec"],
    }
    if workload.figure == "kib_per_conn":
        opened = summary["connections_opened"]
        rss_open = marks.get("end", (0.0, 0))[1]  # after the hold: lazily made upstreams exist by then
        figures["headline"] = (rss_open - rss_before) / opened if proxied and opened else None
    else:
        figures["headline"] = work[workload.figure] / cpu if cpu > 0 else None
    return figures


def _median(samples: Iterable[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else None


def aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of every numeric figure; errors summed over repetitions."""
    keys = (
        "headline",
        "msgs_per_s",
        "mb_per_s",
        "connections_per_s",
        "p50_us",
        "p99_us",
        "connect_p99_ms",
        "proxy_cpu_s",
    )
    result: dict[str, Any] = {key: _median(samples, key) for key in keys}
    errors: dict[str, int] = {}
    for s in samples:
        for key, n in s.get("errors", {}).items():
            errors[key] = errors.get(key, 0) + n
    result["errors"] = errors
    result["reps"] = len(samples)
    result["failed_reps"] = sum(1 for s in samples if s.get("failed"))
    return result


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def add_ratios(table: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Each contender's headline and p99 as a ratio to the raw relay and to the websockets proxy."""
    for row in table.values():
        for figures in row.values():
            for base_name, suffix in ((RAW, "raw"), (WS, "ws")):
                base = row.get(base_name, {})
                figures[f"x_{suffix}"] = _ratio(figures.get("headline"), base.get("headline"))
                figures[f"p99_x_{suffix}"] = _ratio(figures.get("p99_us"), base.get("p99_us"))


def check_targets(table: dict[str, dict[str, dict[str, Any]]], contender: str = "framegate") -> list[dict[str, Any]]:
    """Issue 6's targets for ``contender``: met, missed, or not measurable in this run."""
    checks = []
    for workload, figure, op, bound, against in TARGETS:
        mine = table.get(workload, {}).get(contender, {})
        if against is None:
            value = mine.get(figure)
        else:
            key = ("x_" if figure == "headline" else "p99_x_") + ("raw" if against == RAW else "ws")
            value = mine.get(key)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        checks.append(
            {
                "workload": workload,
                "figure": figure,
                "target": f"{op} {bound}",
                "against": against,
                "value": value,
                "met": met,
            }
        )
    return checks


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    header = (
        f"{'workload':<14} {'contender':<15} {'msgs/s':>9} {'MB/s':>8} {'p50 us':>8} {'p99 us':>8} "
        f"{'proxy CPU s':>11} {'headline':>12} {'unit':<19} {'x raw':>6} {'x ws':>6}  notes"
    )
    lines = [header, "-" * len(header)]
    for workload in WORKLOADS:
        for name, f in table.get(workload.name, {}).items():
            rate = f["connections_per_s"] if workload.figure == "setups" else f["msgs_per_s"]
            notes = ", ".join(f"{k} x{n}" for k, n in f["errors"].items()) or f.get("note", "")
            lines.append(
                f"{workload.name:<14} {name:<15} {_fmt(rate):>9} {_fmt(f['mb_per_s'], 1):>8} {_fmt(f['p50_us']):>8} "
                f"{_fmt(f['p99_us']):>8} {_fmt(f['proxy_cpu_s'], 2):>11} {_fmt(f['headline'], 1):>12} "
                f"{HEADLINE_UNITS[workload.figure]:<19} {_fmt(f['x_raw'], 2):>6} {_fmt(f['x_ws'], 2):>6}  {notes}"
            )
    return "\n".join(lines)


def plot(table: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    """Grouped bars: each contender's headline as a ratio to the raw relay, per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in CONTENDERS if any(n in table.get(w.name, {}) for w in WORKLOADS) and n != "direct"]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        ratios = [table.get(w.name, {}).get(name, {}).get("x_raw") or 0.0 for w in WORKLOADS]
        ax.bar([x + i * width for x in range(len(WORKLOADS))], ratios, width, label=name)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(WORKLOADS))])
    ax.set_xticklabels([f"{w.name}\n({HEADLINE_UNITS[w.figure]})" for w in WORKLOADS], fontsize=8)
    ax.set_ylabel("ratio to raw uvloop relay (idle: lower is better)")
    ax.set_title("framegate vs peers: work per proxy CPU-second, same run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rounds(contenders: list[str], reps: int) -> Iterator[tuple[int, list[str]]]:
    """Repetition by repetition, every contender once, the order rotated each time.

    Interleaving keeps a drift in the shared machine's load from landing on one
    contender's three repetitions; rotating keeps any from always going first.
    """
    for rep in range(reps):
        shift = rep % len(contenders)
        yield rep, contenders[shift:] + contenders[:shift]


def _one_round(
    name: str, backend: str, cpus: tuple[int | None, int | None], seconds: float, warmup: float
) -> tuple[dict[str, dict[str, Any]], str]:
    """Every workload once through contender ``name``: samples by workload, and its note."""
    load_cpu, proxy_cpu = cpus
    start = partial(CONTENDERS[name], backend, proxy_cpu)
    samples: dict[str, dict[str, Any]] = {}
    with start() as running:
        note = running.note
        for workload in (w for w in WORKLOADS if not w.fresh):
            samples[workload.name] = run_once(running, workload, seconds, warmup, load_cpu)
    for workload in (w for w in WORKLOADS if w.fresh):
        with start() as running:
            samples[workload.name] = run_once(running, workload, seconds, warmup, load_cpu)
    return samples, note


def run_matrix(contenders: list[str], reps: int, seconds: float, warmup: float) -> dict[str, Any]:
    cpus = load_cpu, proxy_cpu = _pinning()
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    notes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    with echo_backend(cpu=load_cpu) as backend:
        for rep, order in _rounds(contenders, reps):
            for name in (n for n in order if n not in skipped):
                print(f"-- {name} (repetition {rep + 1} of {reps})", file=sys.stderr, flush=True)
                try:
                    by_workload, notes[name] = _one_round(name, backend.url, cpus, seconds, warmup)
                except (OSError, RuntimeError, TimeoutError) as exc:
                    skipped[name] = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                    print(f"   skipped: {skipped[name]}", file=sys.stderr, flush=True)
                    continue
                for workload_name, sample in by_workload.items():
                    samples.setdefault((workload_name, name), []).append(sample)
    table: dict[str, dict[str, dict[str, Any]]] = {w.name: {} for w in WORKLOADS}
    for name in contenders:
        for workload in WORKLOADS:
            if name not in skipped and (workload.name, name) in samples:
                table[workload.name][name] = {**aggregate(samples[(workload.name, name)]), "note": notes[name]}
    add_ratios(table)
    return {
        "table": table,
        "skipped": skipped,
        "targets": check_targets(table),
        "pinning": {"load_and_backend_cpu": load_cpu, "proxy_cpu": proxy_cpu}
        if proxy_cpu is not None
        else "none (taskset missing or one CPU)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, 2 s loads")
    parser.add_argument("--only", help=f"comma-separated contenders (default all: {','.join(CONTENDERS)})")
    parser.add_argument("--reps", type=int, help="repetitions per workload (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per timed load (default 2.5, quick 2)")
    parser.add_argument("--no-client-compare", action="store_true", help="skip the bench-vs-websockets client run")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where JSON and PNG go (default %(default)s)")
    args = parser.parse_args(argv)
    contenders = [c.strip() for c in args.only.split(",")] if args.only else list(CONTENDERS)
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {list(CONTENDERS)}")
    reps = args.reps or (QUICK_REPS if args.quick else FULL_REPS)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else FULL_SECONDS)
    warmup = QUICK_WARMUP_S if args.quick else FULL_WARMUP_S
    started = time.monotonic()
    result = run_matrix(contenders, reps, seconds, warmup)
    if not args.no_client_compare:
        result["client_comparison"] = client_vs_websockets.compare(seconds)
    result["meta"] = run_meta("benchmarks.run", argv, reps, seconds, warmup, started)
    _write_outputs(result, args.out)
    return 0


def run_meta(
    module: str, argv: list[str] | None, reps: int, seconds: float, warmup: float, started: float
) -> dict[str, Any]:
    """What a benchmark run records about itself: command, repetitions, seed, machine, wall time, date."""
    return {
        "command": " ".join([f"python -m {module}", *(argv if argv is not None else sys.argv[1:])]),
        "reps": reps, "seconds": seconds, "warmup_s": warmup, "seed": SEED,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "wall_s": time.monotonic() - started,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip


def render_report(result: dict[str, Any]) -> str:
    """The run as text: pinning, the table, skips, targets, the client comparison."""
    lines = [f"pinning: {result['pinning']}", render_table(result["table"])]
    lines += [f"skipped {name}: {why}" for name, why in result["skipped"].items()]
    for check in result["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[check["met"]]
        against = f" x {check['against']}" if check["against"] else ""
        what = f"{check['workload']} {check['figure']}{against} {check['target']}"
        lines.append(f"target {what}: {_fmt(check['value'], 2)} {verdict}")
    if "client_comparison" in result:
        lines.append(client_vs_websockets.render(result["client_comparison"]))
    return "\n".join(lines)


def _write_outputs(result: dict[str, Any], out: Path) -> None:
    """stdout, and the same text beside the JSON and the chart, so the three never disagree."""
    out.mkdir(parents=True, exist_ok=True)
    report = render_report(result)
    print(report)
    (out / "latest.txt").write_text(report + "\n")
    (out / "latest.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    plot(result["table"], out / "ratios.png")
    print(f"wrote latest.txt, latest.json and ratios.png under {out} in {result['meta']['wall_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
