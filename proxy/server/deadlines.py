"""Deadlines of one length that share one loop timer: guards set and cleared per connection that rarely fire.

Layer 4. A client connection's upgrade (then its first lifetime check) and
the gateway's close, and an upstream's upgrade (within the integration
timeout) and close, are each guarded by a deadline, and almost always the
guard is cleared long before it would fire. A loop timer
per guard costs about 4k instructions to arm and cancel; an entry here costs
an insert and a pop in a dict. All entries of a queue have the same length,
so they fall due in the order they were added (a dict keeps that order): the
head is the next due, and one loop timer, set for it, serves the whole queue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

logger = logging.getLogger(__name__)


class Expiring(Protocol):
    """What a queue holds: told once when its deadline passed (unless discarded before)."""

    def deadline_passed(self) -> None: ...


class DeadlineQueue:
    """Entries that each fall due ``delay_s`` after they were added, on one loop timer."""

    __slots__ = ("_due", "_loop", "_timer", "delay_s")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        self._loop = loop
        self.delay_s = delay_s
        self._due: dict[Expiring, float] = {}
        """entry -> ``loop.time()`` when it falls due, oldest first (so earliest first)."""
        self._timer: asyncio.TimerHandle | None = None
        """Set for the head's deadline while there are entries (or one fired since)."""

    def __len__(self) -> int:
        return len(self._due)

    def add(self, entry: Expiring) -> None:
        """Guard ``entry``: ``deadline_passed`` is called ``delay_s`` from now unless it is discarded first."""
        deadline = self._loop.time() + self.delay_s
        self._due[entry] = deadline
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def discard(self, entry: Expiring) -> None:
        """Clear ``entry``'s guard, if it has one (the timer stays: it finds the next head when it fires)."""
        self._due.pop(entry, None)

    def _fire(self) -> None:
        self._timer = None
        due = self._due
        now = self._loop.time()
        expired = []
        for entry, deadline in due.items():  # one pass from the head, up to the first not yet due
            if deadline > now:
                self._timer = self._loop.call_at(deadline, self._fire)
                break
            expired.append(entry)
        for entry in expired:
            del due[entry]
        for entry in expired:  # told after the pass: an entry may add itself again
            try:
                entry.deadline_passed()
            except Exception:  # one entry's failure must not strand the others
                logger.exception("deadline handler failed for %r", entry)


class Deadlines:
    """One ``DeadlineQueue`` per length, made on first use.

    Lengths are the gateway's configured timeouts (integration timeouts are
    whole milliseconds within AWS's bounds), so the queues are few.
    """

    __slots__ = ("_loop", "_queues")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: dict[float, DeadlineQueue] = {}

    def guard(self, entry: Expiring, delay_s: float) -> DeadlineQueue:
        """Add ``entry`` to the queue of ``delay_s``; that queue is returned for the entry to discard itself from."""
        queue = self.queue(delay_s)
        queue.add(entry)
        return queue

    def queue(self, delay_s: float) -> DeadlineQueue:
        """The queue whose entries fall due ``delay_s`` after they are added."""
        queue = self._queues.get(delay_s)
        if queue is None:
            queue = self._queues[delay_s] = DeadlineQueue(self._loop, delay_s)
        return queue
