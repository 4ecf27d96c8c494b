"""Benchmarks of search (issue "Full-text search"): indexing throughput (sections/s) and
search latency p50/p95 at 100,000 sections, for the PostgreSQL and the OpenSearch backend.

    .venv/bin/python bench/search.py                      # 100k sections, both backends
    .venv/bin/python bench/search.py --sections 20000 --searches 100
    make bench-search                                     # starts the OpenSearch node first

The corpus generator writes documents and sections with COPY (contract prose, a vocabulary of
rare words, PII in some sections, every classification, three departments). OpenSearch is the
node at PRISM_BENCH_OPENSEARCH_URL (`scripts/opensearch.sh start` prints it); without it only
PostgreSQL is measured. Results: bench/results/search.json (or in --results-dir), summarised
in search.md. These
are measurements to record, not tests: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import common
from bench.common import markdown_table, ms, pct
from bench.ingest import SENTENCES, TITLES
from prism.authz.principal import Principal
from prism.documents.processing import search_text
from prism.extraction.pii import scan
from prism.jobs.indexing import reindex
from prism.models.enums import Classification, DocumentType, RiskLevel, Role
from prism.search import SearchRequest, SectionDocument, mandatory_filter
from prism.search.opensearch import OpenSearchBackend
from prism.search.postgres import PostgresBackend
from prism.search.service import Search

SECTIONS_PER_DOCUMENT = 20
VOCABULARY = [f"zx{n:04d}" for n in range(5_000)]  # rare words: each in ~60 of 100k sections
DEPARTMENTS = ("legal", "hr", "finance")
PII = ("Contact jane.doe@example.com or 415-555-0100.", "SSN 123-45-6789 on file.", "")
# Query mix: common words (thousands of hits), rare words (tens), phrases, OR, exclusion.
QUERIES = (
    "liability",
    "indemnify losses",
    "terminate notice",
    '"personal data"',
    "renew OR termination",
    "insurance -professional",
    "confidential information disclosed",
    "zx0042",
    "zx1234 OR zx4321",
    "invoice zx0007",
    "intellectual property fees",
    '"thirty days"',
)


def section_rows(
    org: uuid.UUID, rng: random.Random, count: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Documents and sections as COPY records."""
    documents: list[tuple[Any, ...]] = []
    sections: list[tuple[Any, ...]] = []
    # Written a day ago: the corpus exists before the reindex, whose catch-up pass then has
    # nothing to redo (it re-reads documents changed while it ran).
    now = datetime.now(UTC) - timedelta(days=1)
    for d in range(count // SECTIONS_PER_DOCUMENT):
        doc_id = uuid.uuid4()
        classification = rng.choice(list(Classification))
        documents.append(
            (
                doc_id,
                org,
                rng.choice(DEPARTMENTS),
                f"contract-{d}.txt",
                "text/plain",
                1000,
                hashlib.sha256(doc_id.bytes).hexdigest(),
                rng.choice(list(DocumentType)).value,
                classification.value,
                "COMPLETED",
                "HOT",
                SECTIONS_PER_DOCUMENT,
                0,
                rng.choice(list(RiskLevel)).value,
                now,
                now,
            )
        )
        for s in range(SECTIONS_PER_DOCUMENT):
            words = " ".join(rng.sample(VOCABULARY, 3))
            body = " ".join(rng.sample(SENTENCES, 3)) + f" Reference {words}. "
            body += rng.choice(PII)
            name = f"{s + 1}. {rng.choice(TITLES)}"
            findings = [f.as_json() for f in scan(body)]
            sections.append(
                (
                    uuid.uuid4(),
                    org,
                    doc_id,
                    s,
                    name,
                    body,
                    len(body.split()),
                    json.dumps(findings),
                    search_text(name, body, findings),
                    now,
                )
            )
    return documents, sections


async def load_corpus(bench: Any, sections: int, seed: int) -> dict[str, Any]:
    """COPY the corpus; PostgreSQL computes each tsvector and its GIN entries as rows land."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not secrets
    started = time.perf_counter()
    documents, rows = section_rows(bench.organization_id, rng, sections)
    generated = time.perf_counter() - started
    conn = await bench.owner()
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "documents",
            records=documents,
            columns=[
                "id",
                "organization_id",
                "department",
                "filename",
                "mime_type",
                "file_size",
                "sha256",
                "document_type",
                "classification",
                "processing_status",
                "storage_tier",
                "total_sections",
                "total_feedback_items",
                "risk_level",
                "created_at",
                "updated_at",
            ],
        )
        copied_documents = time.perf_counter() - started
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "document_sections",
            records=rows,
            columns=[
                "id",
                "organization_id",
                "document_id",
                "ord",
                "name",
                "content",
                "word_count",
                "pii_findings",
                "search_text",
                "created_at",
            ],
        )
        copied = time.perf_counter() - started
        await conn.execute("ANALYZE documents; ANALYZE document_sections")
    finally:
        await conn.close()
    return {
        "sections": len(rows),
        "documents": len(documents),
        "generate s": generated,
        "COPY documents s": copied_documents,
        "COPY sections s (tsvector + GIN)": copied,
        "sections/s": len(rows) / copied,
    }


def principals(org: uuid.UUID) -> dict[str, Principal]:
    def make(role: Role, clearance: Classification, department: str | None) -> Principal:
        return Principal(org, uuid.uuid4(), None, role, clearance, department, None)

    return {
        "ADMIN (all)": make(Role.ADMIN, Classification.RESTRICTED, "legal"),
        "VIEWER (INTERNAL)": make(Role.VIEWER, Classification.INTERNAL, "legal"),
        "APPROVER (RESTRICTED, legal)": make(Role.APPROVER, Classification.RESTRICTED, "legal"),
    }


async def latency(
    backend: Any, org: uuid.UUID, searches: int, first: int, pages: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Each search is a full backend.search: hits, highlights, total and facets."""
    callers = principals(org)
    timings: list[float] = []
    per_query: dict[str, list[float]] = {}
    hits: dict[str, int] = {}
    plan = [(q, who) for q in QUERIES for who in callers]
    # warm-up: one round (caches, JIT of the node)
    for query, who in plan:
        await backend.search(
            mandatory_filter(callers[who].scope()), SearchRequest.parse(query, first=first)
        )
    n = 0
    while n < searches:
        for query, who in plan:
            if n >= searches:
                break
            request = SearchRequest.parse(query, first=first)
            started = time.perf_counter()
            page = await backend.search(mandatory_filter(callers[who].scope()), request)
            if pages and page.has_next_page:  # the second page through the cursor
                request = SearchRequest.parse(query, first=first, after=page.hits[-1].cursor)
                await backend.search(mandatory_filter(callers[who].scope()), request)
            elapsed = time.perf_counter() - started
            timings.append(elapsed)
            per_query.setdefault(query, []).append(elapsed)
            hits[query] = max(hits.get(query, 0), page.total_count)
            n += 1
    summary = {
        "searches": len(timings),
        "p50 ms": ms(pct(timings, 0.5)),
        "p95 ms": ms(pct(timings, 0.95)),
        "max ms": ms(max(timings)),
        "searches/s (one at a time)": len(timings) / sum(timings),
    }
    rows = [
        {
            "query": q,
            "hits (ADMIN)": hits[q],
            "p50 ms": ms(pct(t, 0.5)),
            "p95 ms": ms(pct(t, 0.95)),
        }
        for q, t in per_query.items()
    ]
    return summary, rows


async def timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work()
    return time.perf_counter() - started, result


async def bench_search(args: argparse.Namespace) -> None:
    opensearch_url = os.environ.get("PRISM_BENCH_OPENSEARCH_URL") or None
    tables: dict[str, list[dict[str, Any]]] = {}
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="prism-bench-search-") as scratch:
        async with common.bench_database(Path(scratch), pool_size=4) as bench:
            org = bench.organization_id
            loaded = await load_corpus(bench, args.sections, args.seed)
            tables["Corpus load (COPY)"] = [loaded]
            print(markdown_table([loaded]))
            postgres = PostgresBackend(bench.services.db)
            indexing: list[dict[str, Any]] = []
            # PostgreSQL: the protocol's bulk (masked text rewritten, tsvector and GIN redone)
            search = Search(postgres=postgres, opensearch=None)
            seconds, progress = await timed(
                lambda: reindex(bench.services.db, search, organization_id=org, batch=args.batch)
            )
            indexing.append(
                {
                    "backend": "postgres",
                    "operation": "prism search reindex --org (read, mask, compare; nothing stale)",
                    "sections": progress.done,
                    "seconds": seconds,
                    "sections/s": progress.done / seconds,
                }
            )
            docs = await all_documents(bench, org)
            seconds, written = await timed(lambda: bulk_batches(postgres, docs, args.batch))
            indexing.append(
                {
                    "backend": "postgres",
                    "operation": f"bulk (UPDATE search_text, {args.batch} a batch)",
                    "sections": written,
                    "seconds": seconds,
                    "sections/s": written / seconds,
                }
            )
            summary, rows = await latency(postgres, org, args.searches, args.first, args.pages)
            latencies = [{"backend": "postgres", **summary}]
            tables["Search latency by query, postgres"] = rows
            if opensearch_url:
                alias = f"prism-bench-{uuid.uuid4().hex[:8]}"
                backend = OpenSearchBackend(
                    opensearch_url, alias=alias, replicas=0, timeout_seconds=120
                )
                search = Search(postgres=postgres, opensearch=backend)
                try:
                    seconds, progress = await timed(
                        lambda: reindex(bench.services.db, search, batch=args.batch)
                    )
                    indexing.append(
                        {
                            "backend": "opensearch",
                            "operation": "prism search reindex (read, mask, bulk, swap alias)",
                            "sections": progress.done,
                            "caught up": progress.caught_up,
                            "seconds": seconds,
                            "sections/s": progress.done / seconds,
                        }
                    )
                    target = await backend.create_index()
                    seconds, written = await timed(
                        lambda: bulk_batches(backend, docs, args.batch, index=target)
                    )
                    indexing.append(
                        {
                            "backend": "opensearch",
                            "operation": f"bulk into a fresh index ({args.batch} a batch)",
                            "sections": written,
                            "seconds": seconds,
                            "sections/s": written / seconds,
                        }
                    )
                    await backend.finish_index(target)
                    await backend.swap_alias(target)
                    summary, rows = await latency(
                        backend, org, args.searches, args.first, args.pages
                    )
                    latencies.append({"backend": "opensearch", **summary})
                    tables["Search latency by query, opensearch"] = rows
                    stats = await backend.client.indices.stats(index=alias)
                    extra["opensearch_store_bytes"] = stats["_all"]["primaries"]["store"][
                        "size_in_bytes"
                    ]
                finally:
                    await backend.client.indices.delete(
                        index=f"{alias}-*", params={"ignore_unavailable": "true"}
                    )
                    await backend.client.indices.delete_index_template(
                        name=f"{alias}-template", params={"ignore": 404}
                    )
                    await backend.close()
            conn = await bench.owner()
            try:
                extra["postgres_gin_bytes"] = await conn.fetchval(
                    "SELECT pg_relation_size('ix_document_sections_search_vector')"
                )
                extra["postgres_sections_bytes"] = await conn.fetchval(
                    "SELECT pg_total_relation_size('document_sections')"
                )
            finally:
                await conn.close()
            tables["Indexing throughput"] = indexing
            tables["Search latency (first page of 20, hits + highlights + total + facets)"] = (
                latencies
            )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    env = common.environment()
    document = {
        "benchmark": "search",
        "command": ".venv/bin/python bench/search.py " + " ".join(sys.argv[1:]),
        "environment": env,
        "parameters": {k: v for k, v in vars(args).items() if k != "results_dir"}
        | {"opensearch": bool(opensearch_url), "queries": QUERIES},
        "tables": tables,
        **extra,
    }
    path = args.results_dir / "search.json"
    common.write_json(path, document)
    for caption, rows in tables.items():
        print(f"\n### {caption}\n\n{markdown_table(rows)}")
    print(f"\n{extra}\nwritten to {common.shown(path)}")


async def all_documents(bench: Any, org: uuid.UUID) -> list[SectionDocument]:
    from prism.jobs.indexing import section_document
    from prism.models.documents import read_index_rows

    async with bench.services.db.transaction(org) as session:
        rows = await read_index_rows(session, org)
    return [section_document(row)[0] for row in rows]


async def bulk_batches(backend: Any, docs: list[SectionDocument], batch: int, **kw: Any) -> int:
    written = 0
    for start in range(0, len(docs), batch):
        written += await backend.bulk(docs[start : start + batch], **kw)
    return written


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
        parents=[common.results_options()],
    )
    p.add_argument("--sections", type=int, default=100_000, help="sections (default 100000)")
    p.add_argument("--searches", type=int, default=360, help="timed searches per backend (360)")
    p.add_argument("--first", type=int, default=20, help="page size (20)")
    p.add_argument("--pages", action="store_true", help="also fetch page 2 in each timing")
    p.add_argument("--batch", type=int, default=1000, help="sections per bulk batch (1000)")
    p.add_argument("--seed", type=int, default=7)
    return p


def main() -> int:
    asyncio.run(bench_search(parser().parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
