"""``framegate bench``: validate flags, split the load over ``--procs`` workers, merge, report.

Layer 5. One worker runs in-process; several run as forked processes that
publish progress counters through shared memory and send their results
(histograms included) back pickled over a queue.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
from collections import Counter
from dataclasses import replace
from multiprocessing.sharedctypes import SynchronizedArray

from proxy.bench.client import probe
from proxy.bench.endpoint import Target, parse_header
from proxy.bench.process import raise_fd_limit
from proxy.bench.report import Progress, Summary, write_json
from proxy.bench.worker import Driver, Plan, Publish, WorkerResult
from proxy.limits import (
    BENCH_DEFAULT_DURATION_S,
    BENCH_EXIT_FAILED,
    BENCH_MAX_DURATION_S,
    BENCH_PROGRESS_INTERVAL_S,
    CLOSE_TIMEOUT_S,
)
from proxy.server.loop import run_loop

_COUNTERS_PER_WORKER = 2  # measured count, errors


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The whole run's plan; ``ValueError`` names the first flag that cannot work."""
    if args.connections < 1 or args.procs < 1 or args.window < 1:
        raise ValueError("--connections, --procs and --window must be at least 1")
    if args.size < 1:
        raise ValueError("--size must be at least 1 byte")
    if args.rate is not None and args.rate <= 0:
        raise ValueError("--rate must be positive")
    if args.idle is not None and args.idle < 1:
        raise ValueError("--idle needs at least 1 connection")
    if args.messages is not None and args.messages < 1:
        raise ValueError("--messages must be at least 1")
    duration = args.duration if args.duration is not None else BENCH_DEFAULT_DURATION_S
    if args.messages is not None:
        duration = BENCH_MAX_DURATION_S  # run until the quota, under the hard ceiling
    if not 0 < duration <= BENCH_MAX_DURATION_S:
        raise ValueError(f"--duration must be in (0, {BENCH_MAX_DURATION_S:g}] seconds")
    target = Target.from_url(
        args.url,
        headers=[parse_header(h) for h in args.header],
        host=args.host,
        subprotocols=args.subprotocol,
        ca_file=args.ca,
        insecure=args.insecure,
    )
    target.ssl_context()  # --ca must load before any traffic
    return Plan(
        target=target,
        connections=args.idle if args.idle is not None else args.connections,
        size=args.size,
        binary=args.binary,
        window=args.window,
        rate=args.rate,
        connect_only=args.connect_only,
        idle=args.idle is not None,
        duration_s=duration,
        messages=args.messages,
        ramp_up_s=args.ramp_up,
        warmup_s=args.warmup,
        timeout_s=args.timeout,
        seed=args.seed,
        marks=getattr(args, "marks", False),
    )


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def split_plan(plan: Plan, procs: int) -> list[Plan]:
    """Each worker's share of connections, quota and rate; marks come from worker 0 only."""
    shares = []
    for i in range(procs):
        connections = _share(plan.connections, procs, i)
        if connections == 0:
            break
        shares.append(
            replace(
                plan,
                connections=connections,
                messages=None if plan.messages is None else max(1, _share(plan.messages, procs, i)),
                rate=None if plan.rate is None else plan.rate / procs,
                seed=plan.seed + i,
                marks=plan.marks and i == 0,
            )
        )
    return shares


def run_worker(plan: Plan, publish: Publish | None = None) -> WorkerResult:
    """Run one worker's plan on a fresh event loop (uvloop)."""
    raise_fd_limit()
    return run_loop(Driver(plan, publish).run())


def _worker_process(
    plan: Plan, index: int, counters: SynchronizedArray[int], results: multiprocessing.Queue[tuple[int, WorkerResult]]
) -> None:
    def publish(count: int, errors: int) -> None:
        counters[index * _COUNTERS_PER_WORKER] = count
        counters[index * _COUNTERS_PER_WORKER + 1] = errors

    results.put((index, run_worker(plan, publish)))


def _run_processes(plans: list[Plan], progress: Progress) -> list[WorkerResult]:
    ctx = multiprocessing.get_context("fork")
    counters = ctx.Array("q", _COUNTERS_PER_WORKER * len(plans))
    results: multiprocessing.Queue[tuple[int, WorkerResult]] = ctx.Queue()
    workers = [ctx.Process(target=_worker_process, args=(p, i, counters, results)) for i, p in enumerate(plans)]
    for w in workers:
        w.start()
    collected: dict[int, WorkerResult] = {}
    ceiling = plans[0].duration_s + plans[0].ramp_up_s + plans[0].warmup_s + 2 * plans[0].timeout_s
    waited = 0.0
    try:
        while len(collected) < len(plans) and waited < ceiling:
            try:
                index, result = results.get(timeout=BENCH_PROGRESS_INTERVAL_S)
                collected[index] = result
            except queue.Empty:
                waited += BENCH_PROGRESS_INTERVAL_S
                progress.update(sum(counters[0::2]), sum(counters[1::2]))
    finally:
        for w in workers:
            w.join(CLOSE_TIMEOUT_S)
            if w.is_alive():
                w.kill()
                w.join()
    lost = len(plans) - len(collected)
    missing = [WorkerResult(plans[0].mode, errors=Counter({"worker:lost": 1})) for _ in range(lost)]
    return [*collected.values(), *missing]


def run(args: argparse.Namespace) -> int:
    """Entry point of ``framegate bench``; 0 if anything succeeded, 1 if nothing did, 2 for bad flags."""
    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"framegate bench: {exc}", file=sys.stderr)
        return 2
    problem = run_loop(probe(plan.target, plan.target.ssl_context(), plan.timeout_s))
    if problem:
        print(f"framegate bench: {plan.target.url}: {problem}", file=sys.stderr)
        return BENCH_EXIT_FAILED
    plans = split_plan(plan, args.procs)
    progress = Progress(plan.duration_s if args.messages is None else 0.0)
    one = len(plans) == 1
    results = [run_worker(plans[0], progress.update)] if one else _run_processes(plans, progress)
    progress.finish()
    summary = Summary.merge(plan, len(plans), results)
    if args.json != "-":
        print(summary.render(), flush=True)
    if args.json:
        write_json(summary, args.json)
    succeeded = summary.messages > 0 or (plan.idle and summary.connections_opened > 0)
    return 0 if succeeded else 1
