"""User-space instructions per relayed message (64 B, 64 KiB) and per connection set-up, framegate vs the raw relay.

``python -m benchmarks.instructions [--out DIR]`` (needs ``valgrind``; about a minute)

Wall-clock ratios on a shared 2-core machine move with whatever else runs;
instruction counts do not. Each contender runs under ``valgrind
--tool=callgrind`` in front of ``framegate echo-backend``; ``framegate bench``
drives the workload twice, ``SMALL`` then ``LARGE`` messages, with the
counters zeroed before and dumped after each run, so
``(I_large - I_small) / (LARGE - SMALL)`` is the cost of one more message with
connection set-up and start-up cancelled out. Kernel work (the socket calls
both contenders make alike) is not counted: this isolates what framegate adds
in user space, the part its own code decides.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.contenders import STAGE_PATH, UNTHROTTLED, set_route_throttling
from proxy.bench.process import ReadyProcess, echo_backend, python_argv

RESULTS = Path(__file__).resolve().parent / "results"
VALGRIND_START_S = 120.0
"""Ceiling for a contender's ready line under valgrind (start-up runs about 50 times slower)."""
BENCH_CEILING_S = 300.0
DUMP_WAIT_S = 1.0
"""callgrind_control returns before the dump file is complete; the dump is small, one second is plenty."""
CONNECTIONS = 10
WARM_UP = 500
WORKLOADS = {
    "64B-closed": ([], 1_000, 3_000),
    "64B-pipelined": (["--window", "32"], 5_000, 25_000),
    "64KiB-binary": (["--size", "65536", "--binary"], 200, 600),
    "connect": (["--connect-only"], 200, 600),
}
"""name: (extra ``framegate bench`` flags, SMALL, LARGE messages, or connections with ``--connect-only``).

A later ``--size`` overrides the 64 B default (argparse keeps the last)."""
_SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Count:
    workload: str
    contender: str
    instructions_per_message: float


def _bench(url: str, flags: list[str], messages: int) -> None:
    argv = python_argv(
        "-m", "proxy", "bench", "--url", url, "--connections", str(CONNECTIONS), "--size", "64",
        "--messages", str(messages), *flags,
    )  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=BENCH_CEILING_S)


def _counted(pid: int, out_dir: Path, url: str, flags: list[str], messages: int) -> int:
    """Instructions the process at ``pid`` spent while ``messages`` went through it."""
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    _bench(url, flags, messages)
    before = set(out_dir.iterdir())
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    time.sleep(DUMP_WAIT_S)
    (dump,) = set(out_dir.iterdir()) - before
    match = _SUMMARY.search(dump.read_text())
    assert match is not None, f"no summary in {dump}"
    return int(match.group(1))


@contextmanager
def _under_callgrind(contender: str, backend: str, out_dir: Path) -> Iterator[tuple[int, str]]:
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/{contender}.%p"]
    if contender == "framegate":
        db = out_dir / "framegate.db"
        args = ["-m", "proxy", "serve", "--backend", backend, "--port", "0", "--admin-port", "0", "--db", str(db)]
        args += ["--log-level", "WARNING", "--account-burst-limit", str(UNTHROTTLED)]
        args += ["--account-rate-limit", str(UNTHROTTLED), "--new-connections-per-s", str(UNTHROTTLED)]
        prefix = "framegate ready"
    else:
        args, prefix = ["-m", "benchmarks.peers.raw_relay", "--backend", backend, "--port", "0"], "raw-relay"
    with ReadyProcess([*valgrind, *python_argv(*args)], prefix, timeout=VALGRIND_START_S) as proc:
        if contender == "framegate":
            admin = proc.ready_line.split("admin=", 1)[1].split()[0]
            set_route_throttling(admin, UNTHROTTLED, float(UNTHROTTLED))
        yield proc.pid, proc.url + STAGE_PATH


def measure(out_dir: Path) -> list[Count]:
    counts = []
    with echo_backend() as backend:
        for contender in ("raw", "framegate"):
            with _under_callgrind(contender, backend.url, out_dir) as (pid, url):
                _bench(url, [], WARM_UP)
                for workload, (flags, small, large) in WORKLOADS.items():
                    low = _counted(pid, out_dir, url, flags, small)
                    high = _counted(pid, out_dir, url, flags, large)
                    counts.append(Count(workload, contender, (high - low) / (large - small)))
    return counts


def report(counts: list[Count]) -> str:
    by = {(c.workload, c.contender): c.instructions_per_message for c in counts}
    header = f"{'workload':<15}{'raw':>10}{'framegate':>12}{'x raw':>8}"
    lines = [f"{header}   (user-space instructions per message or set-up)"]
    for workload in WORKLOADS:
        raw, framegate = by[(workload, "raw")], by[(workload, "framegate")]
        lines.append(f"{workload:<15}{raw:>10,.0f}{framegate:>12,.0f}{framegate / raw:>8.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where instructions.json goes (default %(default)s)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("benchmarks.instructions: valgrind is not installed (apt-get install valgrind)")
        return 1
    with tempfile.TemporaryDirectory(prefix="framegate-callgrind-") as tmp:
        counts = measure(Path(tmp))
    print(report(counts))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instructions.json").write_text(json.dumps([asdict(c) for c in counts], indent=2) + "\n")
    print(f"wrote {args.out / 'instructions.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
