"""Benchmarks for breakglass: `python -m bench` (or `python -m bench --quick`). See docs/benchmarks.md."""
