"""Running a ``--scenario``: one coroutine per virtual user walks its role's steps on its connection.

Layer 5 (IO). ``ScenarioConnection`` queues every data message it reads
(bounded by ``BENCH_INBOX_MESSAGES``) with the time it was read;
``ScenarioDriver`` opens the connections like echo mode does, then starts
one ``User`` per connection at once (or, with ``--stages``, ramps the number
of users: a new one connects and runs the steps from the start, a retired
one's connection is closed cleanly). It measures until the duration, a
``--messages`` quota of matched replies, Ctrl-C, or, with ``iterate: false``
and no stages, until every user's steps have ended.

While iterating (the default), a user whose steps end, that runs a
``close`` step, or whose connection the server closes, opens a new
connection and runs the steps again, as a k6 or Locust virtual user
iterates: ``reconnects`` counts those connections and ``unexpected_closes``
the ones that ended before their steps did (also an error by close code).

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
import enum
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
from proxy.limits import BENCH_INBOX_MESSAGES, BENCH_STAGE_TICK_S

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
        self.steps_done = False
        """Every step of the flow ran: the server closing it now cuts nothing short."""
        self.user: User | None = None
        """The user that opened it to run the steps again (None for the connections opened before the window)."""

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


class Ended(enum.Enum):
    """Why one run of a connection's steps ended."""

    DONE = "every step ran"
    CLOSED = "a close step closed the connection"
    LOST = "the connection ended first (closed by the server, or failed)"
    STOPPED = "the run is over"


class _Stop(Exception):
    """The flow ends before its last step, for ``reason``."""

    def __init__(self, reason: Ended) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(slots=True)
class User:
    """A virtual user: one slot of the connection count, running the scenario on one connection at a time."""

    slot: int
    """This worker's index of the slot; ``--stages`` retires the highest first."""
    index: int
    """Connection index across all workers: picks the role, renders ``{{conn}}``."""
    conn: ScenarioConnection | None = None
    task: asyncio.Task[None] | None = None
    connections: int = 0
    """Connections this user has opened (upgraded): every one after the first is a reconnect (``opened``)."""
    retired: bool = False
    """Ramped down by ``--stages``: its connection is closed on purpose."""


class ScenarioDriver(Driver):
    """Runs a ``Plan`` whose ``scenario`` is set: one ``User`` per connection, ramped by ``--stages`` if given."""

    rng: random.Random
    """``{{random:N}}`` and random think times, seeded from the plan (set when the load starts)."""
    users: dict[int, User]
    """Users by slot (set when the load starts); a retired user leaves it."""
    _once_running: int
    """``iterate: false``: users whose one run of the steps has not ended yet."""
    _ramp_start_ns: int

    @property
    def scenario(self) -> Scenario:
        assert self.plan.scenario is not None
        return self.plan.scenario

    def _connection(self) -> WebSocketClient:
        return ScenarioConnection(self.target, self, self.clock)

    def _payload_bytes_total(self) -> int:
        return self.result.payload_bytes

    def _finish_if_all_lost(self) -> None:
        """Users decide when the run ends (their steps), not the number of open connections: they reconnect."""

    def opened(self, conn: WebSocketClient) -> None:
        super().opened(conn)
        user = conn.user if isinstance(conn, ScenarioConnection) else None
        if user is not None:  # counted here, with connections_opened, so the two always agree
            if user.connections:
                self.result.reconnects += 1
            user.connections += 1

    def failed(self, conn: WebSocketClient | None, key: str) -> None:
        if isinstance(conn, ScenarioConnection) and conn.steps_done and key.startswith("close:"):
            return  # the server closed a connection whose steps had all run: nothing was cut short
        super().failed(conn, key)

    # --- the run ------------------------------------------------------------------------------
    async def _run_load(self) -> None:
        self.rng = random.Random(self.plan.seed)
        self.users = {}
        self._once_running = 0
        self._ramp_start_ns = 0
        if self.plan.stages is not None:
            timer = self._start_window()
            self._ramp_start_ns = self.clock()
            ramp = asyncio.get_running_loop().create_task(self._ramp_users())
        else:
            opened = await asyncio.gather(*(self._open_one() for _ in range(self.plan.connections)))
            timer = self._start_window()
            ramp = None
            for slot, conn in enumerate(opened):
                if isinstance(conn, ScenarioConnection):
                    self._start_user(slot, conn)
                elif self.scenario.iterate:
                    self._start_user(slot, None)  # tries again to connect
            if not self.scenario.iterate and not self._once_running:
                self._finish()
        try:
            await self._end_window(timer)
        finally:
            if ramp is not None:
                ramp.cancel()
            tasks = [user.task for user in self.users.values() if user.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start_user(self, slot: int, conn: ScenarioConnection | None) -> None:
        user = User(slot, self.plan.first_connection + slot, conn, connections=1 if conn is not None else 0)
        self.users[slot] = user
        if not self.scenario.iterate:
            self._once_running += 1
        user.task = asyncio.ensure_future(self._user(user))

    async def _ramp_users(self) -> None:
        """Every ``BENCH_STAGE_TICK_S``, ``ramp_tick``."""
        while True:
            self.ramp_tick()
            await asyncio.sleep(BENCH_STAGE_TICK_S)

    def ramp_tick(self) -> None:
        """``--stages``: start users up to the target of this moment, or retire the newest slots above it.

        A new user's connection runs the scenario from its start; a retired
        one's is closed cleanly (an intended close, not an error).
        """
        assert self.plan.stages is not None
        elapsed_s = (self.clock() - self._ramp_start_ns) / _NS_PER_S
        target = round(self.plan.stages.value_at(elapsed_s))
        for slot in range(target):
            if slot not in self.users and not self._finished_done():
                self._start_user(slot, None)
        for slot in sorted(self.users, reverse=True):
            if slot < target:
                break
            self._retire(self.users.pop(slot))

    def _retire(self, user: User) -> None:
        user.retired = True
        if user.task is not None:
            user.task.cancel()

    async def _user(self, user: User) -> None:
        """Run the steps on the user's connection; while iterating, again on a new one each time they end."""
        iterate = self.scenario.iterate
        try:
            while not self._finished_done():
                conn = user.conn
                if conn is None:
                    conn = await self._open_user(user)
                    if conn is None:  # the error is counted; try again a stage tick later
                        if not iterate:
                            return
                        await self._pause(BENCH_STAGE_TICK_S)
                        continue
                ended = await self._flow(conn, user.index)
                if ended is Ended.STOPPED:
                    return
                if ended is Ended.LOST:
                    self.result.unexpected_closes += 1
                if not iterate:
                    self._once_ended()
                    if ended is Ended.DONE:
                        await asyncio.wait([conn.done])  # hold it: ramping down or the end of the run closes it
                    return
                if ended is Ended.DONE:
                    await self._close_cleanly(conn, None)
                user.conn = None
        except asyncio.CancelledError:
            if user.retired and user.conn is not None:
                self._close_on_purpose(user.conn, None)
            raise

    async def _open_user(self, user: User) -> ScenarioConnection | None:
        def made() -> ScenarioConnection:
            # Known to the user from the start: a retired user closes it, its upgrade counts a reconnect.
            user.conn = ScenarioConnection(self.target, self, self.clock)
            user.conn.user = user
            return user.conn

        conn = await self._open_one(made)
        if not isinstance(conn, ScenarioConnection):
            user.conn = None
            return None
        return conn

    def _once_ended(self) -> None:
        """``iterate: false``: without ``--stages``, the run ends when every user's steps have."""
        self._once_running -= 1
        if self._once_running == 0 and self.plan.stages is None:
            self._finish()

    def _close_on_purpose(self, conn: ScenarioConnection, code: int | None) -> None:
        """Close ``conn`` cleanly (drop it if not upgraded yet); counted once as an intended close."""
        if conn.is_open:
            self.result.intended_closes += 1
        if code is None:
            conn.close()
        else:
            conn.close(code)

    async def _close_cleanly(self, conn: ScenarioConnection, code: int | None) -> None:
        """Close on purpose and wait for the closing handshake (within the timeout)."""
        self._close_on_purpose(conn, code)
        await asyncio.wait([conn.done], timeout=self.plan.timeout_s)
        if not conn.done.done():
            conn.abort()

    async def _flow(self, conn: ScenarioConnection, index: int) -> Ended:
        state = _State(conn, index)
        try:
            await self._steps(self.scenario.role_of(index).steps, state)
        except _Stop as stop:
            return stop.reason
        finally:
            if conn.dropped:
                self.result.errors[error_key("reply", "overflow")] += conn.dropped
                conn.dropped = 0
        conn.steps_done = True
        return Ended.DONE

    def _stop(self) -> _Stop:
        """Why the flow cannot go on: the run is over, or the connection is gone."""
        return _Stop(Ended.STOPPED if self._finished_done() else Ended.LOST)

    async def _steps(self, steps: tuple[Step, ...], state: _State) -> None:
        for step in steps:
            if self._finished_done() or not state.conn.is_open:
                raise self._stop()
            if isinstance(step, Send):
                self._send_step(step, state)
            elif isinstance(step, Expect):
                await self._expect(step, state)
            elif isinstance(step, Think):
                seconds = step.min_s if step.min_s == step.max_s else self.rng.uniform(step.min_s, step.max_s)
                await self._pause(seconds, state.conn)
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

    async def _pause(self, seconds: float, conn: ScenarioConnection | None = None) -> None:
        """Wait ``seconds``, or less if the run ends or ``conn`` closes (its user then moves on at once)."""
        assert self._finished is not None
        if seconds > 0:
            awaited: list[asyncio.Future[None]] = [self._finished] if conn is None else [self._finished, conn.done]
            await asyncio.wait(awaited, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)

    async def _close(self, step: Close, state: _State) -> None:
        await self._close_cleanly(state.conn, step.code)
        raise _Stop(Ended.CLOSED)

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
                raise self._stop()
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
