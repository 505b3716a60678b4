"""Benchmarks: each `bench_*.py` module has `main()` and prints figures and ratios."""
