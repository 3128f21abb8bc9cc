"""Benchmarks behind ``fmriface bench NAME``: one module each, ``run(args) -> dict``."""
