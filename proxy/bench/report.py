"""``framegate bench`` output: merged summary, human table, JSON, and live progress on a TTY.

Layer 5. The same ``Summary`` feeds the printed table and ``--json``, so the
two never disagree. Rates use the measured window only; MB are 10**6 bytes of
echoed payload.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any, TextIO

from proxy.bench.histogram import Histogram
from proxy.bench.message import REPLY_GROUPS
from proxy.bench.worker import Plan, WorkerResult
from proxy.codec import IMPLEMENTATION
from proxy.frames import CloseCode

PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))
_NS_PER_US = 1_000
_NS_PER_MS = 1_000_000
_BYTES_PER_MB = 1_000_000


def describe_error(key: str) -> str:
    """A readable name for an error key: ``close:1009`` -> ``close 1009 MESSAGE_TOO_BIG``,
    ``reply:throttled`` -> ``throttled (Too Many Requests)``."""
    kind, _, code = key.partition(":")
    if kind == "reply" and code in REPLY_GROUPS:
        return REPLY_GROUPS[code]
    if code.isdigit():
        number = int(code)
        if kind in ("close", "protocol") and number in CloseCode._value2member_map_:
            return f"{kind} {number} {CloseCode(number).name}"
        if kind == "http" and number in HTTPStatus._value2member_map_:
            return f"http {number} {HTTPStatus(number).phrase}"
    return f"{kind} {code}"


def _percentiles(hist: Histogram, unit_ns: int) -> dict[str, float]:
    values = {name: hist.percentile(p) / unit_ns for name, p in PERCENTILES}
    values["max"] = hist.max / unit_ns
    values["mean"] = hist.mean() / unit_ns
    return values


@dataclass(slots=True)
class Summary:
    """Everything one run measured, in the units printed (JSON: the same fields)."""

    mode: str
    url: str
    connections: int
    procs: int
    size: int
    binary: bool
    window: int
    rate: float | None
    seed: int
    warmup_s: float
    elapsed_s: float
    messages: int
    msgs_per_s: float
    mb_per_s: float
    connections_opened: int
    connections_per_s: float
    latency_us: dict[str, float]
    connect_ms: dict[str, float]
    errors: dict[str, int]
    client_cpu_s: float
    msgs_per_client_cpu_s: float
    codec: str = IMPLEMENTATION
    machine: dict[str, Any] = field(default_factory=lambda: {"platform": platform.platform(), "cpus": os.cpu_count()})

    @classmethod
    def merge(cls, plan: Plan, procs: int, results: Sequence[WorkerResult]) -> Summary:
        """Combine worker results: counts add, histograms merge, elapsed is the longest window."""
        latency, connect = Histogram(), Histogram()
        errors: Counter[str] = Counter()
        for r in results:
            latency.merge(r.latency)
            connect.merge(r.connect)
            errors.update(r.errors)
        elapsed = max((r.elapsed_s for r in results), default=0.0)
        messages = sum(r.messages for r in results)
        cpu = sum(r.cpu_s for r in results)
        opened = sum(r.connections_opened for r in results)
        per_s = messages / elapsed if elapsed > 0 else 0.0
        return cls(
            mode=plan.mode,
            url=plan.target.url,
            connections=plan.connections,
            procs=procs,
            size=plan.size,
            binary=plan.binary,
            window=plan.window,
            rate=plan.rate,
            seed=plan.seed,
            warmup_s=plan.warmup_s,
            elapsed_s=elapsed,
            messages=messages,
            msgs_per_s=0.0 if plan.connect_only else per_s,
            mb_per_s=0.0 if plan.connect_only else per_s * plan.size / _BYTES_PER_MB,
            connections_opened=opened,
            connections_per_s=per_s if plan.connect_only else 0.0,
            latency_us=_percentiles(latency, _NS_PER_US),
            connect_ms=_percentiles(connect, _NS_PER_MS),
            errors=dict(sorted(errors.items())),
            client_cpu_s=cpu,
            msgs_per_client_cpu_s=messages / cpu if cpu > 0 else 0.0,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def render(self) -> str:
        """The human summary printed at the end of a run."""
        kind = "binary" if self.binary else "text"
        lines = [
            f"framegate bench: {self.mode}, {self.connections} connections x {self.procs} procs, "
            f"{self.size} B {kind}, codec {self.codec}",
            f"  url          {self.url}",
            f"  measured     {self.elapsed_s:.2f} s",
        ]
        if self.mode == "connect-only":
            lines.append(f"  setups       {self.messages:,}  ({self.connections_per_s:,.0f} connections/s)")
        elif self.mode != "idle":
            lines.append(
                f"  messages     {self.messages:,}  ({self.msgs_per_s:,.0f} msgs/s, {self.mb_per_s:,.2f} MB/s)"
            )
            lines.append("  latency us   " + _row(self.latency_us))
        lines.append(f"  connections  {self.connections_opened:,} opened")
        lines.append("  connect ms   " + _row(self.connect_ms))
        lines.append(f"  client CPU   {self.client_cpu_s:.2f} s  ({self.msgs_per_client_cpu_s:,.0f} msgs per CPU-s)")
        if self.errors:
            lines.append("  errors")
            lines.extend(f"    {describe_error(key):<40} {n:,}" for key, n in self.errors.items())
        else:
            lines.append("  errors       none")
        return "\n".join(lines)


def _row(values: dict[str, float]) -> str:
    names = [name for name, _ in PERCENTILES] + ["max"]
    return "  ".join(f"{name.replace('_', '.')} {values[name]:,.1f}" for name in names)


def write_json(summary: Summary, path: str) -> None:
    """``--json FILE``; ``-`` writes to stdout."""
    if path == "-":
        sys.stdout.write(summary.to_json() + "\n")
        return
    with open(path, "w", encoding="utf-8") as out:
        out.write(summary.to_json() + "\n")


class Progress:
    """One self-overwriting status line on a terminal; silent otherwise.

    Args:
        total_s: the planned measured duration (the bar's denominator).
        stream: where to draw; nothing is drawn unless it is a TTY.
    """

    def __init__(self, total_s: float, stream: TextIO = sys.stderr) -> None:
        self.total_s = total_s
        self.stream = stream
        self.enabled = stream.isatty()
        self._started = time.monotonic()
        self._last_count = 0
        self._last_t = self._started
        self._drawn = False

    def update(self, count: int, errors: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        rate = (count - self._last_count) / max(now - self._last_t, 1e-9)
        self._last_count, self._last_t = count, now
        elapsed = now - self._started
        self.stream.write(f"\r  {elapsed:6.1f}/{self.total_s:.1f} s  {rate:12,.0f} /s  errors {errors:,}   ")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
