"""A log-linear latency histogram in the manner of HdrHistogram, mergeable across processes.

Pure computation (no IO). Values are non-negative integers (nanoseconds in
``framegate bench``). Below ``2**sub_bits`` every value has its own bucket;
above, each power of two is split into ``2**sub_bits`` equal buckets, so any
recorded value is reported within a relative error of ``2**-sub_bits``
(0.1 % with the default 10 bits) while the whole range up to an hour of
nanoseconds needs only ~33 k counters. Recording is one ``bit_length``, a
shift and a list increment: cheap enough for every message.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from proxy.limits import BENCH_HISTOGRAM_MAX_NS, BENCH_HISTOGRAM_SUB_BUCKET_BITS


class Histogram:
    """Counts of integer values in log-linear buckets.

    Args:
        sub_bits: linear sub-buckets per power of two, as a power of two;
            sets the precision (relative error ``< 2**-sub_bits``).
        highest: largest value kept exactly to precision; larger ones are
            clamped to it (still counted, and ``max`` stays exact).
    """

    __slots__ = ("_counts", "_highest", "_sub", "_sub_bits", "count", "max", "min", "total")

    def __init__(self, sub_bits: int = BENCH_HISTOGRAM_SUB_BUCKET_BITS, highest: int = BENCH_HISTOGRAM_MAX_NS) -> None:
        self._sub_bits = sub_bits
        self._sub = 1 << sub_bits
        self._highest = highest
        self._counts = [0] * (self._index(highest) + 1)
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def _index(self, value: int) -> int:
        if value < self._sub:
            return value
        shift = value.bit_length() - self._sub_bits - 1
        return (shift + 1) * self._sub + (value >> shift) - self._sub

    def _highest_in_bucket(self, index: int) -> int:
        """The largest value sharing bucket ``index`` (what HdrHistogram reports)."""
        if index < self._sub:
            return index
        shift = index // self._sub - 1
        mantissa = index % self._sub + self._sub
        return ((mantissa + 1) << shift) - 1

    def record(self, value: int) -> None:
        """Count one value; negative values count as 0, values past ``highest`` as ``highest``."""
        # Called for every message bench measures: ``_index`` and the min/max are written out here.
        if value < 0:
            value = 0
        if value > self.max:
            self.max = value
        if value < self.min or not self.count:
            self.min = value
        self.count += 1
        self.total += value
        if value > self._highest:
            value = self._highest
        sub = self._sub
        if value < sub:
            self._counts[value] += 1
        else:
            shift = value.bit_length() - self._sub_bits - 1
            self._counts[(shift + 1) * sub + (value >> shift) - sub] += 1

    def record_many(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(value)

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts (same ``sub_bits`` and ``highest``): how worker results combine."""
        if other._sub_bits != self._sub_bits or other._highest != self._highest:
            raise ValueError("histograms with different precision or range cannot be merged")
        if other.count == 0:
            return
        mine = self._counts
        for index, n in enumerate(other._counts):
            if n:
                mine[index] += n
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def snapshot(self) -> list[int]:
        """A copy of the bucket counts, to take a later ``since`` from (per-second time series)."""
        return list(self._counts)

    def since(self, snapshot: list[int]) -> Histogram:
        """What was recorded after ``snapshot`` was taken, as its own histogram.

        Its ``max`` is the top of the highest bucket (within the precision),
        not exact: recording stays one increment, with nothing per interval.
        """
        delta = Histogram(self._sub_bits, self._highest)
        counts = delta._counts
        count = total = 0
        low = high = -1
        for index, (now, then) in enumerate(zip(self._counts, snapshot, strict=True)):
            if now != then:
                n = now - then
                counts[index] = n
                count += n
                top = delta._highest_in_bucket(index)
                total += n * top
                high = index
                if low < 0:
                    low = index
        if count:
            delta.count, delta.total = count, total
            delta.min = delta._highest_in_bucket(low)
            delta.max = min(delta._highest_in_bucket(high), self.max)
        return delta

    def percentile(self, p: float) -> int:
        """The value at or below which ``p`` percent of recorded values fall (0 when empty).

        Reported as the top of its bucket, never above the exact ``max``.
        """
        if self.count == 0:
            return 0
        if p >= 100:
            return self.max
        # ceil without floats drifting: the rank-th smallest value, 1-based
        rank = max(1, -(-self.count * p // 100))
        seen = 0
        for index, n in self._nonzero():
            seen += n
            if seen >= rank:
                return min(max(self._highest_in_bucket(index), self.min), self.max)
        return self.max

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def _nonzero(self) -> Iterator[tuple[int, int]]:
        return ((i, n) for i, n in enumerate(self._counts) if n)

    def __getstate__(self) -> dict[str, object]:
        # Ship only non-zero buckets between processes: ~33 k counters are mostly empty.
        return {
            "sub_bits": self._sub_bits,
            "highest": self._highest,
            "buckets": dict(self._nonzero()),
            "stats": (self.count, self.total, self.min, self.max),
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        sub_bits, highest, buckets, stats = state["sub_bits"], state["highest"], state["buckets"], state["stats"]
        assert isinstance(sub_bits, int) and isinstance(highest, int)
        assert isinstance(buckets, dict) and isinstance(stats, tuple)
        self.__init__(sub_bits, highest)  # type: ignore[misc]
        for index, n in buckets.items():
            self._counts[index] = n
        self.count, self.total, self.min, self.max = stats
