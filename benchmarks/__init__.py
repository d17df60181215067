"""Benchmarks: micro (pytest-benchmark, codec level) and end-to-end runs; not collected by plain pytest."""
