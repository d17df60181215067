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
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TextIO

from proxy import __version__
from proxy.bench.client import describe_handshake
from proxy.bench.histogram import Histogram
from proxy.bench.message import (
    BAD_REQUEST_BODY,
    FORBIDDEN,
    INTERNAL_SERVER_ERROR,
    REPLY_GROUPS,
    THROTTLED,
    UNEXPECTED,
)
from proxy.bench.threshold import Threshold
from proxy.bench.worker import Plan, WorkerResult
from proxy.codec import IMPLEMENTATION
from proxy.frames import CloseCode
from proxy.limits import (
    BENCH_EXIT_FAILED,
    BENCH_EXIT_INTERRUPTED,
    BENCH_EXIT_REFUSALS,
    BENCH_EXIT_THRESHOLDS,
    BENCH_REFUSAL_SHARE_LIMIT,
)

PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))
_NS_PER_US = 1_000
_NS_PER_MS = 1_000_000
_BYTES_PER_MB = 1_000_000
_US_PER_MS = 1_000
_PERCENT = 100.0
REFUSAL_KEYS = (
    *(f"reply:{group}" for group in (THROTTLED, FORBIDDEN, INTERNAL_SERVER_ERROR, BAD_REQUEST_BODY)),
    f"http:{HTTPStatus.TOO_MANY_REQUESTS}",
)
"""Error keys of the gateway's own refusals: its error frames (as opposed to the backend's replies)
and an upgrade answered 429 (connection throttling, which a connect-only run meets first)."""
NOT_ECHO = "replies are not echoes: this server is not an echo server; use --scenario"


def describe_error(key: str) -> str:
    """A readable name for an error key: ``close:1009`` -> ``close 1009 MESSAGE_TOO_BIG``,
    ``reply:throttled`` -> ``throttled (Too Many Requests)``."""
    kind, _, code = key.partition(":")
    if kind == "reply" and code in REPLY_GROUPS:
        return REPLY_GROUPS[code]
    if kind == "handshake":
        return f"handshake: {describe_handshake(key)}"
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
    scenario: str | None = None
    stages: str | None = None
    """--stages as run (targets: connections, or the rate with --rate)."""
    churn: int | None = None
    sent: int = 0
    """Scenario sends (echo mode: 0)."""
    unmatched: int = 0
    """Scenario replies no expect step was waiting for (skipped)."""
    iterate: bool | None = None
    """Scenario: whether users run the steps again on a new connection (None in echo mode)."""
    reconnects: int = 0
    """Scenario connections opened to run the steps again, after each user's first."""
    unexpected_closes: int = 0
    """Scenario connections that ended before their steps did (closed by the server, or failed)."""
    intended_closes: int = 0
    """Connections closed on purpose during the run: close steps, ends of iterations, ramping down (not errors)."""
    payload_bytes: int = 0
    refusals: int = 0
    """Replies that were gateway refusals: error frames (throttled, forbidden, internal error, bad request body) and
    upgrades answered 429."""
    refusal_share: float = 0.0
    """Refusals over all replies (0..1)."""
    interrupted: bool = False
    version: str = __version__
    started_at: str = ""
    ended_at: str = ""
    command: list[str] = field(default_factory=list)
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    """What the summary must say first: verdicts that change what the figures mean."""
    exit_code: int = 0
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
        payload = sum(r.payload_bytes for r in results)
        per_s = messages / elapsed if elapsed > 0 else 0.0
        refusals = sum(errors[key] for key in REFUSAL_KEYS)
        # an upgrade answered with a status is a reply too: to a connect-only run, the only kind
        replies = messages + sum(n for key, n in errors.items() if key.startswith(("reply:", "http:")))
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
            mb_per_s=payload / elapsed / _BYTES_PER_MB if elapsed > 0 else 0.0,
            connections_opened=opened,
            connections_per_s=per_s if plan.connect_only else 0.0,
            latency_us=_percentiles(latency, _NS_PER_US),
            connect_ms=_percentiles(connect, _NS_PER_MS),
            errors=dict(sorted(errors.items())),
            client_cpu_s=cpu,
            msgs_per_client_cpu_s=messages / cpu if cpu > 0 else 0.0,
            payload_bytes=payload,
            refusals=refusals,
            refusal_share=refusals / replies if replies else 0.0,
            interrupted=any(r.interrupted for r in results),
            scenario=plan.scenario.name if plan.scenario is not None else None,
            sent=sum(r.sent for r in results),
            stages=plan.stages.describe() if plan.stages is not None else None,
            churn=plan.churn,
            unmatched=sum(r.unmatched for r in results),
            iterate=plan.scenario.iterate if plan.scenario is not None else None,
            reconnects=sum(r.reconnects for r in results),
            unexpected_closes=sum(r.unexpected_closes for r in results),
            intended_closes=sum(r.intended_closes for r in results),
        )

    def figures(self) -> dict[str, float]:
        """The values ``--threshold`` metrics name, in their base units (us, counts, per second)."""
        values: dict[str, float] = {}
        for name, _ in (*PERCENTILES, ("max", 0.0), ("mean", 0.0)):
            metric = name.replace("_", ".")
            values[metric] = self.latency_us[name]
            values[f"connect_{metric}"] = self.connect_ms[name] * _US_PER_MS
        errors = sum(self.errors.values())
        values.update(
            errors=errors,
            refusals=self.refusals,
            attempts=self.messages + errors,
            msgs_per_s=self.msgs_per_s,
            mb_per_s=self.mb_per_s,
            connections_per_s=self.connections_per_s,
            messages=self.messages,
        )
        return values

    def judge(self, thresholds: Sequence[Threshold], allow_errors: bool) -> None:
        """Check thresholds, look for what invalidates the figures, and set ``headline`` and ``exit_code``.

        Exit codes, first that applies: nothing measured or not an echo
        server (1), a breached threshold (99), too many gateway refusals
        without ``--allow-errors`` (98), interrupted (130), else 0.
        """
        figures = self.figures()
        breached = []
        self.thresholds = []
        for threshold in thresholds:
            observed, ok = threshold.check(figures)
            self.thresholds.append(
                {"threshold": threshold.text, "metric": threshold.metric, "observed": observed, "ok": ok}
            )
            if not ok:
                breached.append(f"{threshold.text} (observed {_observed(threshold, observed)})")
        headline = []
        unexpected = self.errors.get(f"reply:{UNEXPECTED}", 0)
        not_echo = self.scenario is None and unexpected > self.messages
        if not_echo:
            headline.append(f"{NOT_ECHO} ({unexpected:,} replies were not echoes, {self.messages:,} were)")
        too_many_refusals = self.refusal_share > BENCH_REFUSAL_SHARE_LIMIT
        if too_many_refusals:
            kinds = ", ".join(
                f"{describe_error(key)} {self.errors[key]:,}" for key in REFUSAL_KEYS if self.errors.get(key)
            )
            headline.append(
                f"{_PERCENT * self.refusal_share:.1f} % of replies were gateway refusals ({kinds}): this measures the "
                "gateway's throttling or authorization, not the load; lift the stage's throttling (docs/bench.md)"
                + (" (allowed by --allow-errors)" if allow_errors else " or pass --allow-errors")
            )
        if breached:
            headline.append(f"thresholds breached: {', '.join(breached)}")
        elif thresholds:
            headline.append(f"thresholds: all {len(thresholds)} held")
        if self.interrupted:
            headline.append(f"interrupted: the figures cover the {self.elapsed_s:.2f} s measured before Ctrl-C")
        self.headline = headline
        measured = self.messages > 0 or (self.mode == "idle" and self.connections_opened > 0)
        if not measured or not_echo:
            self.exit_code = BENCH_EXIT_FAILED
        elif breached:
            self.exit_code = BENCH_EXIT_THRESHOLDS
        elif too_many_refusals and not allow_errors:
            self.exit_code = BENCH_EXIT_REFUSALS
        elif self.interrupted:
            self.exit_code = BENCH_EXIT_INTERRUPTED
        else:
            self.exit_code = 0

    def stamp(self, started: float, ended: float, command: Sequence[str]) -> None:
        """Wall-clock start and end (ISO 8601, UTC) and the command line, for the JSON record."""
        self.started_at = datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds")
        self.ended_at = datetime.fromtimestamp(ended, UTC).isoformat(timespec="milliseconds")
        self.command = list(command)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def render(self) -> str:
        """The human summary printed at the end of a run."""
        kind = "binary" if self.binary else "text"
        spread = f" over {self.procs} procs" if self.procs > 1 else ""
        if self.stages:
            spread += f", stages {self.stages}"
        if self.churn:
            spread += f", a new connection every {self.churn:,} messages"
        what = f"scenario {self.scenario}, " if self.scenario else f"{self.size} B {kind}, "
        if self.mode in ("connect-only", "idle"):
            what = ""
        lines = [
            *(f"!! {line}" for line in self.headline),
            f"framegate bench: {self.mode}, {self.connections} connections{spread}, {what}codec {self.codec}",
            f"  url          {self.url}",
            f"  measured     {self.elapsed_s:.2f} s",
        ]
        if self.mode == "connect-only":
            lines.append(f"  setups       {self.messages:,}  ({self.connections_per_s:,.0f} connections/s)")
        elif self.mode == "scenario":
            lines.append(
                f"  matched      {self.messages:,} replies  ({self.msgs_per_s:,.0f} msgs/s, {self.mb_per_s:,.2f} MB/s)"
            )
            lines.append(f"  sent         {self.sent:,}  (unmatched replies skipped: {self.unmatched:,})")
            lines.append("  latency us   " + _row(self.latency_us))
        elif self.mode != "idle":
            lines.append(
                f"  messages     {self.messages:,}  ({self.msgs_per_s:,.0f} msgs/s, {self.mb_per_s:,.2f} MB/s)"
            )
            lines.append("  latency us   " + _row(self.latency_us))
        opened = f"  connections  {self.connections_opened:,} opened"
        if self.mode == "scenario":
            again = "iterating" if self.iterate else "once each"
            opened += (
                f" ({again}): {self.reconnects:,} reconnects, {self.unexpected_closes:,} closed before their steps "
                f"ended, {self.intended_closes:,} closed on purpose"
            )
        elif self.intended_closes:
            opened += f", {self.intended_closes:,} closed on purpose (ramping down)"
        lines.append(opened)
        lines.append("  connect ms   " + _row(self.connect_ms))
        unit = "setups" if self.mode == "connect-only" else "msgs"
        lines.append(f"  client CPU   {self.client_cpu_s:.2f} s  ({self.msgs_per_client_cpu_s:,.0f} {unit} per CPU-s)")
        if self.errors:
            lines.append("  errors")
            lines.extend(f"    {describe_error(key):<40} {n:,}" for key, n in self.errors.items())
        else:
            lines.append("  errors       none")
        return "\n".join(lines)


def _observed(threshold: Threshold, value: float) -> str:
    if threshold.metric.removeprefix("connect_") in ("p50", "p90", "p99", "p99.9", "max", "mean"):
        return f"{value / _US_PER_MS:,.3f}ms"
    return f"{value:,.3f}%" if threshold.percent else f"{value:,.2f}"


def _row(values: dict[str, float]) -> str:
    names = [name for name, _ in PERCENTILES] + ["max"]
    return "  ".join(f"{name.replace('_', '.')} {values[name]:,.1f}" for name in names)


def check_writable(path: str, flag: str) -> None:
    """``ValueError`` unless ``path`` can be created or overwritten: checked before the run, not after it."""
    if path == "-":
        return
    directory = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a directory")
    if not os.path.isdir(directory):
        raise ValueError(f"{flag} {path}: no such directory {directory}")
    if not os.access(path if os.path.exists(path) else directory, os.W_OK):
        raise ValueError(f"{flag} {path}: not writable")


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
