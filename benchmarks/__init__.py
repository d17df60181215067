"""framegate benchmarks.

``micro/`` (pytest-benchmark, codec level) and ``python -m benchmarks.run`` (end to end, with peers).
"""
