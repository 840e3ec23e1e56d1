"""Benchmarks: each prints its figures as ``figure-name: value`` lines."""
