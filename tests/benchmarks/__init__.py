"""Smoke tests of the benchmark harness (small sizes, never timed)."""
