"""Codec micro-benchmarks: implementation x message size x operation, via pytest-benchmark.

The operations are ``benchmarks.codec_ratios.make_operation`` (decode = parse +
unmask + reassemble a client-masked message fragmented at 32 KiB; encode =
fragment + mask), so these figures and the ratio table time the same code.
Run: ``python -m pytest benchmarks/micro --benchmark-enable --benchmark-only``;
compare with ``--benchmark-group-by=param:size,param:operation``.
"""

from __future__ import annotations

import os

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.codec_ratios import IMPLEMENTATIONS, OPERATIONS, SIZES, Operation, expected_result, make_operation


def _operation(implementation: str, operation: str, size: int) -> Operation:
    try:
        return make_operation(implementation, operation, size)
    except ImportError:
        if os.environ.get("FRAMEGATE_REQUIRE_EXT") == "1":
            raise
        pytest.skip("Cython codec not built (python setup.py build_ext --inplace)")


@pytest.mark.parametrize("size", SIZES.keys())
@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_codec(benchmark: BenchmarkFixture, implementation: str, operation: str, size: str) -> None:
    benchmark.group = f"{operation} {size}"
    result = benchmark(_operation(implementation, operation, SIZES[size]))
    if operation == "decode":
        assert result == expected_result(operation, SIZES[size])
    else:
        assert isinstance(result, bytes) and len(result) > SIZES[size]
