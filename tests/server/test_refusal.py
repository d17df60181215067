"""Accept errors through the loop's exception handler, and the rate-limited log, on an injected clock."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from proxy.metrics import FastCounter
from proxy.server.refusal import AcceptErrors, RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _asyncio_accept_error() -> dict[str, Any]:
    """What asyncio's selector loop passes its handler when accept() runs out of descriptors."""
    return {
        "message": "socket.accept() out of system resource",
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }


def test_accept_errors_are_counted_and_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    counter, clock, passed_on = FastCounter(), Clock(), []
    handler = AcceptErrors(counter, clock, lambda loop, context: passed_on.append(context))
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="proxy.server.refusal"):
            for _ in range(5):
                handler(loop, _asyncio_accept_error())
            clock.now += 1.0
            handler(loop, {"message": "uvloop", "exception": OSError(errno.ENFILE, "Too many open files in system")})
    finally:
        loop.close()
    assert counter.value == 6 and passed_on == []
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "data port: accept failed: Too many open files (1 since the last report)",
        "data port: accept failed: Too many open files in system (5 since the last report)",
    ]


def test_other_loop_errors_go_to_the_previous_handler() -> None:
    counter, passed_on = FastCounter(), []
    handler = AcceptErrors(counter, Clock(), lambda loop, context: passed_on.append(context))
    context = {"message": "Exception in callback", "exception": ValueError("x")}
    refused = {"message": "connection refused", "exception": OSError(errno.ECONNREFUSED, "refused")}
    loop = asyncio.new_event_loop()
    try:
        handler(loop, context)
        handler(loop, refused)
    finally:
        loop.close()
    assert passed_on == [context, refused] and counter.value == 0


def test_rate_limited_log_reports_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = RateLimitedLog("over the cap of %d", clock, interval_s=2.0)
    with caplog.at_level(logging.WARNING, logger="proxy.server.refusal"):
        for step in range(9):  # one event every half second for 4 s
            log.event(5)
            clock.now += 0.5 if step < 8 else 0.0
    assert [record.getMessage() for record in caplog.records] == [
        "over the cap of 5 (1 since the last report)",
        "over the cap of 5 (4 since the last report)",
        "over the cap of 5 (4 since the last report)",
    ]
