"""``--out jsonl:FILE`` / ``--out csv:FILE``: one row per second of the measured window.

Layer 5. A worker closes an ``Interval`` every ``BENCH_OUT_INTERVAL_S``
from differences of its running totals (the latency histogram included, so
recording a message costs nothing more); intervals are picklable, so worker
processes send theirs to the parent, which merges those of the same second
and writes the row at once (a reader can follow the file live).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from proxy.bench.histogram import Histogram

_NS_PER_US = 1_000
_BYTES_PER_MB = 1_000_000
FORMATS = ("jsonl", "csv")
COLUMNS = (
    "elapsed_s",
    "connections",
    "msgs_per_s",
    "mb_per_s",
    "p50_us",
    "p90_us",
    "p99_us",
    "max_us",
    "errors_total",
    "reconnects",
    "unexpected_closes",
    "errors",
)
"""Row fields, in CSV column order (``errors`` is ``kind=n;kind=n`` in CSV, an object in JSONL)."""


@dataclass(slots=True)
class Interval:
    """One worker's (or, merged, the run's) counts over one interval of the measured window."""

    index: int
    """0 for the first interval of the window."""
    end_s: float
    """Seconds from the start of the measured window to the end of this interval."""
    duration_s: float
    connections: int
    """Connections open at the end of the interval."""
    messages: int = 0
    """Echoes (scenarios: matched replies; connect-only: setups) in the interval."""
    payload_bytes: int = 0
    latency: Histogram = field(default_factory=Histogram)
    errors: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    """Scenario connections opened to run the steps again."""
    unexpected_closes: int = 0
    """Scenario connections that ended before their steps did."""

    def merge(self, other: Interval) -> None:
        """Add another worker's interval of the same index."""
        self.end_s = max(self.end_s, other.end_s)
        self.duration_s = max(self.duration_s, other.duration_s)
        self.connections += other.connections
        self.messages += other.messages
        self.payload_bytes += other.payload_bytes
        self.latency.merge(other.latency)
        self.errors.update(other.errors)
        self.reconnects += other.reconnects
        self.unexpected_closes += other.unexpected_closes

    def row(self) -> dict[str, object]:
        per_s = 1 / self.duration_s if self.duration_s > 0 else 0.0
        lat = self.latency
        return {
            "elapsed_s": round(self.end_s, 3),
            "connections": self.connections,
            "msgs_per_s": round(self.messages * per_s, 1),
            "mb_per_s": round(self.payload_bytes * per_s / _BYTES_PER_MB, 4),
            "p50_us": lat.percentile(50) / _NS_PER_US,
            "p90_us": lat.percentile(90) / _NS_PER_US,
            "p99_us": lat.percentile(99) / _NS_PER_US,
            "max_us": lat.max / _NS_PER_US,
            "errors_total": sum(self.errors.values()),
            "reconnects": self.reconnects,
            "unexpected_closes": self.unexpected_closes,
            "errors": dict(sorted(self.errors.items())),
        }


@dataclass(frozen=True, slots=True)
class OutSpec:
    """One ``--out FORMAT:FILE``."""

    format: str
    path: str

    @classmethod
    def parse(cls, text: str) -> OutSpec:
        """``ValueError`` unless ``text`` is ``jsonl:FILE`` or ``csv:FILE``."""
        kind, colon, path = text.partition(":")
        if not colon or kind not in FORMATS or not path:
            raise ValueError(f"--out {text!r}: expected jsonl:FILE or csv:FILE")
        return cls(kind, path)


class SeriesWriter:
    """Writes rows to every ``--out`` file, flushed per row; merges workers' intervals by index.

    Args:
        specs: the outputs (opened, truncated, at once).
        workers: how many workers send an interval per index.
    """

    def __init__(self, specs: Sequence[OutSpec], workers: int) -> None:
        self.workers = workers
        self._files: list[tuple[str, TextIO]] = []
        self._pending: dict[int, tuple[int, Interval]] = {}
        self.rows = 0
        for spec in specs:
            out = open(spec.path, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close)
            if spec.format == "csv":
                out.write(",".join(COLUMNS) + "\r\n")
                out.flush()
            self._files.append((spec.format, out))

    def add(self, interval: Interval) -> None:
        """One worker's interval; the row is written once every worker's is in."""
        seen, merged = self._pending.get(interval.index, (0, None))
        if merged is None:
            merged = interval
        else:
            merged.merge(interval)
        if seen + 1 >= self.workers:
            self._pending.pop(interval.index, None)
            self._write(merged)
        else:
            self._pending[interval.index] = (seen + 1, merged)

    def close(self) -> None:
        """Write what is left (workers that stopped early or were lost), in order, and close the files."""
        for index in sorted(self._pending):
            self._write(self._pending[index][1])
        self._pending.clear()
        for _, out in self._files:
            out.close()
        self._files.clear()

    def _write(self, interval: Interval) -> None:
        row = interval.row()
        for kind, out in self._files:
            out.write(_csv_line(row) if kind == "csv" else json.dumps(row) + "\n")
            out.flush()
        self.rows += 1


def _csv_line(row: dict[str, object]) -> str:
    errors = row["errors"]
    assert isinstance(errors, dict)
    values = [*(row[name] for name in COLUMNS[:-1]), ";".join(f"{k}={n}" for k, n in errors.items())]
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()
