"""Other load generators' versions of the echo workload, for benchmarks/load_tools_vs_bench.py."""
