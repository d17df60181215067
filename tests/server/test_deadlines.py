"""``Deadlines``: guards fire in order, once, at their time on the injected clock, and only if not discarded."""

from __future__ import annotations

import logging
import weakref

import pytest

from proxy.server.deadlines import DeadlineHeap, DeadlineQueue, Deadlines
from tests.helpers.clock import FakeClock

_DELAY_S = 5.0


class _Guarded:
    """Records the clock's time whenever it is told."""

    def __init__(self, name: str, clock: FakeClock, log: list[tuple[str, float]], fails: bool = False) -> None:
        self.name = name
        self.clock = clock
        self.log = log
        self.fails = fails

    def deadline_passed(self) -> None:
        self.log.append((self.name, self.clock.time()))
        if self.fails:
            raise RuntimeError(f"{self.name} failed")


def _queue() -> tuple[FakeClock, DeadlineQueue]:
    clock = FakeClock()
    return clock, Deadlines(clock).queue(_DELAY_S)


def test_entries_fall_due_in_the_order_they_were_added_at_their_own_time_and_leave_the_queue() -> None:
    clock, queue = _queue()
    log: list[tuple[str, float]] = []
    start = clock.time()
    for name in "abc":
        queue.add(_Guarded(name, clock, log))
        clock.advance(1.0)
    clock.advance(_DELAY_S - 3.0 - 0.001)
    assert log == [] and len(queue) == 3  # not a moment early
    clock.advance(10.0)
    assert log == [("a", start + 5.0), ("b", start + 6.0), ("c", start + 7.0)]
    assert len(queue) == 0  # nothing kept once told


def test_a_discarded_entry_is_never_told() -> None:
    clock, queue = _queue()
    log: list[tuple[str, float]] = []
    cleared, kept = _Guarded("cleared", clock, log), _Guarded("kept", clock, log)
    queue.add(cleared)
    queue.add(kept)  # falls due with ``cleared``
    queue.discard(cleared)
    queue.discard(_Guarded("never added", clock, log))  # no error
    clock.advance(_DELAY_S)
    assert [name for name, _ in log] == ["kept"]


def test_an_entry_added_after_the_head_was_discarded_waits_its_full_length() -> None:
    clock, queue = _queue()
    log: list[tuple[str, float]] = []
    first = _Guarded("first", clock, log)
    queue.add(first)  # arms the one timer for its deadline
    queue.discard(first)
    clock.advance(1.0)
    added = clock.time()
    queue.add(_Guarded("later", clock, log))
    clock.advance(_DELAY_S * 2)
    assert log == [("later", added + _DELAY_S)]  # the timer found it not due and was set again


def test_a_failing_entry_is_logged_and_the_others_are_still_told(caplog: pytest.LogCaptureFixture) -> None:
    clock, queue = _queue()
    log: list[tuple[str, float]] = []
    queue.add(_Guarded("breaks", clock, log, fails=True))
    queue.add(_Guarded("after", clock, log))
    with caplog.at_level(logging.ERROR, logger="proxy.server.deadlines"):
        clock.advance(_DELAY_S)
    assert [name for name, _ in log] == ["breaks", "after"]
    assert "deadline handler failed" in caplog.text and "breaks failed" in caplog.text


def test_an_entry_told_may_add_itself_again_and_waits_a_full_length_more() -> None:
    clock, queue = _queue()
    times: list[float] = []

    class Again:
        def deadline_passed(self) -> None:
            times.append(clock.time())
            if len(times) == 1:
                queue.add(self)

    start = clock.time()
    queue.add(Again())
    clock.advance(_DELAY_S * 3)
    assert times == [start + _DELAY_S, start + 2 * _DELAY_S]
    assert len(queue) == 0


def test_one_queue_per_length_and_guard_adds_to_it() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock)
    assert deadlines.queue(5.0) is deadlines.queue(5.0)
    assert deadlines.queue(5.0) is not deadlines.queue(29.0)
    assert deadlines.queue(29.0).delay_s == 29.0
    entry = _Guarded("e", clock, [])
    queue = deadlines.guard(entry, 5.0)
    assert queue is deadlines.queue(5.0) and len(queue) == 1
    queue.discard(entry)
    assert len(queue) == 0


def test_deadlines_at_their_own_times_fall_due_earliest_first() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock)
    log: list[tuple[str, float]] = []
    start = clock.time()
    for name, offset in (("late", 30.0), ("soon", 2.0), ("middle", 10.0)):
        assert deadlines.guard_at(_Guarded(name, clock, log), start + offset) is deadlines.at
    clock.advance(9.0)
    assert log == [("soon", start + 2.0)]
    clock.advance(30.0)
    assert log == [("soon", start + 2.0), ("middle", start + 10.0), ("late", start + 30.0)]
    assert len(deadlines.at) == 0


def test_a_deadline_moved_or_discarded_in_the_heap_is_told_once_or_never() -> None:
    clock = FakeClock()
    heap = DeadlineHeap(clock)
    log: list[tuple[str, float]] = []
    start = clock.time()
    moved, dropped = _Guarded("moved", clock, log), _Guarded("dropped", clock, log)
    heap.add_at(moved, start + 1.0)
    heap.add_at(dropped, start + 2.0)
    heap.add_at(moved, start + 3.0)  # replaces its first deadline
    heap.discard(dropped)
    clock.advance(10.0)
    assert log == [("moved", start + 3.0)]
    assert clock.pending == 0  # no timer left armed for entries that are gone


def test_the_heap_lets_go_of_discarded_entries() -> None:
    """A connection that closed must not stay referenced until its old deadline would have passed."""
    clock = FakeClock()
    heap = DeadlineHeap(clock)
    heap.add_at(_Guarded("kept", clock, []), clock.time() + 100.0)
    held = []
    for n in range(1000):
        entry = _Guarded(str(n), clock, [])
        heap.add_at(entry, clock.time() + 50.0)
        heap.discard(entry)
        held.append(weakref.ref(entry))
        del entry
    assert len(heap) == 1
    assert sum(ref() is not None for ref in held) < 20  # rebuilt as discarded entries pile up
    assert held[0]() is None
