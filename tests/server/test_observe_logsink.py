"""Log sinks write buffered lines once per loop iteration; execution logs follow route settings."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from proxy.control.model import RouteSettings
from proxy.server.logsink import EXECUTION_LOGGER, ExecutionLog, LogSink, LogSinks, default_log_dir


async def next_iteration() -> None:
    """Resolve after every callback already queued on the loop has run (call_soon is FIFO)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


async def test_lines_are_written_together_on_the_next_loop_iteration(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = LogSink(path.open("ab"))
    for n in range(3):
        sink.write(f"line {n}")
    assert path.read_bytes() == b""
    await next_iteration()
    assert path.read_text().splitlines() == ["line 0", "line 1", "line 2"]
    sink.close()


async def test_a_full_flush_threshold_writes_at_once(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = LogSink(path.open("ab"), flush_bytes=10)
    sink.write("0123456789")
    assert path.read_text() == "0123456789\n"
    sink.close()


async def test_lines_beyond_the_buffer_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = LogSink(path.open("ab"), max_buffer_bytes=12)
    for _ in range(4):
        sink.write("12345")  # 6 bytes each with the newline: two fit
    assert sink.dropped == 2
    sink.close()
    assert path.read_text() == "12345\n12345\n"


def test_without_a_loop_lines_are_written_through(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = LogSink(path.open("ab"))
    sink.write("now")
    assert path.read_text() == "now\n"
    sink.close()


def test_sinks_share_a_file_and_map_log_group_arns_into_the_log_dir(tmp_path: Path) -> None:
    sinks = LogSinks(str(tmp_path / "logs"))
    arn = "arn:aws:logs:us-east-1:123456789012:log-group:chat-access"
    same = f"file://{tmp_path}/logs/chat-access.log"
    assert sinks.sink(arn) is sinks.sink(same)
    sinks.write(arn, "one")
    sinks.write(same, "two")
    sinks.close()
    assert (tmp_path / "logs" / "chat-access.log").read_text() == "one\ntwo\n"


def test_an_unusable_destination_is_warned_once_and_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sinks = LogSinks(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="proxy.server.logsink"):
        sinks.write("relative.log", "lost")
        sinks.write("relative.log", "lost again")
    assert [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()] == [
        "access logs for relative.log are dropped: access log destination 'relative.log' is not stdout, "
        "an absolute path, file:///path or arn:aws:logs:REGION:ACCOUNT:log-group:NAME"
    ]
    assert list(tmp_path.iterdir()) == []


def test_default_log_dir_is_next_to_the_db(tmp_path: Path) -> None:
    assert default_log_dir(str(tmp_path / "framegate.db")) == str(tmp_path / "logs")


def execution_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == EXECUTION_LOGGER]


def test_info_with_data_trace_logs_the_request_and_a_truncated_payload(caplog: pytest.LogCaptureFixture) -> None:
    log = ExecutionLog(max_bytes=8)
    settings = RouteSettings(logging_level="INFO", data_trace_enabled=True)
    with caplog.at_level(logging.INFO, logger=EXECUTION_LOGGER):
        log.request(settings, "req=", "conn=", "chat", b'{"action":"chat"}')
    assert execution_lines(caplog) == [
        (logging.INFO, "(req=) connectionId=conn= routeKey=chat request received"),
        (
            logging.INFO,
            '(req=) connectionId=conn= Method request body before transformations: {"action... [truncated, 17 bytes]',
        ),
    ]


def test_info_without_data_trace_logs_no_payload(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=EXECUTION_LOGGER):
        ExecutionLog().request(RouteSettings(logging_level="INFO"), "r", "c", "chat", b"secret")
    assert execution_lines(caplog) == [(logging.INFO, "(r) connectionId=c routeKey=chat request received")]


def test_error_level_logs_failures_only_and_off_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    log = ExecutionLog()
    errors_only = RouteSettings(logging_level="ERROR", data_trace_enabled=True)
    with caplog.at_level(logging.INFO, logger=EXECUTION_LOGGER):
        log.request(errors_only, "r", "c", "chat", b"payload")
        log.error(errors_only, "r", "c", "Too Many Requests")
        log.request(RouteSettings(logging_level="OFF"), "r", "c", "chat", b"payload")
        log.error(RouteSettings(), "r", "c", "Too Many Requests")
    assert execution_lines(caplog) == [(logging.ERROR, "(r) connectionId=c Too Many Requests")]
