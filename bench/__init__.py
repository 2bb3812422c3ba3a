"""Benchmarks: `python -m bench.NAME` prints JSON with ratios against a baseline measured in the same run."""
