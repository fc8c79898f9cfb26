"""Benchmarks: `python -m benchmarks.run` runs them all and writes BENCHMARKS.md (not part of CI)."""
