"""framegate benchmarks: ``micro/`` (pytest-benchmark) and ``python -m benchmarks.run`` (end to end, peers)."""
