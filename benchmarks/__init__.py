"""Benchmarks of clipvg-hf (run as modules from the repository root: ``python -m benchmarks.bench_model``)."""
