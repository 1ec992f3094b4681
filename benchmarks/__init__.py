"""Benchmarks: `python -m benchmarks.NAME`; each prints a table and ends with one summary line."""
