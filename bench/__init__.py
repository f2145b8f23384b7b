"""Benchmarks: each module writes JSON to bench/results/. Run all with ``python -m bench all``."""
