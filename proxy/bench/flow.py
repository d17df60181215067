"""Running a ``--scenario``: one coroutine per connection walks its role's steps.

Layer 5 (IO). ``ScenarioConnection`` queues every data message it reads
(bounded by ``BENCH_INBOX_MESSAGES``) with the time it was read;
``ScenarioDriver`` opens the connections like echo mode does, starts every
connection's flow at once and measures until all flows end, the duration,
a ``--messages`` quota of matched replies, or Ctrl-C.

An ``expect`` takes replies in order: a match counts as a message and its
latency runs from this connection's last send (or, with ``stamp``, from the
send time carried in the reply, so a broadcast is timed on every receiver);
a gateway refusal frame is an error (``reply:throttled``, ...); anything
else is skipped and counted as unmatched. An ``expect`` that times out
counts ``timeout:expect <step>`` and the flow goes on with the next step;
a connection that closes ends its flow.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from proxy.bench.client import Listener, WebSocketClient
from proxy.bench.endpoint import Target, error_key
from proxy.bench.message import UNEXPECTED, reply_group
from proxy.bench.scenario import Close, Expect, Loop, Scenario, Send, Step, Think, stamp_of
from proxy.bench.worker import Driver
from proxy.frames import Opcode
from proxy.limits import BENCH_INBOX_MESSAGES

_NS_PER_S = 1_000_000_000


class ScenarioConnection(WebSocketClient):
    """A connection whose replies wait in an inbox for the flow's next ``expect``."""

    def __init__(self, target: Target, listener: Listener, clock: Callable[[], int]) -> None:
        super().__init__(target, listener, clock)
        self.inbox: deque[tuple[int, bytes, bool]] = deque()
        """(read at ns, payload, is text), oldest first."""
        self.dropped = 0
        """Replies pushed out of a full inbox before any ``expect`` took them."""
        self.waiter: asyncio.Future[None] | None = None

    def _dispatch(self, events: list[tuple[int, bytes]]) -> None:
        now = self.clock()
        inbox = self.inbox
        for opcode, payload in events:
            if opcode == Opcode.TEXT or opcode == Opcode.BINARY:
                if len(inbox) >= BENCH_INBOX_MESSAGES:
                    inbox.popleft()
                    self.dropped += 1
                inbox.append((now, payload, opcode == Opcode.TEXT))
            elif self._control(opcode, payload):
                break
        self.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


@dataclass(slots=True)
class _State:
    """One connection's place in its flow."""

    conn: ScenarioConnection
    index: int
    seq: int = 0
    last_send_ns: int = 0


class _Stop(Exception):
    """The flow ends: the connection closed, the run finished, or a ``close`` step ran."""


class ScenarioDriver(Driver):
    """Runs a ``Plan`` whose ``scenario`` is set."""

    rng: random.Random
    """``{{random:N}}`` and random think times, seeded from the plan (set when the load starts)."""

    @property
    def scenario(self) -> Scenario:
        assert self.plan.scenario is not None
        return self.plan.scenario

    def _connection(self) -> WebSocketClient:
        return ScenarioConnection(self.target, self, self.clock)

    def _payload_bytes_total(self) -> int:
        return self.result.payload_bytes

    async def _run_load(self) -> None:
        self.rng = random.Random(self.plan.seed)
        opened = await asyncio.gather(*(self._open_one() for _ in range(self.plan.connections)))
        timer = self._start_window()
        flows = [
            asyncio.ensure_future(self._flow(conn, self.plan.first_connection + i))
            for i, conn in enumerate(opened)
            if isinstance(conn, ScenarioConnection)
        ]
        if flows:
            asyncio.gather(*flows, return_exceptions=True).add_done_callback(lambda _: self._finish())
        else:
            self._finish()
        try:
            await self._end_window(timer)
        finally:
            for flow in flows:
                flow.cancel()
            await asyncio.gather(*flows, return_exceptions=True)

    async def _flow(self, conn: ScenarioConnection, index: int) -> None:
        state = _State(conn, index)
        try:
            await self._steps(self.scenario.role_of(index).steps, state)
        except _Stop:
            pass
        finally:
            if conn.dropped:
                self.result.errors[error_key("reply", "overflow")] += conn.dropped
                conn.dropped = 0

    async def _steps(self, steps: tuple[Step, ...], state: _State) -> None:
        for step in steps:
            if self._finished_done() or not state.conn.is_open:
                raise _Stop
            if isinstance(step, Send):
                self._send_step(step, state)
            elif isinstance(step, Expect):
                await self._expect(step, state)
            elif isinstance(step, Think):
                await self._pause(step.min_s if step.min_s == step.max_s else self.rng.uniform(step.min_s, step.max_s))
            elif isinstance(step, Loop):
                for _ in range(step.count):
                    await self._steps(step.steps, state)
            else:
                await self._close(step, state)

    def _send_step(self, step: Send, state: _State) -> None:
        now = self.clock()
        text = step.template.render(state.seq, state.index, now, self.rng)
        state.conn.write_message(text.encode(), step.binary)
        state.seq += 1
        state.last_send_ns = now
        self.result.sent += 1

    async def _pause(self, seconds: float) -> None:
        assert self._finished is not None
        if seconds > 0:
            await asyncio.wait([self._finished], timeout=seconds)

    async def _close(self, step: Close, state: _State) -> None:
        conn = state.conn
        if step.code is None:
            conn.close()
        else:
            conn.close(step.code)
        await asyncio.wait([conn.done], timeout=self.plan.timeout_s)
        if not conn.done.done():
            conn.abort()
        raise _Stop

    async def _expect(self, step: Expect, state: _State) -> None:
        conn = state.conn
        timeout_s = step.timeout_s if step.timeout_s is not None else self.plan.timeout_s
        deadline = self.clock() + int(timeout_s * _NS_PER_S)
        matched = 0
        loop = asyncio.get_running_loop()
        assert self._finished is not None
        while True:
            while conn.inbox and matched < step.count:
                received_ns, payload, _text = conn.inbox.popleft()
                if self._take(step, state, received_ns, payload):
                    matched += 1
            if matched >= step.count:
                return
            if not conn.is_open or self._finished_done():
                raise _Stop
            remaining = deadline - self.clock()
            if remaining <= 0:
                self.result.errors[error_key("timeout", f"expect {step.name}")] += 1
                return
            conn.waiter = loop.create_future()
            await asyncio.wait(
                [conn.waiter, self._finished], timeout=remaining / _NS_PER_S, return_when=asyncio.FIRST_COMPLETED
            )
            conn.waiter = None

    def _take(self, step: Expect, state: _State, received_ns: int, payload: bytes) -> bool:
        """Match one reply against ``step``; count it as a message, an error or unmatched."""
        text = payload.decode("utf-8", "replace")
        document = None
        if step.needs_json or payload.startswith(b"{"):
            try:
                document = json.loads(text)
            except ValueError:
                document = None
        if not step.matches(text, document):
            group = reply_group(payload)
            if group != UNEXPECTED:
                self.result.errors[error_key("reply", group)] += 1
            else:
                self.result.unmatched += 1
            return False
        if not step.measure:
            return True
        sent_ns = state.last_send_ns
        if step.stamp is not None:
            stamp = stamp_of(document, step.stamp)
            if stamp is None:
                self.result.errors[error_key("reply", "no_stamp")] += 1
                return True
            sent_ns = stamp
        if self.measuring:
            result = self.result
            if sent_ns >= self.measure_from_ns:  # no send before it in the window (a greeting): not timed
                result.latency.record(received_ns - sent_ns)
            result.messages += 1
            result.payload_bytes += len(payload)
            self.answered_measured += 1
            quota = self.plan.messages
            if quota is not None and self.answered_measured >= quota:
                self._finish()
        return True
