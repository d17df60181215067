"""``DeadlineQueue``: guards of one length on one loop timer fire in order, once, and only if not discarded."""

from __future__ import annotations

import asyncio
import logging

import pytest

from proxy.server.deadlines import DeadlineQueue, Deadlines

_DELAY_S = 0.05
_PAST_S = 0.25
"""Long enough after ``_DELAY_S`` for a loaded machine's timer to have fired."""


class _Guarded:
    def __init__(self, name: str, fired: list[str], fails: bool = False) -> None:
        self.name = name
        self.fired = fired
        self.fails = fails

    def deadline_passed(self) -> None:
        self.fired.append(self.name)
        if self.fails:
            raise RuntimeError(f"{self.name} failed")


def _queue() -> DeadlineQueue:
    return Deadlines(asyncio.get_running_loop()).queue(_DELAY_S)


async def test_entries_fall_due_in_the_order_they_were_added_and_leave_the_queue() -> None:
    queue, fired = _queue(), []
    for name in "abc":
        queue.add(_Guarded(name, fired))
    assert fired == [] and len(queue) == 3
    await asyncio.sleep(_PAST_S)
    assert fired == ["a", "b", "c"]
    assert len(queue) == 0  # nothing kept once told


async def test_a_discarded_entry_is_never_told() -> None:
    queue, fired = _queue(), []
    kept, cleared = _Guarded("kept", fired), _Guarded("cleared", fired)
    queue.add(cleared)
    queue.add(kept)
    queue.discard(cleared)
    queue.discard(_Guarded("never added", fired))  # no error
    await asyncio.sleep(_PAST_S)
    assert fired == ["kept"]


async def test_an_entry_added_after_the_head_was_discarded_waits_its_full_length() -> None:
    loop = asyncio.get_running_loop()
    queue, fired = _queue(), []
    first = _Guarded("first", fired)
    queue.add(first)  # arms the one timer for its deadline
    await asyncio.sleep(_DELAY_S / 2)
    queue.discard(first)
    added = loop.time()
    queue.add(_Guarded("later", fired))
    while not fired and loop.time() - added < _PAST_S * 4:
        await asyncio.sleep(_DELAY_S / 10)
    assert fired == ["later"]
    assert loop.time() - added >= _DELAY_S * 0.9  # the timer found it not due and was set again (ms granularity)


async def test_a_failing_entry_is_logged_and_the_others_are_still_told(caplog: pytest.LogCaptureFixture) -> None:
    queue, fired = _queue(), []
    queue.add(_Guarded("breaks", fired, fails=True))
    queue.add(_Guarded("after", fired))
    with caplog.at_level(logging.ERROR, logger="proxy.server.deadlines"):
        await asyncio.sleep(_PAST_S)
    assert fired == ["breaks", "after"]
    assert "deadline handler failed" in caplog.text and "breaks failed" in caplog.text


async def test_an_entry_told_may_add_itself_again_and_waits_a_full_length_more() -> None:
    loop = asyncio.get_running_loop()
    queue, told = _queue(), []

    class Again:
        def deadline_passed(self) -> None:
            told.append(loop.time())
            if len(told) == 1:
                queue.add(self)

    started = loop.time()
    queue.add(Again())
    while len(told) < 2 and loop.time() - started < _PAST_S * 4:
        await asyncio.sleep(_DELAY_S / 10)
    assert len(told) == 2 and told[1] - told[0] >= _DELAY_S * 0.9
    assert len(queue) == 0


async def test_one_queue_per_length() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    assert deadlines.queue(5.0) is deadlines.queue(5.0)
    assert deadlines.queue(5.0) is not deadlines.queue(29.0)
    assert deadlines.queue(29.0).delay_s == 29.0
