"""Cluster ratios in one run: ``--redis`` on vs off, Redis commands per message, 2 workers vs 1.

Run: ``python -m benchmarks.cluster_scaling [--seconds 5] [--pairs 3] [--rate 8000] [--out FILE]``
(opt-in; starts its own redis-server without persistence for the leases, an echo backend and each
``framegate serve`` on loopback ports, and stops them by PID). Every load is one ``framegate bench``
process bounded by ``--seconds``. Prints JSON (docs/performance.md#scaling-out):

* ``redis_ratio``: relayed messages per proxy CPU-second with ``--redis`` over without (target
  >= 0.95: leases keep Redis off the message path). Both sides carry the **same load**: an open
  loop of ``--rate`` messages a second (default 8000) for ``--seconds``, under AWS's default
  account and route limits (10000/s), so the leases run at their real cadence and nothing is
  throttled (a closed loop would flood past the limits and measure how fast "Too Many Requests"
  is answered instead). ``--pairs`` off/on pairs run interleaved, so drift on a shared machine
  hits both; every run is reported, with the ratio of the totals and each pair's ratio, and a
  run's refusals (``errors``) show when the load was not what was asked. Proxy CPU is read from
  /proc (``benchmarks.procfs``) at the bench's start and end marks, as ``benchmarks.run`` does.
  Nothing is pinned: on a shared 2-core machine a generator pinned to one CPU with the echo
  backend falls behind its schedule and catches up in bursts past the 5000 burst limit, so both
  sides got refusals (measured: 2,139 and 8,574 in one run each).
* ``redis_commands_per_message``: ``INFO commandstats`` calls during the ``--redis`` runs over
  the client messages relayed (the commands scripts run included); ``lease_calls_per_message``:
  the EVALSHA calls alone, one per Redis round trip (target <= 0.01).
* ``workers_ratio``: messages/s of ``--workers 2`` over ``--workers 1``, limits lifted as in
  ``benchmarks.run`` (one process's account limit would otherwise cap ``--workers 1`` at 10000/s
  and each worker of ``--workers 2`` at as much again), closed loop with the load generator in
  ``--procs 2`` mode (on 2 cores shared by the generator, so it is bounded by them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import redis

from benchmarks.contenders import UNTHROTTLED_FLAGS, Running, set_route_throttling
from benchmarks.run import Workload, run_once
from proxy.bench.process import ReadyProcess, echo_backend, python_argv
from proxy.server.app import READY_PREFIX
from tests.helpers.redis import RedisServer, require_redis_server

CONNECTIONS = 32
WINDOW = 8
WARMUP_S = 1.0
RATE = 8000
"""Default offered load of the ``--redis`` pairs: 80 % of AWS's default account and route rate."""
PAIRS = 3
NEW_CONNECTIONS = ("--new-connections-per-s", str(10**9))
"""The bench opens its connections at once; the ratio is about messages, not $connect quotas."""


def _serve(db: Path, backend: str, *flags: str) -> ReadyProcess:
    argv = python_argv("-m", "proxy", "serve", "--port", "0", "--admin-port", "0", "--db", str(db), *flags)
    return ReadyProcess([*argv, "--backend", backend], READY_PREFIX, timeout=60.0)


def _bench(url: str, seconds: float, pid: int, load: tuple[str, ...], procs: int = 1) -> dict[str, Any]:
    """One bench run against ``url`` (``benchmarks.run.run_once``: proxy CPU between the bench's marks)."""
    args = ("-c", str(CONNECTIONS), *load, "-p", str(procs))
    workload = Workload(f"cluster-p{procs}", f"64 B, {CONNECTIONS} conns, {' '.join(load)}", args, "msgs", True)
    figures = run_once(Running(url, pid), workload, seconds, WARMUP_S, None)
    figures["messages"] = round((figures["headline"] or 0.0) * figures["proxy_cpu_s"])
    return figures


def _commands(client: redis.Redis) -> tuple[int, int]:
    """(every command Redis ran, script-internal ones included; the EVALSHA calls alone)."""
    stats: dict[str, dict[str, Any]] = client.info("commandstats")
    total = sum(int(entry["calls"]) for entry in stats.values())
    return total, int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _redis_pairs(tmp: Path, echo: str, client: redis.Redis, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    load = ("--rate", str(args.rate))
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for pair in range(args.pairs):
        # Interleaved, and the order flips every pair: a drift or a warm cache favours neither side.
        for label in ("off", "on") if pair % 2 == 0 else ("on", "off"):
            flags = (*NEW_CONNECTIONS, *(("--redis", redis_url) if label == "on" else ()))
            with _serve(tmp / f"{label}{pair}.db", echo, *flags) as proxy:
                before, evalsha_before = _commands(client)
                summary = _bench(f"{proxy.url}/prod", args.seconds, proxy.pid, load)
                after, evalsha_after = _commands(client)
                summary["redis_commands"] = after - before - 1  # our first INFO
                summary["lease_calls"] = evalsha_after - evalsha_before
                summary["pair"] = pair
                runs[label].append(summary)
    per_pair = [on["headline"] / off["headline"] for off, on in zip(runs["off"], runs["on"], strict=True)]

    def per_cpu_s(side: list[dict[str, Any]]) -> float:
        return sum(run["messages"] for run in side) / sum(run["proxy_cpu_s"] for run in side)

    messages = sum(run["messages"] for run in runs["on"])
    return {
        "redis": runs,
        "redis_ratio": per_cpu_s(runs["on"]) / per_cpu_s(runs["off"]),
        "redis_ratio_per_pair": per_pair,
        "redis_ratio_median": statistics.median(per_pair),
        "redis_commands_per_message": sum(run["redis_commands"] for run in runs["on"]) / messages,
        "lease_calls_per_message": sum(run["lease_calls"] for run in runs["on"]) / messages,
    }


def measure(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    base = redis_url.rsplit("/", 1)[0]
    client = redis.Redis.from_url(redis_url)
    result: dict[str, Any] = {"seconds": args.seconds, "connections": CONNECTIONS, "rate": args.rate}
    with tempfile.TemporaryDirectory() as tmp, echo_backend() as echo:
        result.update(_redis_pairs(Path(tmp), echo.url, client, f"{base}/1", args))
        workers: dict[str, dict[str, Any]] = {}
        for count in (1, 2):
            flags = ("--workers", str(count), *UNTHROTTLED_FLAGS)
            with _serve(Path(tmp) / f"w{count}.db", echo.url, *flags) as proxy:
                admin = proxy.ready_line.split("admin=", 1)[1].split()[0]
                set_route_throttling(admin, 10**9, float(10**9))
                workers[str(count)] = _bench(f"{proxy.url}/prod", args.seconds, proxy.pid, ("-w", str(WINDOW)), 2)
        result["workers"] = workers
        result["workers_ratio"] = workers["2"]["msgs_per_s"] / workers["1"]["msgs_per_s"]
    client.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument("--pairs", type=int, default=PAIRS, help=f"--redis off/on pairs (default {PAIRS})")
    parser.add_argument("--rate", type=int, default=RATE, help=f"offered messages/s of the pairs (default {RATE})")
    parser.add_argument("--redis", help="use this redis:// server (database 1) instead of starting one")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    if args.redis:
        result = measure(args, args.redis)
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
                result = measure(args, server.url)
            finally:
                server.stop()
    text = json.dumps({"environment": env, **result}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
