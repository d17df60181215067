"""Does ``framegate bench`` out-run a client written with the ``websockets`` library? Per core, by how much?

``python -m benchmarks.client_vs_websockets [--seconds S]``: one echo backend
(pinned to CPU 1 when taskset exists), then the same closed-loop load (64 B
text, 10 connections) from ``framegate bench`` and from a plain ``websockets``
client, each pinned to CPU 0. The figure is messages per *client* CPU-second
(user+system time of the client's own process from ``getrusage``), which is
what "per core" means when the backend has a core of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.bench.message import make_payload
from proxy.bench.process import REPO_ROOT, echo_backend, python_argv

_MODULE = "benchmarks.client_vs_websockets"
CONNECTIONS = 10
SIZE = 64
TARGET_RATIO = 2.0
"""Issue 6: the load generator must do at least 2x a websockets client's messages per core."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def websockets_load(url: str, connections: int, seconds: float, size: int) -> dict[str, float]:
    """What a Python user would write: send, receive, check it is the echo, in a loop per connection.

    Both clients check every reply (``framegate bench`` counts only true
    echoes), so the comparison is of equal work.
    """
    import websockets

    payload = make_payload(size, 0).decode()
    sockets = [await websockets.connect(url, compression=None) for _ in range(connections)]
    count = wrong = 0
    deadline = time.monotonic() + seconds

    async def loop(ws: Any) -> None:
        nonlocal count, wrong
        while time.monotonic() < deadline:
            await ws.send(payload)
            if await ws.recv() == payload:
                count += 1
            else:
                wrong += 1

    cpu_before, started = _cpu_s(), time.monotonic()
    await asyncio.gather(*(loop(ws) for ws in sockets))
    elapsed, cpu = time.monotonic() - started, _cpu_s() - cpu_before
    for ws in sockets:
        await ws.close()
    return {"messages": count, "wrong_replies": wrong, "elapsed_s": elapsed, "client_cpu_s": cpu}


def taskset_prefix(cpu: int) -> list[str]:
    """``taskset -c CPU`` when taskset exists (pins a client or server to one core), else nothing."""
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []


def _run_json(argv: list[str], timeout: float) -> dict[str, Any]:
    env = {"PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def compare(seconds: float) -> dict[str, Any]:
    """Run both clients against one echo backend and return their figures and the ratio."""
    with echo_backend(cpu=1 if shutil.which("taskset") else None) as backend, tempfile.TemporaryDirectory() as tmp:
        url = backend.url + "/prod"
        ceiling = seconds * 3 + 30
        json_path = Path(tmp) / "bench.json"
        bench_argv = python_argv(
            "-m", "proxy", "bench", "--url", url, "-c", str(CONNECTIONS), "-s", str(SIZE),
            "-d", str(seconds), "--json", str(json_path),
        )  # fmt: skip
        subprocess.run(
            [*taskset_prefix(0), *bench_argv], cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT)},
            capture_output=True, timeout=ceiling, check=True,
        )  # fmt: skip
        ours = json.loads(json_path.read_text())
        theirs = _run_json(
            [
                *taskset_prefix(0),
                *python_argv("-m", "benchmarks.client_vs_websockets", "--client-only", url, str(seconds)),
            ],
            ceiling,
        )
    ours_per_cpu = ours["messages"] / ours["client_cpu_s"]
    theirs_per_cpu = theirs["messages"] / theirs["client_cpu_s"]
    return {
        "workload": f"{SIZE} B text closed loop, {CONNECTIONS} connections, {seconds:g} s, client on CPU 0",
        "framegate_bench": {
            "msgs_per_s": ours["msgs_per_s"],
            "msgs_per_client_cpu_s": ours_per_cpu,
            "client_cpu_s": ours["client_cpu_s"],
            "codec": ours["codec"],
        },
        "websockets_client": {
            "msgs_per_s": theirs["messages"] / theirs["elapsed_s"],
            "msgs_per_client_cpu_s": theirs_per_cpu,
            "client_cpu_s": theirs["client_cpu_s"],
        },
        "ratio_per_cpu": ours_per_cpu / theirs_per_cpu,
        "target_ratio": TARGET_RATIO,
        "meets_target": ours_per_cpu / theirs_per_cpu >= TARGET_RATIO,
    }


def render(result: dict[str, Any]) -> str:
    ours, theirs = result["framegate_bench"], result["websockets_client"]
    return "\n".join(
        [
            f"client comparison: {result['workload']}",
            f"  framegate bench    {ours['msgs_per_s']:>10,.0f} msgs/s  {ours['msgs_per_client_cpu_s']:>10,.0f} "
            f"msgs per client CPU-s  (codec {ours['codec']})",
            f"  websockets client  {theirs['msgs_per_s']:>10,.0f} msgs/s  {theirs['msgs_per_client_cpu_s']:>10,.0f} "
            "msgs per client CPU-s",
            f"  ratio per core     {result['ratio_per_cpu']:.2f}x  (target >= {TARGET_RATIO:g}x: "
            f"{'met' if result['meets_target'] else 'MISSED'})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per client (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    parser.add_argument("--client-only", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client_only:
        import uvloop

        url, seconds = args.client_only
        print(json.dumps(uvloop.run(websockets_load(url, CONNECTIONS, float(seconds), SIZE))))
        return 0
    return emit(compare(args.seconds), render, args.json)


def emit(result: dict[str, Any], render: Callable[[dict[str, Any]], str], json_path: str | None) -> int:
    """Print a comparison, write it as JSON when asked; exit 0 if it met its target."""
    print(render(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
