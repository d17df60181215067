"""framegate's benchmark suite: ``python -m benchmarks.run`` (end to end) and its peers."""
