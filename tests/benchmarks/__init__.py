"""Load and throughput benchmarks: ratios to a baseline measured in the same run (see README.md)."""
