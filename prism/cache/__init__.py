"""Shared, expendable state: cached responses, automatic persisted queries, rate-limit buckets.

Redis when ``PRISM_REDIS_URL`` is set, this process's memory otherwise (and whenever Redis is
unreachable): losing any of it costs time, never correctness."""
