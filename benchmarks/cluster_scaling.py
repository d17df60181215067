"""Cluster ratios in one run: ``--redis`` on vs off, Redis commands per message, 2 workers vs 1.

Run: ``python -m benchmarks.cluster_scaling [--seconds 5] [--out FILE]`` (opt-in; starts its own
redis-server without persistence for the leases, an echo backend and each ``framegate serve``
on loopback ports, and stops them by PID). Every load is one ``framegate bench`` process bounded
by ``--seconds``. Prints JSON (docs/performance.md#scaling-out):

* ``redis_ratio``: relayed messages per proxy CPU-second with ``--redis`` over without
  (target >= 0.95: leases keep Redis off the message path). Proxy CPU is read from /proc
  (``benchmarks.procfs``) at the bench's start and end marks, as ``benchmarks.run`` does.
* ``redis_commands_per_message``: ``INFO commandstats`` calls during the ``--redis`` runs over
  the client messages relayed (the commands scripts run included); ``lease_calls_per_message``:
  the EVALSHA calls alone, one per Redis round trip (target <= 0.01).
* ``workers_ratio``: messages/s of ``--workers 2`` over ``--workers 1``, the load generator in
  ``--procs 2`` mode (on 2 cores shared by the generator, so it is bounded by them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import redis

from benchmarks.contenders import Running
from benchmarks.run import Workload, run_once
from proxy.bench.process import ReadyProcess, echo_backend, python_argv
from proxy.server.app import READY_PREFIX
from tests.helpers.redis import RedisServer, require_redis_server

CONNECTIONS = 32
WINDOW = 8
WARMUP_S = 1.0


def _serve(db: Path, backend: str, *flags: str) -> ReadyProcess:
    argv = python_argv("-m", "proxy", "serve", "--port", "0", "--admin-port", "0", "--db", str(db), *flags)
    return ReadyProcess([*argv, "--backend", backend], READY_PREFIX, timeout=60.0)


def _bench(url: str, seconds: float, pid: int, procs: int = 1) -> dict[str, Any]:
    """One bench run against ``url`` (``benchmarks.run.run_once``: proxy CPU between the bench's marks)."""
    args = ("-c", str(CONNECTIONS), "-w", str(WINDOW), "-p", str(procs))
    workload = Workload(f"cluster-p{procs}", f"64 B pipelined, {CONNECTIONS} conns x {WINDOW}", args, "msgs", True)
    figures = run_once(Running(url, pid), workload, seconds, WARMUP_S, None)
    figures["messages"] = round((figures["headline"] or 0.0) * figures["proxy_cpu_s"])
    return figures


def _commands(client: redis.Redis) -> tuple[int, int]:
    """(every command Redis ran, script-internal ones included; the EVALSHA calls alone)."""
    stats: dict[str, dict[str, Any]] = client.info("commandstats")
    total = sum(int(entry["calls"]) for entry in stats.values())
    return total, int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def measure(seconds: float, redis_url: str) -> dict[str, Any]:
    base = redis_url.rsplit("/", 1)[0]
    client = redis.Redis.from_url(redis_url)
    result: dict[str, Any] = {"seconds": seconds, "connections": CONNECTIONS, "window": WINDOW}
    with tempfile.TemporaryDirectory() as tmp, echo_backend() as echo:
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for label in ("off", "on", "off", "on"):  # interleaved: drift on a shared box hits both
            flags = ("--redis", f"{base}/1") if label == "on" else ()
            with _serve(Path(tmp) / f"{label}.db", echo.url, *flags) as proxy:
                before, evalsha_before = _commands(client)
                summary = _bench(f"{proxy.url}/prod", seconds, proxy.pid)
                after, evalsha_after = _commands(client)
                summary["redis_commands"] = after - before - 1  # our first INFO
                summary["lease_calls"] = evalsha_after - evalsha_before
                runs[label].append(summary)
        result["redis"] = runs
        off = sum(run["headline"] for run in runs["off"]) / len(runs["off"])
        on = sum(run["headline"] for run in runs["on"]) / len(runs["on"])
        result["redis_ratio"] = on / off if off else None
        messages = sum(run["messages"] for run in runs["on"])
        result["redis_commands_per_message"] = sum(run["redis_commands"] for run in runs["on"]) / messages
        result["lease_calls_per_message"] = sum(run["lease_calls"] for run in runs["on"]) / messages
        workers: dict[str, dict[str, Any]] = {}
        for count in (1, 2):
            with _serve(Path(tmp) / f"w{count}.db", echo.url, "--workers", str(count)) as proxy:
                workers[str(count)] = _bench(f"{proxy.url}/prod", seconds, proxy.pid, procs=2)
        result["workers"] = workers
        result["workers_ratio"] = workers["2"]["msgs_per_s"] / workers["1"]["msgs_per_s"]
    client.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument("--redis", help="use this redis:// server (database 1) instead of starting one")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    if args.redis:
        result = measure(args.seconds, args.redis)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            # No persistence: the leases' soft state (docs/cluster.md#model says why).
            server = RedisServer(require_redis_server(), Path(tmp))
            server.argv = lambda: [  # type: ignore[method-assign]
                server.binary, "--bind", "127.0.0.1", "--port", str(server.port), "--dir", tmp,
                "--appendonly", "no", "--save", "", "--daemonize", "no", "--logfile", "",
            ]  # fmt: skip
            server.start()
            try:
                result = measure(args.seconds, server.url)
            finally:
                server.stop()
    text = json.dumps({"environment": env, **result}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
