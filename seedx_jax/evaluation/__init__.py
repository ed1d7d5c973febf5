"""Benchmark evaluation: `seedx-jax eval`."""
