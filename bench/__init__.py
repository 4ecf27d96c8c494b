"""Benchmarks: measurements recorded in bench/results/, run from the repository root (see
bench/README.md). Each module imports the others as ``bench.<name>``."""
