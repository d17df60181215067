"""Every deadline of the data plane's connections, on the gateway's one clock.

Layer 4. A client connection and each of its upstreams wait for at most one
deadline at a time (the upgrade's, the connection's lifetime, the close
handshake's), and almost always it is cleared long before it would fire. A
loop timer per deadline is costly to arm and cancel; an entry here costs an
insert and a pop in a dict.

- ``DeadlineQueue``: deadlines of one length. They fall due in the order they
  were added (a dict keeps that order), so the head is the next due and one
  timer, set for it, serves the whole queue.
- ``DeadlineHeap``: deadlines at any time (a connection's later lifetime
  checks, whose lengths vary), earliest first, on one timer.

Both read the time from a ``Clock`` and set their timers on it: the event
loop in production, a fake clock that tests advance by hand.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


class Timer(Protocol):
    """What ``Clock.call_at`` returns (an ``asyncio.TimerHandle`` in production)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time source and timer of the gateway: an event loop, or a test's fake clock."""

    def time(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> Timer:
        """Call ``callback`` once ``time()`` reaches ``when``."""
        ...


class Expiring(Protocol):
    """What a guard holds: told once when its deadline passed (unless discarded before)."""

    def deadline_passed(self) -> None: ...


class Guard:
    """Where an entry's deadline waits: the entry discards itself from it when the wait is over."""

    __slots__ = ()

    def discard(self, entry: Expiring) -> None:
        """Clear ``entry``'s deadline, if it has one here."""
        raise NotImplementedError


def _tell(expired: list[Expiring]) -> None:
    for entry in expired:  # told after the pass: an entry may wait again
        try:
            entry.deadline_passed()
        except Exception:  # one entry's failure must not strand the others
            logger.exception("deadline handler failed for %r", entry)


class DeadlineQueue(Guard):
    """Entries that each fall due ``delay_s`` after they were added, on one timer."""

    __slots__ = ("_clock", "_due", "_timer", "delay_s")

    def __init__(self, clock: Clock, delay_s: float) -> None:
        self._clock = clock
        self.delay_s = delay_s
        self._due: dict[Expiring, float] = {}
        """entry -> ``clock.time()`` when it falls due, oldest first (so earliest first)."""
        self._timer: Timer | None = None
        """Set for the head's deadline while there are entries (or one fired since)."""

    def __len__(self) -> int:
        return len(self._due)

    def add(self, entry: Expiring) -> None:
        """Guard ``entry``: ``deadline_passed`` is called ``delay_s`` from now unless it is discarded first."""
        deadline = self._clock.time() + self.delay_s
        self._due[entry] = deadline
        if self._timer is None:
            self._timer = self._clock.call_at(deadline, self._fire)

    def discard(self, entry: Expiring) -> None:
        """Clear ``entry``'s guard, if it has one (the timer stays: it finds the next head when it fires)."""
        self._due.pop(entry, None)

    def _fire(self) -> None:
        self._timer = None
        due = self._due
        now = self._clock.time()
        expired = []
        for entry, deadline in due.items():  # one pass from the head, up to the first not yet due
            if deadline > now:
                self._timer = self._clock.call_at(deadline, self._fire)
                break
            expired.append(entry)
        for entry in expired:
            del due[entry]
        _tell(expired)


class DeadlineHeap(Guard):
    """Entries that each fall due at a time of their own, earliest first, on one timer.

    A discarded entry stays in the heap until it would have fallen due, or
    until the heap is rebuilt: that happens once discarded entries outnumber
    the live ones, so it holds at most twice the live entries (plus a few).
    """

    __slots__ = ("_clock", "_due", "_heap", "_order", "_timer", "_timer_at")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._due: dict[Expiring, int] = {}
        """entry -> the order number of its live heap item."""
        self._heap: list[tuple[float, int, Expiring]] = []
        """(deadline, order number, entry): the order number breaks ties and marks the live item."""
        self._order = 0
        self._timer: Timer | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        return len(self._due)

    def add_at(self, entry: Expiring, when: float) -> None:
        """Guard ``entry`` until ``when`` (on the clock); adding it again replaces its deadline."""
        self._order += 1
        self._due[entry] = self._order
        heapq.heappush(self._heap, (when, self._order, entry))
        if len(self._heap) > 2 * len(self._due) + 16:
            self._heap = [item for item in self._heap if self._due.get(item[2]) == item[1]]
            heapq.heapify(self._heap)
        if self._timer is None or when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = self._clock.call_at(when, self._fire), when

    def discard(self, entry: Expiring) -> None:
        """Clear ``entry``'s guard, if it has one (its heap item goes when it comes up, or at a rebuild)."""
        self._due.pop(entry, None)

    def _fire(self) -> None:
        self._timer = None
        heap, due = self._heap, self._due
        now = self._clock.time()
        expired = []
        while heap and heap[0][0] <= now:
            _, order, entry = heapq.heappop(heap)
            if due.get(entry) == order:  # live: not discarded, not added again since
                del due[entry]
                expired.append(entry)
        while heap and due.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)  # dead heads would only wake the timer for nothing
        if heap:
            self._timer, self._timer_at = self._clock.call_at(heap[0][0], self._fire), heap[0][0]
        _tell(expired)


class Deadlines:
    """The gateway's deadlines: one ``DeadlineQueue`` per length (made on first use) and one ``DeadlineHeap``.

    Lengths are the gateway's configured timeouts (integration timeouts are
    whole milliseconds within AWS's bounds), so the queues are few.
    """

    __slots__ = ("_queues", "at", "clock")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._queues: dict[float, DeadlineQueue] = {}
        self.at = DeadlineHeap(clock)
        """Deadlines at a time of their own (``guard_at``)."""

    def guard(self, entry: Expiring, delay_s: float) -> DeadlineQueue:
        """Add ``entry`` to the queue of ``delay_s``; that queue is returned for the entry to discard itself from."""
        queue = self.queue(delay_s)
        queue.add(entry)
        return queue

    def guard_at(self, entry: Expiring, when: float) -> DeadlineHeap:
        """Guard ``entry`` until ``when`` (on ``clock``); the heap is returned for the entry to discard itself from."""
        self.at.add_at(entry, when)
        return self.at

    def queue(self, delay_s: float) -> DeadlineQueue:
        """The queue whose entries fall due ``delay_s`` after they are added."""
        queue = self._queues.get(delay_s)
        if queue is None:
            queue = self._queues[delay_s] = DeadlineQueue(self.clock, delay_s)
        return queue
