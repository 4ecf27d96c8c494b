"""What a plan miss costs beside a hit (issue 16: a first-seen query ≤ 5× a hit), in process.

For each of the benchmark's queries, as the request path asks for its statement:
``PlanCache.get`` (with the document's sha256, as the request path passes it) and
``Plan.bind`` with the request's variables, for the benchmark's principal, and the driver's
text of the statement (``prism.db.engine.driver_text``: what ``fetch_row`` sends). A hit
runs on a warm cache; a miss on a fresh one, the driver's text cache emptied (a first-seen
query). Each figure is the fastest of many small batches, so a busy machine's preemptions
drop out. No database: the statement is made, not run.

    .venv/bin/python -m bench.perf.misses
"""

from __future__ import annotations

import timeit
import uuid
from collections.abc import Callable
from typing import Any

from bench.perf.coverage import benchmark_principal
from bench.perf.queries import FILTERED, NESTED, NODE, VIEWER, to_global_id

QUERIES = {
    "nested": (NESTED, "Nested", {}),
    "node": (NODE, "Node", {"id": to_global_id("Document", str(uuid.UUID(int=7)))}),
    "filtered": (FILTERED, "Filtered", {}),
    "viewer": (VIEWER, "Viewer", {}),
}


def fastest(run: Callable[[], Any], batch: int = 10, batches: int = 400) -> float:
    """Microseconds of one call: the fastest batch's mean."""
    return min(timeit.repeat(run, number=batch, repeat=batches)) / batch * 1e6


def _asker(source: str, name: str, variables: dict[str, Any]) -> Callable[[Any], str | None]:
    """A request for the query's statement from a cache: None, or why it is not planned."""
    from graphql import parse

    from prism.db import engine
    from prism.execution.plans import document_hash

    principal = benchmark_principal()
    document = parse(source)
    digest = document_hash(source)

    def request(cache: Any) -> str | None:
        entry = cache.get(source, document, name, principal, variables=variables, digest=digest)
        if isinstance(entry, str):
            return entry
        engine.driver_text(entry.bind(variables, principal).sql)
        return None

    return request


def measure() -> dict[str, dict[str, float] | str]:
    from prism.db import engine
    from prism.execution.plans import PlanCache

    found: dict[str, dict[str, float] | str] = {}
    for label, (source, name, variables) in QUERIES.items():
        request = _asker(source, name, variables)
        warm = PlanCache()
        reason = request(warm)
        if reason is not None:
            found[label] = f"not planned: {reason}"
            continue

        def miss(request: Callable[[Any], str | None] = request) -> None:
            request(PlanCache())
            engine.forget_driver_texts()  # the text a first-seen query's driver has not seen

        hit_us = fastest(lambda request=request, warm=warm: request(warm))
        miss_us = fastest(miss)
        found[label] = {"hit_us": hit_us, "miss_us": miss_us, "ratio": miss_us / hit_us}
    return found


def main() -> int:
    for label, figures in measure().items():
        if isinstance(figures, str):
            print(f"{label:9} {figures}")
        else:
            print(
                f"{label:9} hit {figures['hit_us']:6.1f} us  miss {figures['miss_us']:6.1f} us"
                f"  miss/hit {figures['ratio']:4.1f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
