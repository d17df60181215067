"""Echo latency through the gateway while the control plane takes a bounded PATCH loop.

``python -m benchmarks.admin_writes [--root DIR] [--patches N]``: starts an
echo backend and ``framegate serve --backend`` from the tree at ``--root``
(default: this one, so an older checkout can be measured the same way), then
measures a closed-loop 64 B echo on one connection, first on a quiet gateway,
then while a separate process sends ``--patches`` UpdateStage requests (4 in
flight) to the admin port. Each control-plane write ends in a SQLite commit
with ``synchronous=FULL``; the figure shows whether that fsync stalls the data
plane's loop. Prints one JSON object: p50/p99 echo latency in ms, quiet and
under load, and the PATCH rate reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proxy.bench.process import REPO_ROOT, echo_backend

PAYLOAD = "x" * 64
QUIET_MESSAGES = 2000
LOADED_MAX_MESSAGES = 200_000
PATCHES = 2000
PATCHES_IN_FLIGHT = 4
CEILING_S = 120.0
"""Every phase stops by this, whatever its count."""
READY_PREFIX = "framegate ready"


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "messages": len(ordered),
    }


async def _echo(url: str, count: int, until: Any = None) -> list[float]:
    """Closed-loop echo latencies: ``count`` messages, or until ``until()`` turns true."""
    import websockets

    latencies: list[float] = []
    deadline = time.monotonic() + CEILING_S
    async with websockets.connect(url, compression=None) as ws:
        while len(latencies) < count and time.monotonic() < deadline and not (until and until()):
            start = time.perf_counter()
            await ws.send(PAYLOAD)
            assert await ws.recv() == PAYLOAD
            latencies.append(time.perf_counter() - start)
    return latencies


def _patch_loop(admin: str, api_id: str, patches: int, done: Any) -> None:
    """In a child process: ``patches`` UpdateStage requests, ``PATCHES_IN_FLIGHT`` at a time."""
    import aiohttp

    async def run() -> None:
        sent = 0
        deadline = time.monotonic() + CEILING_S
        url = f"{admin}/v2/apis/{api_id}/stages/prod"
        async with aiohttp.ClientSession() as session:

            async def worker() -> None:
                nonlocal sent
                while sent < patches and time.monotonic() < deadline:
                    sent += 1
                    async with session.patch(url, json={"description": f"patch {sent}"}) as response:
                        assert response.status == 200, await response.text()

            start = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(PATCHES_IN_FLIGHT)))
            done.value = sent / (time.monotonic() - start)

    asyncio.run(run())


def _start_gateway(root: Path, backend: str, db: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    argv = [sys.executable, "-m", "proxy", "serve", "--backend", backend, "--port", "0", "--admin-port", "0"]
    proc = subprocess.Popen([*argv, "--db", db], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY_PREFIX):
        proc.kill()
        raise RuntimeError(f"gateway did not start: {line!r}")
    return proc, dict(part.split("=", 1) for part in line.split()[2:])


def _api_id(admin: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{admin}/v2/apis", timeout=CEILING_S) as response:
        items = json.loads(response.read())["items"]
    return str(next(item["apiId"] for item in items if item["name"] == "quickstart"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="framegate tree to run (default: this one)")
    parser.add_argument("--patches", type=int, default=PATCHES, help="UpdateStage requests (default %(default)s)")
    args = parser.parse_args(argv)
    with echo_backend() as backend, tempfile.TemporaryDirectory() as tmp:
        proc, fields = _start_gateway(args.root.resolve(), backend.url, str(Path(tmp) / "fg.db"))
        try:
            url = f"{fields['data']}/prod"
            api_id = _api_id(fields["admin"])
            quiet = asyncio.run(_echo(url, QUIET_MESSAGES))
            rate = multiprocessing.Value("d", 0.0)
            patcher = multiprocessing.Process(target=_patch_loop, args=(fields["admin"], api_id, args.patches, rate))
            patcher.start()
            loaded = asyncio.run(_echo(url, LOADED_MAX_MESSAGES, until=lambda: not patcher.is_alive()))
            patcher.join(CEILING_S)
        finally:
            proc.terminate()
            proc.wait(CEILING_S)
    result = {
        "root": str(args.root),
        "quiet": _percentiles(quiet),
        "during_patches": _percentiles(loaded),
        "patches": args.patches,
        "patches_per_s": round(rate.value, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
