"""Prism beside PostGraphile and the raw-SQL limit: ``python -m bench.perf`` (see __main__)."""
