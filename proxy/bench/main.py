"""``framegate bench``: validate flags, split the load over ``--procs`` workers, merge, report.

Layer 5. One worker runs in-process; several run as forked processes that
publish progress counters through shared memory and send their per-second
intervals and results (histograms included) back pickled over a queue.
SIGINT ends the measured window early everywhere (the parent forwards it to
its workers) and the summary of what was measured is still printed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import queue
import signal
import sys
import time
from collections import Counter
from dataclasses import replace
from multiprocessing.sharedctypes import SynchronizedArray
from types import FrameType

from proxy.bench.client import probe
from proxy.bench.endpoint import Target, parse_header
from proxy.bench.flow import ScenarioDriver
from proxy.bench.process import raise_fd_limit
from proxy.bench.report import Progress, Summary, check_writable, write_json
from proxy.bench.scenario import load as load_scenario
from proxy.bench.series import Interval, SeriesWriter
from proxy.bench.shape import Stages
from proxy.bench.worker import Driver, Plan, Publish, Sink, WorkerResult
from proxy.limits import (
    BENCH_DEFAULT_DURATION_S,
    BENCH_EXIT_FAILED,
    BENCH_EXIT_INTERRUPTED,
    BENCH_EXIT_USAGE,
    BENCH_MAX_DURATION_S,
    BENCH_PROGRESS_INTERVAL_S,
    CLOSE_TIMEOUT_S,
)
from proxy.server.loop import run_loop

_COUNTERS_PER_WORKER = 2  # measured count, errors
DEFAULT_SIZE = 64
"""Echo message bytes when --size is not given."""
DEFAULT_CONNECTIONS = 10
"""Connections (scenario users) when --connections is not given."""
_Report = tuple[int, Interval | WorkerResult]
"""What a worker process sends the parent: (worker index, an interval or its final result)."""


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The whole run's plan; ``ValueError`` names the first flag that cannot work."""
    if (args.connections is not None and args.connections < 1) or args.procs < 1 or args.window < 1:
        raise ValueError("--connections, --procs and --window must be at least 1")
    scenario = None
    if args.scenario is not None:
        scenario = load_scenario(args.scenario)
        echo_only = {
            "--size": args.size is not None,
            "--binary": args.binary,
            "--window": args.window != 1,
            "--rate": args.rate is not None,
            "--connect-only": args.connect_only,
            "--idle": args.idle is not None,
            "--warmup": args.warmup > 0,
        }
        refused = [flag for flag, given in echo_only.items() if given]
        if refused:
            raise ValueError(f"{', '.join(refused)}: echo-mode flags; a --scenario says what to send")
    size = DEFAULT_SIZE if args.size is None else args.size
    if size < 1:
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
    stages = None
    connections = args.idle if args.idle is not None else args.connections or DEFAULT_CONNECTIONS
    if args.stages is not None:
        stages = Stages.parse(args.stages, start=args.rate or 0.0)
        clashes = {
            "--duration": args.duration is not None,
            "--ramp-up": args.ramp_up > 0,
            "--connect-only": args.connect_only,
            # the stages' targets are the connections (users), unless they ramp a --rate
            "--connections": args.connections is not None and args.rate is None,
        }
        refused = [flag for flag, given in clashes.items() if given]
        if refused:
            raise ValueError(f"--stages sets the load over time; it cannot be combined with {', '.join(refused)}")
        duration = stages.total_s
        if args.rate is None:
            connections = max(1, math.ceil(stages.peak))
    if args.churn is not None:
        if args.churn < 1:
            raise ValueError("--churn must be at least 1 message per connection")
        clashes = {
            "--rate": args.rate is not None,
            "--connect-only": args.connect_only,
            "--idle": args.idle is not None,
            "--scenario": args.scenario is not None,  # its users reconnect by themselves (iterate)
        }
        refused = [flag for flag, given in clashes.items() if given]
        if refused:
            modes = "the closed and pipelined echo modes"
            raise ValueError(f"--churn applies to {modes}; it cannot be combined with {', '.join(refused)}")
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
        connections=connections,
        size=size,
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
        scenario=scenario,
        stages=stages,
        churn=args.churn,
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
                first_connection=sum(_share(plan.connections, procs, j) for j in range(i)),
                stages=None if plan.stages is None else plan.stages.split(1 / procs),
            )
        )
    return shares


def run_worker(plan: Plan, publish: Publish | None = None, sink: Sink | None = None) -> WorkerResult:
    """Run one worker's plan on a fresh event loop (uvloop); SIGINT ends it early, cleanly."""
    raise_fd_limit()

    async def main() -> WorkerResult:
        driver = (ScenarioDriver if plan.scenario is not None else Driver)(plan, publish, sink=sink)
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, driver.interrupt)
        try:
            return await driver.run()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            # remove_signal_handler installs Python's default (KeyboardInterrupt); a worker process
            # must keep ignoring SIGINT, or Ctrl-C's second copy (the parent forwards what the
            # terminal already sent to the whole group) kills it before it reports its result.
            signal.signal(signal.SIGINT, previous)

    return run_loop(main())


def _worker_process(
    plan: Plan, index: int, counters: SynchronizedArray[int], reports: multiprocessing.Queue[_Report], series: bool
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the worker's loop takes SIGINT over

    def publish(count: int, errors: int) -> None:
        counters[index * _COUNTERS_PER_WORKER] = count
        counters[index * _COUNTERS_PER_WORKER + 1] = errors

    def sink(interval: Interval) -> None:
        reports.put((index, interval))

    try:
        result = run_worker(plan, publish, sink if series else None)
    except Exception as exc:  # reported as one line and counted: the parent must not wait for a result forever
        print(f"framegate bench: worker {index} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        result = WorkerResult(plan.mode, errors=Counter({"worker:failed": 1}))
    reports.put((index, result))


def _run_processes(plans: list[Plan], progress: Progress, writer: SeriesWriter | None) -> list[WorkerResult]:
    ctx = multiprocessing.get_context("fork")
    counters = ctx.Array("q", _COUNTERS_PER_WORKER * len(plans))
    reports: multiprocessing.Queue[_Report] = ctx.Queue()
    workers = [
        ctx.Process(target=_worker_process, args=(p, i, counters, reports, writer is not None))
        for i, p in enumerate(plans)
    ]
    collected: dict[int, WorkerResult] = {}
    first = plans[0]
    deadline = time.monotonic() + first.duration_s + first.ramp_up_s + first.warmup_s + 2 * first.timeout_s
    interrupted = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted, deadline
        interrupted = True
        deadline = min(deadline, time.monotonic() + first.timeout_s + CLOSE_TIMEOUT_S)
        for w in workers:
            if w.pid is not None and w.is_alive():
                os.kill(w.pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, forward)
    try:
        for w in workers:
            w.start()
        while len(collected) < len(plans) and time.monotonic() < deadline:
            try:
                index, payload = reports.get(timeout=BENCH_PROGRESS_INTERVAL_S)
            except queue.Empty:
                progress.update(sum(counters[0::2]), sum(counters[1::2]))
                if not any(w.is_alive() for w in workers):
                    deadline = min(deadline, time.monotonic() + CLOSE_TIMEOUT_S)  # what is still queued, then stop
                continue
            if isinstance(payload, Interval):
                if writer is not None:
                    writer.add(payload)
            else:
                collected[index] = payload
    finally:
        signal.signal(signal.SIGINT, previous)
        for w in workers:
            w.join(CLOSE_TIMEOUT_S)
            if w.is_alive():
                w.kill()
                w.join()
    lost = len(plans) - len(collected)
    missing = [
        WorkerResult(first.mode, errors=Counter({"worker:lost": 1}), interrupted=interrupted) for _ in range(lost)
    ]
    return [*collected.values(), *missing]


def _usage(args: argparse.Namespace) -> Plan:
    """The plan, after checking every output path: ``ValueError`` before any traffic."""
    plan = plan_from_args(args)
    if args.json:
        check_writable(args.json, "--json")
    for spec in args.out:
        check_writable(spec.path, "--out")
    return plan


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Entry point of ``framegate bench``; the exit code says how the run went (see ``Summary.judge``)."""
    try:
        plan = _usage(args)
    except ValueError as exc:
        print(f"framegate bench: {exc}", file=sys.stderr)
        return BENCH_EXIT_USAGE
    started = time.time()
    try:
        problem = run_loop(probe(plan.target, plan.target.ssl_context(), plan.timeout_s))
    except KeyboardInterrupt:
        print("framegate bench: interrupted before the run started", file=sys.stderr)
        return BENCH_EXIT_INTERRUPTED
    if problem:
        print(f"framegate bench: {plan.target.url}: {problem}", file=sys.stderr)
        return BENCH_EXIT_FAILED
    plans = split_plan(plan, args.procs)
    writer = SeriesWriter(args.out, len(plans)) if args.out else None
    progress = Progress(plan.duration_s if args.messages is None else 0.0)
    try:
        if len(plans) == 1:
            results = [run_worker(plans[0], progress.update, writer.add if writer else None)]
        else:
            results = _run_processes(plans, progress, writer)
    finally:
        if writer is not None:
            writer.close()
    progress.finish()
    summary = Summary.merge(plan, len(plans), results)
    summary.stamp(started, time.time(), argv if argv is not None else ["framegate", *sys.argv[1:]])
    summary.judge(args.threshold, args.allow_errors)
    if args.json != "-":
        print(summary.render(), flush=True)
    if args.json:
        write_json(summary, args.json)
    return summary.exit_code
