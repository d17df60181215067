"""``DeadlineQueue``: guards of one length on one loop timer fire in order, once, and only if not discarded."""

from __future__ import annotations

import asyncio
import logging

import pytest

from proxy.server.deadlines import DeadlineQueue, Deadlines

_DELAY_S = 0.05
_CEILING_S = 5.0
"""How long a test waits for a guard that must fire (a ceiling, never a synchronisation device)."""


class _Guarded:
    """Records when it is told; ``told`` is set once ``expected`` entries of its log were told."""

    def __init__(self, name: str, log: list[str], told: asyncio.Event, expected: int, fails: bool = False) -> None:
        self.name = name
        self.log = log
        self.told = told
        self.expected = expected
        self.fails = fails

    def deadline_passed(self) -> None:
        self.log.append(self.name)
        if len(self.log) == self.expected:
            self.told.set()
        if self.fails:
            raise RuntimeError(f"{self.name} failed")


def _queue() -> DeadlineQueue:
    return Deadlines(asyncio.get_running_loop()).queue(_DELAY_S)


async def test_entries_fall_due_in_the_order_they_were_added_and_leave_the_queue() -> None:
    queue, log, told = _queue(), [], asyncio.Event()
    started = asyncio.get_running_loop().time()
    for name in "abc":
        queue.add(_Guarded(name, log, told, expected=3))
    assert log == [] and len(queue) == 3
    await asyncio.wait_for(told.wait(), _CEILING_S)
    assert asyncio.get_running_loop().time() - started >= _DELAY_S * 0.9  # not before their length (ms timers)
    assert log == ["a", "b", "c"]
    assert len(queue) == 0  # nothing kept once told


async def test_a_discarded_entry_is_never_told() -> None:
    queue, log, told = _queue(), [], asyncio.Event()
    cleared, kept = _Guarded("cleared", log, told, expected=1), _Guarded("kept", log, told, expected=1)
    queue.add(cleared)
    queue.add(kept)  # falls due after ``cleared`` would have
    queue.discard(cleared)
    queue.discard(_Guarded("never added", log, told, expected=1))  # no error
    await asyncio.wait_for(told.wait(), _CEILING_S)
    assert log == ["kept"]


async def test_an_entry_added_after_the_head_was_discarded_waits_its_full_length() -> None:
    loop = asyncio.get_running_loop()
    queue, log, told = _queue(), [], asyncio.Event()
    first = _Guarded("first", log, told, expected=1)
    queue.add(first)  # arms the one timer for its deadline
    queue.discard(first)
    added = loop.time()
    queue.add(_Guarded("later", log, told, expected=1))
    await asyncio.wait_for(told.wait(), _CEILING_S)
    assert log == ["later"]
    assert loop.time() - added >= _DELAY_S * 0.9  # the timer found it not due and was set again (ms granularity)


async def test_a_failing_entry_is_logged_and_the_others_are_still_told(caplog: pytest.LogCaptureFixture) -> None:
    queue, log, told = _queue(), [], asyncio.Event()
    queue.add(_Guarded("breaks", log, told, expected=2, fails=True))
    queue.add(_Guarded("after", log, told, expected=2))
    with caplog.at_level(logging.ERROR, logger="proxy.server.deadlines"):
        await asyncio.wait_for(told.wait(), _CEILING_S)
    assert log == ["breaks", "after"]
    assert "deadline handler failed" in caplog.text and "breaks failed" in caplog.text


async def test_an_entry_told_may_add_itself_again_and_waits_a_full_length_more() -> None:
    loop = asyncio.get_running_loop()
    queue, times, again = _queue(), [], asyncio.Event()

    class Again:
        def deadline_passed(self) -> None:
            times.append(loop.time())
            if len(times) == 1:
                queue.add(self)
            else:
                again.set()

    queue.add(Again())
    await asyncio.wait_for(again.wait(), _CEILING_S)
    assert times[1] - times[0] >= _DELAY_S * 0.9
    assert len(queue) == 0


async def test_one_queue_per_length_and_guard_adds_to_it() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    assert deadlines.queue(5.0) is deadlines.queue(5.0)
    assert deadlines.queue(5.0) is not deadlines.queue(29.0)
    assert deadlines.queue(29.0).delay_s == 29.0
    entry = _Guarded("e", [], asyncio.Event(), expected=1)
    queue = deadlines.guard(entry, 5.0)
    assert queue is deadlines.queue(5.0) and len(queue) == 1
    queue.discard(entry)
    assert len(queue) == 0
