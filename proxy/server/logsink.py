"""Where access-log and data-trace lines go.

Layer 4. ``proxy.accesslog`` renders lines and maps a stage's
``DestinationArn`` to a file or stdout (the mapping table is in its module
docstring); this module writes them:

* ``LogSink`` buffers one destination's lines and writes them once per event
  loop iteration (``call_soon``), or at once when ``LOG_SINK_FLUSH_BYTES``
  pile up, so a burst of messages costs one ``write`` rather than one each.
  Past ``LOG_SINK_MAX_BUFFER_BYTES`` unwritten, lines are dropped and counted:
  a stuck disk must not grow the gateway's memory.
* ``LogSinks`` holds one sink per destination, shared by all stages naming it,
  and opens files inside its log directory only (symbolic links resolved):
  the control plane refuses other destinations, and this holds for records
  stored before it did.
* ``ExecutionLog`` writes AWS-style execution log lines through ``logging``
  (logger ``framegate.execution``) for routes whose ``LoggingLevel`` asks, with
  payload excerpts when ``DataTraceEnabled``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import BinaryIO, Final

from proxy.accesslog import STDOUT, log_destination, payload_excerpt
from proxy.control import plane
from proxy.control.model import RouteSettings
from proxy.limits import DATA_TRACE_MAX_BYTES, LOG_SINK_FLUSH_BYTES, LOG_SINK_MAX_BUFFER_BYTES

logger = logging.getLogger(__name__)
EXECUTION_LOGGER: Final = "framegate.execution"


class LogSink:
    """Lines for one destination, buffered and written once per loop iteration.

    Args:
        stream: a binary stream opened for appending; owned (closed) unless stdout.
        flush_bytes: write out at once when this much is buffered.
        max_buffer_bytes: drop lines beyond this much unwritten data.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        owns_stream: bool = True,
        flush_bytes: int = LOG_SINK_FLUSH_BYTES,
        max_buffer_bytes: int = LOG_SINK_MAX_BUFFER_BYTES,
    ) -> None:
        self._stream = stream
        self._owns_stream = owns_stream
        self._flush_bytes = flush_bytes
        self._max_buffer_bytes = max_buffer_bytes
        self._lines: list[bytes] = []
        self._buffered = 0
        self._scheduled = False
        self.dropped = 0
        """Lines refused because the buffer was full."""

    def write(self, line: str) -> None:
        """Queue one line (a newline is added); written this loop iteration."""
        data = line.encode("utf-8", "backslashreplace") + b"\n"
        if self._buffered + len(data) > self._max_buffer_bytes:
            self.dropped += 1
            return
        self._lines.append(data)
        self._buffered += len(data)
        if self._buffered >= self._flush_bytes:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no loop (a CLI tool or a test): write through
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything buffered now."""
        self._scheduled = False
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._buffered = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except OSError:
            self.dropped += data.count(b"\n")
            logger.exception("access log write failed; %d bytes lost", len(data))

    def close(self) -> None:
        """Flush, then close the stream if this sink opened it."""
        self.flush()
        if self._owns_stream:
            self._stream.close()


def open_sink(destination: str) -> LogSink:
    """A sink for a ``log_destination`` result: ``STDOUT`` or a file path (parents created)."""
    if destination == STDOUT:
        return LogSink(sys.stdout.buffer, owns_stream=False)
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    return LogSink(path.open("ab"))


class LogSinks:
    """One ``LogSink`` per destination, opened on first use.

    Args:
        log_dir: where ``arn:aws:logs:...:log-group:NAME`` destinations write ``NAME.log``.
    """

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self._by_arn: dict[str, LogSink | None] = {}
        self._by_destination: dict[str, LogSink] = {}

    def sink(self, destination_arn: str) -> LogSink | None:
        """The sink for a stage's ``DestinationArn``; ``None`` (warned once) if unusable."""
        try:
            return self._by_arn[destination_arn]
        except KeyError:
            pass
        sink: LogSink | None = None
        try:
            destination = log_destination(destination_arn, self.log_dir)
            if destination != STDOUT and not _inside(destination, self.log_dir):
                raise ValueError(f"{destination} is outside the log directory {self.log_dir}")
            sink = self._by_destination.get(destination)
            if sink is None:
                sink = self._by_destination[destination] = open_sink(destination)
        except (ValueError, OSError) as exc:
            logger.warning("access logs for %s are dropped: %s", destination_arn, exc)
        self._by_arn[destination_arn] = sink
        return sink

    def write(self, destination_arn: str, line: str) -> None:
        sink = self.sink(destination_arn)
        if sink is not None:
            sink.write(line)

    def close(self) -> None:
        """Flush and close every sink (at shutdown)."""
        for sink in self._by_destination.values():
            sink.close()
        self._by_destination.clear()
        self._by_arn.clear()


_LEVELS: Final = {"INFO": logging.INFO, "ERROR": logging.ERROR}


class ExecutionLog:
    """AWS-style execution log lines for routes whose ``LoggingLevel`` is INFO or ERROR.

    ``LoggingLevel`` INFO logs every request, ERROR only failures, OFF (or unset)
    nothing; ``DataTraceEnabled`` adds payload excerpts to INFO request lines,
    cut to ``max_bytes``. Lines read ``(requestId) text`` as in CloudWatch, and
    carry the connection id.
    """

    def __init__(self, max_bytes: int = DATA_TRACE_MAX_BYTES, log: logging.Logger | None = None) -> None:
        self.max_bytes = max_bytes
        self.log = log if log is not None else logging.getLogger(EXECUTION_LOGGER)

    @staticmethod
    def level(settings: RouteSettings) -> int | None:
        """The lowest level logged for a route, or ``None`` when its logging is off."""
        return _LEVELS.get((settings.logging_level or "OFF").upper())

    def request(
        self, settings: RouteSettings, request_id: str, connection_id: str, route_key: str, payload: bytes
    ) -> None:
        """One client request (connect or message) on ``route_key``."""
        level = self.level(settings)
        if level is None or level > logging.INFO or not self.log.isEnabledFor(logging.INFO):
            return
        self.log.info("(%s) connectionId=%s routeKey=%s request received", request_id, connection_id, route_key)
        if settings.data_trace_enabled and payload:
            self.log.info(
                "(%s) connectionId=%s Method request body before transformations: %s",
                request_id,
                connection_id,
                payload_excerpt(payload, self.max_bytes),
            )

    def error(self, settings: RouteSettings, request_id: str, connection_id: str, message: str) -> None:
        """A request failed (throttled, no route, integration error) where the route logs errors."""
        if self.level(settings) is None:
            return
        self.log.error("(%s) connectionId=%s %s", request_id, connection_id, message)


def default_log_dir(db_path: str) -> str:
    """``logs/`` next to the SQLite db (``control.plane.default_log_dir``: the control plane checks against it)."""
    return plane.default_log_dir(db_path)


def _inside(path: str, directory: str) -> bool:
    """Whether ``path``, symbolic links and ``..`` resolved, lies inside ``directory``."""
    base = os.path.realpath(directory)
    return os.path.commonpath([os.path.realpath(path), base]) == base
