"""The log-linear histogram: percentiles within its stated precision, and merging is lossless."""

from __future__ import annotations

import math
import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.bench.histogram import Histogram

PRECISION = 2**-10  # default sub_bits
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def exact_percentile(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


def assert_close(reported: int, exact: int) -> None:
    assert exact <= reported <= exact + max(1, exact * PRECISION), (reported, exact)


@given(st.lists(st.integers(min_value=0, max_value=10**11), min_size=1, max_size=300))
def test_percentiles_are_within_the_precision_of_the_exact_values(values: list[int]) -> None:
    h = Histogram()
    h.record_many(values)
    for p in PERCENTILES:
        assert_close(h.percentile(p), exact_percentile(values, p))
    assert h.percentile(100) == max(values)
    assert (h.min, h.max, h.count) == (min(values), max(values), len(values))


def test_latency_like_distribution_percentiles() -> None:
    rng = random.Random(6)
    values = [int(rng.lognormvariate(11, 1)) for _ in range(50_000)]  # ~60 us median, long tail
    h = Histogram()
    h.record_many(values)
    for p in PERCENTILES:
        assert_close(h.percentile(p), exact_percentile(values, p))
    assert h.mean() == pytest.approx(sum(values) / len(values))


def test_small_values_are_exact() -> None:
    h = Histogram()
    h.record_many(range(1000))
    assert h.percentile(50) == 499
    assert h.percentile(99.9) == 998


@given(st.lists(st.lists(st.integers(min_value=0, max_value=10**10), max_size=50), min_size=1, max_size=5))
def test_merging_workers_equals_recording_everything_in_one(parts: list[list[int]]) -> None:
    merged = Histogram()
    for part in parts:
        worker = Histogram()
        worker.record_many(part)
        merged.merge(pickle.loads(pickle.dumps(worker)))  # as --procs ships them back
    single = Histogram()
    single.record_many(v for part in parts for v in part)
    assert merged.count == single.count and merged.total == single.total
    assert [merged.percentile(p) for p in PERCENTILES] == [single.percentile(p) for p in PERCENTILES]
    assert (merged.min, merged.max) == (single.min, single.max)


def test_values_beyond_the_range_are_clamped_but_counted() -> None:
    h = Histogram(highest=1000)
    h.record(10**9)
    h.record(-5)
    assert h.count == 2 and h.max == 10**9 and h.min == 0
    assert h.percentile(100) == 10**9


def test_empty_histogram_reports_zero() -> None:
    h = Histogram()
    assert h.percentile(99) == 0 and h.mean() == 0.0


def test_merging_different_precisions_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be merged"):
        Histogram(sub_bits=8).merge(Histogram(sub_bits=10))


def test_since_a_snapshot_holds_only_the_later_values() -> None:
    hist = Histogram()
    hist.record_many([5, 10, 1_000_000])
    snapshot = hist.snapshot()
    hist.record_many([20, 30, 2_000_000])
    later = hist.since(snapshot)
    assert later.count == 3 and later.min == 20
    assert later.percentile(50) == 30
    assert later.max == pytest.approx(2_000_000, rel=1e-3) and later.max <= hist.max
    assert hist.since(hist.snapshot()).count == 0
