"""Benchmarks: `make bench` runs them on a stack of their own and writes bench/results/*.json."""
