"""The process log: text lines or JSON lines on standard error (``--log-format``).

Layer 5, set up once by ``proxy.cli``. A JSON line holds ``time`` (UTC, ISO
8601 with milliseconds), ``level``, ``logger`` and ``message``, and
``exc_info`` (the formatted traceback) when the record carries one: one
object per line, whatever the message holds (``json.dumps`` escapes line
breaks and control characters).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


def configure_logging(level: str, log_format: str) -> None:
    """Send the root logger's records at ``level`` and above to stderr, as ``log_format`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
