"""``--threshold 'p99<5ms'``: pass/fail criteria on the summary, as k6 has them.

Pure computation (no IO). A threshold is ``METRIC OP NUMBER[UNIT]``; it is
parsed when the flags are (a bad one is a usage error before any traffic)
and checked against the merged summary's figures at the end. A breached
threshold sets exit code ``BENCH_EXIT_THRESHOLDS``.

Metrics:

- latency of messages: ``p50``, ``p90``, ``p99``, ``p99.9``, ``max``, ``mean``
  (units ``us``, ``ms`` (the default), ``s``);
- connection setup: ``connect_p50`` ... ``connect_max`` (same units);
- ``errors``: with ``%``, errors per attempt (answered messages, setups or
  matched replies, plus errors); without, a count;
- ``refusals``: gateway refusal frames and upgrades answered 429, as ``errors``;
- rates and totals: ``msgs_per_s``, ``mb_per_s``, ``connections_per_s``, ``messages``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_LATENCY = ("p50", "p90", "p99", "p99.9", "max", "mean")
_UNITS_TO_US = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0}
_PERCENT = 100.0
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_SYNTAX = re.compile(r"^\s*([a-z_0-9.]+)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(us|ms|s|%)?\s*$")
METRICS = (
    *_LATENCY,
    *(f"connect_{name}" for name in _LATENCY),
    "errors",
    "refusals",
    "msgs_per_s",
    "mb_per_s",
    "connections_per_s",
    "messages",
)


@dataclass(frozen=True, slots=True)
class Threshold:
    """One parsed ``--threshold``; ``limit`` is in the metric's base unit (us, %, per second or count)."""

    text: str
    metric: str
    op: str
    limit: float
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """``ValueError`` naming what is wrong with ``text``."""
        match = _SYNTAX.match(text)
        if not match:
            raise ValueError(f"--threshold {text!r}: expected METRIC<VALUE, e.g. 'p99<5ms' or 'errors<0.1%'")
        metric, op, number, unit = match.groups()
        if metric not in METRICS:
            raise ValueError(f"--threshold {text!r}: unknown metric {metric!r} (one of {', '.join(METRICS)})")
        value = float(number)
        timed = metric.removeprefix("connect_") in _LATENCY
        if timed:
            if unit == "%":
                raise ValueError(f"--threshold {text!r}: a latency takes us, ms or s")
            return cls(text, metric, op, value * _UNITS_TO_US[unit or "ms"])
        if metric in ("errors", "refusals"):
            if unit not in (None, "%"):
                raise ValueError(f"--threshold {text!r}: {metric} is a count, or a share with %")
            return cls(text, metric, op, value, percent=unit == "%")
        if unit is not None:
            raise ValueError(f"--threshold {text!r}: {metric} takes no unit")
        return cls(text, metric, op, value)

    def observed(self, figures: Mapping[str, float]) -> float:
        """This threshold's metric in its unit, from ``figures`` (see ``Figures`` in report.py)."""
        if self.metric in ("errors", "refusals"):
            count = figures[self.metric]
            if not self.percent:
                return count
            attempts = figures["attempts"]
            return _PERCENT * count / attempts if attempts else 0.0
        return figures[self.metric]

    def check(self, figures: Mapping[str, float]) -> tuple[float, bool]:
        """(observed value, whether it holds)."""
        value = self.observed(figures)
        return value, _OPERATORS[self.op](value, self.limit)
