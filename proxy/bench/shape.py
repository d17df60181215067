"""``--stages 10s:100,30s:1000,10s:0``: a target that ramps linearly from stage to stage, as k6's stages do.

Pure computation (no IO). The target is a number of open connections, or,
with ``--rate R``, a message rate starting from R. ``value_at`` gives the
target at a time; for rates, ``due_time`` inverts the integral so an open
loop still stamps every message with its exact intended send time
(latency stays free of coordinated omission while the rate ramps).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_STAGE = re.compile(r"^\s*([0-9]*\.?[0-9]+)(ms|s|m)?\s*:\s*([0-9]*\.?[0-9]+)\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class Stages:
    """Stages as (duration in seconds, target at its end); the first ramps from ``start``."""

    stages: tuple[tuple[float, float], ...]
    start: float = 0.0

    @classmethod
    def parse(cls, text: str, start: float = 0.0) -> Stages:
        """``ValueError`` unless ``text`` is ``DURATION:TARGET[,DURATION:TARGET...]`` (durations in ms, s or m)."""
        stages = []
        for part in text.split(","):
            match = _STAGE.match(part)
            if not match:
                raise ValueError(f"--stages {text!r}: expected DURATION:TARGET,... e.g. 10s:100,30s:1000,10s:0")
            number, unit, target = match.groups()
            duration = float(number) * _SECONDS[unit]
            if duration <= 0:
                raise ValueError(f"--stages {text!r}: a stage lasts more than 0 s")
            stages.append((duration, float(target)))
        return cls(tuple(stages), start)

    def split(self, share: float) -> Stages:
        """The same shape scaled by ``share`` (one worker's part)."""
        return Stages(tuple((d, t * share) for d, t in self.stages), self.start * share)

    def describe(self) -> str:
        return ",".join(f"{d:g}s:{t:g}" for d, t in self.stages)

    @property
    def total_s(self) -> float:
        return sum(d for d, _ in self.stages)

    @property
    def peak(self) -> float:
        return max(self.start, *(t for _, t in self.stages))

    def value_at(self, t: float) -> float:
        """The target ``t`` seconds in (the last stage's target after the end)."""
        previous = self.start
        for duration, target in self.stages:
            if t < duration:
                return previous + (target - previous) * t / duration
            t -= duration
            previous = target
        return previous

    def due_time(self, k: float) -> float | None:
        """When the cumulative count (integral of the rate) reaches ``k``; None if never within the stages."""
        previous, elapsed, cumulative = self.start, 0.0, 0.0
        for duration, target in self.stages:
            area = (previous + target) / 2 * duration
            if cumulative + area >= k:
                need = k - cumulative
                slope = (target - previous) / duration
                if abs(slope) < 1e-12:
                    x = need / previous if previous > 0 else 0.0
                else:  # previous * x + slope / 2 * x**2 = need
                    x = (-previous + math.sqrt(max(0.0, previous * previous + 2 * slope * need))) / slope
                return elapsed + min(max(x, 0.0), duration)
            cumulative += area
            elapsed += duration
            previous = target
        return None
