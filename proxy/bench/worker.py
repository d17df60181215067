"""One load-generating process: opens connections, drives one mode, returns a picklable result.

Layer 5 (IO). Modes:

- closed loop (``window=1``) and pipelined (``window=W``): each connection keeps
  W messages outstanding and sends the next one from inside the echo callback;
- open loop (``rate``): a scheduler sends at fixed intended times round-robin
  over the connections, and latency runs from the *intended* time, so a stall
  shows up as latency instead of silently lowering the send rate
  (no coordinated omission);
- connect-only: ``connections`` concurrent slots connect, upgrade and close in
  a loop; the figure is completed setups per second;
- idle: open K connections, hold them, close them (memory measurements).

Every mode is bounded by its duration, a message quota, or the hard ceiling
``BENCH_MAX_DURATION_S``. Only true echoes are timed and counted as messages;
a wrong reply (``Listener.rejected``) is an error, and when it stands for a
message it frees a place in the window, and counts toward the quota when it
arrives while measuring, just as an echo would: a throttling gateway cannot
stall a run.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.bench.client import BenchConnection, Listener, SendBatch, WebSocketClient, open_connection
from proxy.bench.endpoint import Target, error_key
from proxy.bench.histogram import Histogram
from proxy.bench.message import Message
from proxy.bench.scenario import Scenario
from proxy.bench.series import Interval
from proxy.bench.shape import Stages
from proxy.limits import BENCH_OUT_INTERVAL_S, BENCH_PROGRESS_INTERVAL_S, BENCH_STAGE_TICK_S, CLOSE_TIMEOUT_S

_NS_PER_S = 1_000_000_000
MARK_PREFIX = "framegate bench mark"
"""Printed (flushed) when the measured window starts and ends, with ``--marks``: benchmarks/run.py
samples the proxy's CPU time and RSS at these lines."""

Publish = Callable[[int, int], None]
"""Progress sink: ``(measured messages or setups so far, errors so far)``."""
Sink = Callable[[Interval], None]
"""Where a worker's per-second intervals go (``--out``)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one worker does; every field is this worker's share (picklable)."""

    target: Target
    connections: int
    size: int
    binary: bool
    window: int
    rate: float | None
    connect_only: bool
    idle: bool
    duration_s: float
    messages: int | None
    ramp_up_s: float
    warmup_s: float
    timeout_s: float
    seed: int
    marks: bool
    scenario: Scenario | None = None
    """--scenario: connections run its steps (``proxy.bench.flow``) instead of echo traffic."""
    first_connection: int = 0
    """Index of this worker's first connection among all workers' (scenario roles and ``{{conn}}``)."""
    stages: Stages | None = None
    """--stages: open connections (or, with ``rate``, the message rate) ramp through these targets."""
    churn: int | None = None
    """--churn N: each connection closes after N messages and a new one takes its place."""

    @property
    def mode(self) -> str:
        if self.scenario is not None:
            return "scenario"
        if self.connect_only:
            return "connect-only"
        if self.idle:
            return "idle"
        if self.rate is not None:
            return "open-loop"
        return "closed-loop" if self.window == 1 else "pipelined"


@dataclass(slots=True)
class WorkerResult:
    """What one worker measured; merged by ``proxy.bench.main``."""

    mode: str
    messages: int = 0
    """Echoes received for messages sent in the measured window (connect-only: completed setups).
    Wrong replies are not echoes: they count under ``errors`` as ``reply:<group>``."""
    payload_bytes: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    """This process's user+system CPU time over the run: the load generator's own cost."""
    connections_opened: int = 0
    latency: Histogram = field(default_factory=Histogram)
    connect: Histogram = field(default_factory=Histogram)
    errors: Counter[str] = field(default_factory=Counter)
    interrupted: bool = False
    """Stopped early by SIGINT: the figures cover the window measured so far."""
    sent: int = 0
    """Scenario messages sent (echo mode: not counted, every message is answered or an error)."""
    unmatched: int = 0
    """Scenario replies that no ``expect`` was waiting for (skipped, not errors)."""
    reconnects: int = 0
    """Scenario connections opened to run the steps again (``iterate``), after a user's first."""
    unexpected_closes: int = 0
    """Scenario connections that ended before their steps did, by the server or a failure (also under errors)."""
    intended_closes: int = 0
    """Connections bench closed on purpose before the end of the run: a ``close`` step, the end of an
    iteration, ramping down ``--stages`` (not errors)."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Driver(Listener):
    """Runs one ``Plan`` on the running event loop (construct it there)."""

    def __init__(
        self,
        plan: Plan,
        publish: Publish | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        sink: Sink | None = None,
    ) -> None:
        self.plan = plan
        self.sink = sink
        self.target = plan.target
        self.tls = plan.target.ssl_context()
        self.message = Message.build(plan.size, plan.binary, plan.seed)
        self.clock = clock
        self.publish = publish
        self.result = WorkerResult(plan.mode)
        self.conns: set[WebSocketClient] = set()
        self.batch = SendBatch(clock)
        self._sending = False
        self._refill = False
        self.measure_from_ns = 0
        self.measuring = False
        self.sent_measured = 0
        self.answered_measured = 0
        """Measured messages answered, by an echo or a wrong reply: what ends a --messages run."""
        self._live = 0
        self._churn = plan.churn or 0
        self._opening: set[asyncio.Future[WebSocketClient | None]] = set()
        """Connections being opened by --churn or --stages (kept referenced until done)."""
        self._finished: asyncio.Future[None] | None = None
        self._series: asyncio.Task[None] | None = None
        self._interval_index = 0
        self._interval_start_ns = 0
        self._interval_snapshot: tuple[list[int], int, int, Counter[str], int, int] = ([], 0, 0, Counter(), 0, 0)

    @property
    def sending(self) -> bool:
        """Whether the load is on: answered messages are replaced, the open loop ticks."""
        return self._sending

    @sending.setter
    def sending(self, value: bool) -> None:
        self._sending = value
        plan = self.plan
        # An echo answered in a closed or pipelined loop with no quota and no churn just sends the next one.
        self._refill = value and plan.rate is None and plan.messages is None and not plan.churn

    # --- Listener ----------------------------------------------------------------
    def opened(self, conn: WebSocketClient) -> None:
        self.result.connections_opened += 1
        self.result.connect.record(conn.connect_ns)
        self._live += 1
        if self.sending and self.plan.rate is None and isinstance(conn, BenchConnection):
            if self._churn:
                self._churn_send(conn, self.plan.window)
            else:
                self._send(conn, self.plan.window)

    def messages(self, conn: BenchConnection, count: int, received_ns: int) -> None:
        pending = conn.pending
        if not self.measuring:
            for _ in range(count):
                pending.popleft()
        elif count == 1:  # the closed loop's every message
            stamp = pending.popleft()
            if stamp >= self.measure_from_ns:
                self.result.latency.record(received_ns - stamp)
                self.result.messages += 1
                self.answered_measured += 1
        else:
            record = self.result.latency.record
            since = self.measure_from_ns
            measured = 0
            for _ in range(count):
                stamp = pending.popleft()
                if stamp >= since:
                    record(received_ns - stamp)
                    measured += 1
            self.result.messages += measured
            self.answered_measured += measured
        if self._refill:  # the common case, without the checks of _answered
            if conn.is_open:
                conn.send(count)
        else:
            self._answered(conn, count)

    def rejected(self, conn: BenchConnection, key: str, answers: bool) -> None:
        self.result.errors[key] += 1
        if answers:
            if self.measuring:  # which message it refused is not known yet (see proxy.bench.client)
                self.answered_measured += 1
            self._answered(conn, 1)

    def _answered(self, conn: BenchConnection, count: int) -> None:
        """``count`` messages of ``conn`` were answered: end at the quota, else refill the window."""
        quota = self.plan.messages
        if quota is not None and self.answered_measured >= quota:
            self._finish()
            return
        if self.sending and self.plan.rate is None:
            if self._churn:
                self._churn_send(conn, count)
            else:
                self._send(conn, count)

    def _churn_send(self, conn: BenchConnection, count: int) -> None:
        """--churn: send up to N messages per connection, then close it once answered and open another."""
        remaining = self._churn - conn.sent
        if remaining > 0:
            self._send(conn, min(count, remaining))
        elif conn.answered >= conn.sent and conn.is_open:
            conn.close()
            self._open_later()

    def failed(self, conn: WebSocketClient | None, key: str) -> None:
        self.result.errors[key] += 1

    def closed(self, conn: WebSocketClient) -> None:
        self.conns.discard(conn)
        if conn.upgraded:
            self._live -= 1
            self._finish_if_all_lost()

    def _finish_if_all_lost(self) -> None:
        """A load with every connection gone has nothing left to measure (checked once all were tried)."""
        if (
            self._live == 0
            and self.measuring
            and self.plan.mode not in ("connect-only", "idle")
            and self.plan.stages is None  # a ramp starts from (and may return to) zero
            and not self._opening
        ):
            self._finish()

    def _open_later(self) -> None:
        """Open one more connection in the background (it starts sending once upgraded)."""
        if self._finished_done():
            return
        task = asyncio.ensure_future(self._open_one())
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    def _send(self, conn: BenchConnection, count: int = 1) -> None:
        count = self.admit(count)
        if conn.is_open and count:
            conn.send(count)

    def admit(self, count: int = 1) -> int:
        """How many of ``count`` sends the measured quota still allows (all of them before measuring)."""
        if self.measuring:
            quota = self.plan.messages
            if quota is not None and count > quota - self.sent_measured:
                count = max(0, quota - self.sent_measured)
            self.sent_measured += count
        return count

    # --- run ------------------------------------------------------------------------
    async def run(self) -> WorkerResult:
        """Run the plan to completion and return what was measured."""
        cpu_before = _cpu_s()
        loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        progress = loop.create_task(self._watch_loop())
        try:
            if self.plan.connect_only:
                await self._run_connect_only()
            elif self.plan.idle:
                await self._run_idle()
            else:
                await self._run_load()
        finally:
            progress.cancel()
            await self._close_all()
        self.result.cpu_s = _cpu_s() - cpu_before
        self._report()
        return self.result

    def interrupt(self) -> None:
        """SIGINT: end the measured window now (or skip it), close cleanly, report what was measured."""
        self.result.interrupted = True
        self._finish()

    async def _run_load(self) -> None:
        self.sending = True
        if self.plan.stages is not None and self.plan.rate is None:
            await self._run_ramped()
            self.sending = False
            return
        await self._open_all()
        if self.plan.rate is not None:
            scheduler = OpenLoopScheduler(self, self.plan.rate, self.plan.stages)
            scheduler.start()
        assert self._finished is not None
        # Even with no warm-up, yield once: the open-loop scheduler's first tick (messages stamped
        # before the window) must run before measuring starts, or the quota would count them.
        await asyncio.wait([self._finished], timeout=self.plan.warmup_s)
        await self._measure_window()
        self.sending = False

    async def _run_idle(self) -> None:
        if self.plan.stages is not None:
            await self._run_ramped()
            return
        await self._open_all()
        await self._measure_window()

    async def _run_ramped(self) -> None:
        """--stages of connections: the window spans the stages; a task keeps the open count on target."""
        timer = self._start_window()
        ramp = asyncio.get_running_loop().create_task(self._ramp())
        try:
            await self._end_window(timer)
        finally:
            ramp.cancel()

    async def _ramp(self) -> None:
        """Every ``BENCH_STAGE_TICK_S``: open connections up to the stage's target, or close the newest above it."""
        assert self.plan.stages is not None
        stages = self.plan.stages
        start = self.clock()
        while True:
            target = round(stages.value_at((self.clock() - start) / _NS_PER_S))
            usable = [conn for conn in self.conns if conn.is_open]
            current = len(usable) + len(self._opening)
            for _ in range(target - current):
                self._open_later()
            for conn in sorted(usable, key=lambda c: c.started_ns)[target:]:
                conn.close()
                self.result.intended_closes += 1
            await asyncio.sleep(BENCH_STAGE_TICK_S)

    async def _run_connect_only(self) -> None:
        plan = self.plan
        started = 0
        timer = self._start_window()

        async def slot() -> None:
            nonlocal started
            while not self._finished_done() and (plan.messages is None or started < plan.messages):
                started += 1
                conn = await self._open_one()
                if conn is None:
                    continue
                conn.close()
                await asyncio.wait_for(asyncio.shield(conn.done), plan.timeout_s)
                self.result.messages += 1

        await asyncio.gather(*(slot() for _ in range(plan.connections)))
        self._finish()
        await self._end_window(timer)

    async def _measure_window(self) -> None:
        """The measured interval, from now until the duration, a quota or a total failure ends it."""
        await self._end_window(self._start_window())

    def _start_window(self) -> asyncio.TimerHandle:
        self._mark("start")
        self.batch.flush()  # messages queued before the window are stamped before it: not measured, not in the quota
        self.measure_from_ns = self.clock()
        self.measuring = True
        self._finish_if_all_lost()
        if self.sink is not None:
            self._series = asyncio.get_running_loop().create_task(self._series_loop())
        return asyncio.get_running_loop().call_later(self.plan.duration_s, self._finish)

    async def _end_window(self, timer: asyncio.TimerHandle) -> None:
        assert self._finished is not None
        try:
            await self._finished
        finally:
            timer.cancel()
            self.measuring = False
            self.result.elapsed_s = (self.clock() - self.measure_from_ns) / _NS_PER_S
            self.result.payload_bytes = self._payload_bytes_total()
            if self._series is not None:
                self._series.cancel()
                self._close_interval()
            self._mark("end")

    def _finished_done(self) -> bool:
        return self._finished is None or self._finished.done()

    def _finish(self) -> None:
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    # --- connections --------------------------------------------------------------------
    async def _open_all(self) -> None:
        n = self.plan.connections
        ramp = self.plan.ramp_up_s

        async def delayed(i: int) -> None:
            if ramp > 0:
                await asyncio.sleep(ramp * i / n)
            if not self._finished_done():  # interrupted while opening
                await self._open_one()

        await asyncio.gather(*(delayed(i) for i in range(n)))

    def _connection(self) -> WebSocketClient:
        """A new connection's protocol (echo mode: numbered messages, checked echoes)."""
        return BenchConnection(self.target, self, self.message, self.clock, self.batch)

    async def _open_one(self, factory: Callable[[], WebSocketClient] | None = None) -> WebSocketClient | None:
        """Connect and upgrade; None (and an error counted) if either fails.

        ``factory`` builds the connection's protocol (default ``_connection``):
        whoever may cancel the opening learns of the connection as it is made.
        """
        conn = await open_connection(
            self.target, factory or self._connection, self, self.clock, self.plan.timeout_s, self.tls
        )
        if conn is None:
            return None
        self.conns.add(conn)
        try:
            ok = await asyncio.wait_for(asyncio.shield(conn.ready), self.plan.timeout_s)
        except TimeoutError:
            conn.fail(error_key("timeout", "handshake"))
            return None
        return conn if ok else None

    async def _close_all(self) -> None:
        # Connections still being opened (--churn, --stages) end first: none may outlive the run unclosed.
        for task in list(self._opening):
            task.cancel()
        await asyncio.gather(*self._opening, return_exceptions=True)
        live = [conn for conn in self.conns if not conn.done.done()]
        for conn in live:
            conn.close()
        if live:
            await asyncio.wait([conn.done for conn in live], timeout=CLOSE_TIMEOUT_S)
        for conn in live:
            if not conn.done.done():
                conn.abort()
        self.conns.clear()

    # --- reporting ---------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        """Every interval: publish progress, and fail connections whose oldest message is overdue."""
        timeout_ns = int(self.plan.timeout_s * _NS_PER_S)
        while True:
            await asyncio.sleep(BENCH_PROGRESS_INTERVAL_S)
            deadline = self.clock() - timeout_ns
            for conn in self.conns:
                if isinstance(conn, BenchConnection) and conn.is_open and conn.overdue(deadline):
                    conn.fail(error_key("timeout", "message"))
            if self.publish is not None:
                self.publish(self.result.messages, sum(self.result.errors.values()))

    async def _series_loop(self) -> None:
        """Close an interval every ``BENCH_OUT_INTERVAL_S`` of the window, on the window's own grid."""
        self._start_interval(self.measure_from_ns)
        step_ns = int(BENCH_OUT_INTERVAL_S * _NS_PER_S)
        while True:
            due = self.measure_from_ns + (self._interval_index + 1) * step_ns
            await asyncio.sleep(max(0, due - self.clock()) / _NS_PER_S)
            self._close_interval()

    def _start_interval(self, now_ns: int) -> None:
        result = self.result
        self._interval_start_ns = now_ns
        self._interval_snapshot = (
            result.latency.snapshot(),
            result.messages,
            self._payload_bytes_total(),
            Counter(result.errors),
            result.reconnects,
            result.unexpected_closes,
        )

    def _payload_bytes_total(self) -> int:
        """Payload bytes of the measured messages so far (echo: each one is ``size`` bytes)."""
        return 0 if self.plan.connect_only or self.plan.idle else self.result.messages * self.plan.size

    def _close_interval(self) -> None:
        """Hand the interval since the last one to the sink; what recording costs stays unchanged."""
        assert self.sink is not None
        now = self.clock()
        if now <= self._interval_start_ns:
            return
        snapshot, count, payload, errors, reconnects, unexpected = self._interval_snapshot
        interval = Interval(
            index=self._interval_index,
            end_s=(now - self.measure_from_ns) / _NS_PER_S,
            duration_s=(now - self._interval_start_ns) / _NS_PER_S,
            connections=self._live,
            messages=self.result.messages - count,
            payload_bytes=self._payload_bytes_total() - payload,
            latency=self.result.latency.since(snapshot),
            errors=self.result.errors - errors,
            reconnects=self.result.reconnects - reconnects,
            unexpected_closes=self.result.unexpected_closes - unexpected,
        )
        self._interval_index += 1
        self._start_interval(now)
        self.sink(interval)

    def _report(self) -> None:
        if self.publish is not None:
            self.publish(self.result.messages, sum(self.result.errors.values()))

    def _mark(self, name: str) -> None:
        if self.plan.marks:
            print(f"{MARK_PREFIX} {name}", flush=True)


class OpenLoopScheduler:
    """Sends at intended times ``t0 + k / rate``, round-robin over open connections.

    Each message carries its intended time, so latency includes any delay in
    sending it: a stalled proxy shows as latency, not as a lower rate.
    """

    def __init__(self, driver: Driver, rate: float, stages: Stages | None = None) -> None:
        self.driver = driver
        self.rate = rate
        self.stages = stages
        self.t0 = driver.clock()
        self.scheduled = 0
        self._next_conn = 0

    def start(self) -> None:
        asyncio.get_running_loop().call_soon(self._tick)

    def _due_ns(self, k: int) -> int | None:
        """Intended send time of message ``k`` (from 0); None once ramping stages are over."""
        if self.stages is None:
            return self.t0 + int(k * _NS_PER_S / self.rate)
        at = self.stages.due_time(k)
        return None if at is None else self.t0 + int(at * _NS_PER_S)

    def _tick(self) -> None:
        driver = self.driver
        if not driver.sending:
            return
        now = driver.clock()
        conns = [c for c in driver.conns if c.is_open and isinstance(c, BenchConnection)]
        while conns:
            intended = self._due_ns(self.scheduled)
            if intended is None or intended > now:
                break
            self.scheduled += 1
            conn = conns[self._next_conn % len(conns)]
            self._next_conn += 1
            if not driver.admit():
                return
            conn.send(1, intended)
        next_due = self._due_ns(self.scheduled)
        if next_due is None:
            return
        delay = max(0.0, (next_due - driver.clock()) / _NS_PER_S)
        asyncio.get_running_loop().call_later(delay, self._tick)
