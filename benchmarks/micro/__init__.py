"""pytest-benchmark micro-benchmarks; run with ``pytest benchmarks/micro --benchmark-enable --benchmark-only``."""
