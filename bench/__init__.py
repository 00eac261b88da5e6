"""Benchmarks: print figures, never pass/fail."""
