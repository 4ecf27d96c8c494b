"""Benchmarks of the ingestion pipeline (issue "Ingestion and analysis pipeline").

    .venv/bin/python bench/ingest.py all                 # every benchmark, each in a fresh process
    .venv/bin/python bench/ingest.py extraction --docs 40 --concurrency 1,2
    .venv/bin/python bench/ingest.py analysis --sections 20000
    .venv/bin/python bench/ingest.py queue --jobs 5000 --concurrency 1,2,4,8,16
    .venv/bin/python bench/ingest.py hostile
    .venv/bin/python bench/ingest.py pipeline --docs 20

Each benchmark prints Markdown tables and writes bench/results/ingest-<name>.json (or into
--results-dir). These are
measurements to record, not tests: nothing here asserts a figure. The database benchmarks use
a fresh database on PRISM_DATABASE_URL's server when it is set (and drop it afterwards), else
an embedded PostgreSQL in a temporary directory (Unix socket only, deleted afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common
from bench.common import (
    BenchDatabase,
    CpuClock,
    bench_database,
    fmt,
    ms,
    parse_ints,
    pct,
    read_json,
    write_json,
)
from prism.extraction.detect import Unsupported, detect
from prism.extraction.extract import ExtractionError, Limits, extract_file, extract_isolated
from prism.extraction.pii import scan

# multiprocessing makes each forkserver child re-run the parent's __main__ module before its
# target, unless extract_isolated hides that module (it does since commit 816bf8d). Under
# `prism worker` the main module is the `prism` entry script, which imports the command line
# (prism.cli.main) and the whole app: with this variable set, this script imports it too, so
# that the "main imports prism.cli" rows show what production's children cost (seconds each
# without the fix).
CLI_MAIN_ENV = "PRISM_BENCH_MAIN_IMPORTS_CLI"
if os.environ.get(CLI_MAIN_ENV) == "1":
    import prism.cli.main  # noqa: F401

MIB = 1024 * 1024
BENCH_KIND = "bench.ack"


# --- reporting ---------------------------------------------------------------------------------


def record(
    args: argparse.Namespace,
    name: str,
    title: str,
    parameters: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Print the tables as Markdown and write everything to <results>/ingest-<name>.json."""
    common.record(
        name,
        title,
        parameters,
        tables,
        extra,
        script="bench/ingest.py",
        file_name=f"ingest-{name}",
        results_dir=args.results_dir,
    )


def median_run(runs: list[tuple[dict[str, Any], Any]], key: str) -> tuple[dict[str, Any], Any]:
    """The run with the median ``key``, its row given the range over all runs: other processes
    on two cores make any single run noisy."""
    ordered = sorted(runs, key=lambda run: float(run[0][key]))
    row, payload = ordered[len(ordered) // 2]
    if len(ordered) > 1:
        low, high = ordered[0][0][key], ordered[-1][0][key]
        with_range: dict[str, Any] = {}
        for name, value in row.items():
            with_range[name] = value
            if name == key:
                with_range[f"{key} range ({len(ordered)} runs)"] = f"{fmt(low)}–{fmt(high)}"
        row = with_range
    return row, payload


# --- corpus ------------------------------------------------------------------------------------

# Contract prose of about 20 words a sentence; some sentences trigger the rules analyzer.
SENTENCES = (
    "The Supplier shall deliver the Services described in Schedule 1 in accordance with the "
    "service levels and the acceptance procedure agreed by the parties.",
    "The Customer shall pay each undisputed invoice within thirty days of its receipt by bank "
    "transfer to the account named on the invoice.",
    "This Agreement shall automatically renew for successive periods of twelve months unless "
    "either party gives notice of non-renewal.",
    "The Supplier shall indemnify the Customer against all losses arising from any breach of "
    "its obligations under this clause.",
    "Each party shall use reasonable efforts to resolve any dispute through good-faith "
    "negotiation before starting proceedings.",
    "Neither party excludes or limits its liability for death or personal injury caused by its "
    "negligence or for fraud.",
    "The Customer may terminate this Agreement at any time at its sole discretion by giving "
    "thirty days written notice.",
    "Confidential Information shall not be disclosed to any third party except to advisers who "
    "are bound by equivalent duties of confidence.",
    "All intellectual property rights in the deliverables shall vest in the Customer upon "
    "payment of the applicable fees in full.",
    "The Supplier shall maintain insurance with a reputable insurer, including but not limited "
    "to professional indemnity and public liability cover.",
    "Any notice under this Agreement shall be in writing and delivered by hand, by courier or "
    "by email to the addresses set out above.",
    "The Supplier shall comply with all applicable data protection laws and process personal "
    "data only on documented instructions.",
)
TITLES = (
    "Services",
    "Fees and Payment",
    "Term",
    "Liability",
    "Indemnities",
    "Termination",
    "Confidentiality",
    "Intellectual Property",
    "Insurance",
    "Notices",
    "Data Protection",
    "General",
)
NAMES = ("Jane Doe", "Omar Haddad", "Li Wei", "Maria Rossi", "Tom Becker", "Ana Silva")


def pii_sentence(rng: random.Random) -> str:
    first, last = rng.choice(NAMES).split()
    n3, n4 = rng.randint(10, 999), rng.randint(1000, 9999)
    return rng.choice(
        (
            f"Questions about invoices go to {first.lower()}.{last.lower()}@example.com or "
            f"+1 415-555-{n4}.",
            f"The account manager is {first} {last}, who works from {n3} Market Street and may "
            f"be reached on (212) 555-{n4}.",
            "For payroll verification the contractor's social security number is "
            f"{rng.randint(100, 599)}-{rng.randint(10, 99)}-{n4}.",
            f"Remote access is restricted to the office gateway at 10.{n3 % 256}.{n4 % 256}.7.",
        )
    )


def contract_sections(
    seed: int, pages: int = 10, words_per_page: int = 500, sections_per_page: int = 3
) -> list[tuple[str, str]]:
    """(heading, body) pairs of a contract: about ``words_per_page`` words a page (a Word page
    of 11-point prose), a third of the sections with a sentence of personal data."""
    rng = random.Random(seed)  # noqa: S311 - reproducible text, not security
    words_per_section = words_per_page // sections_per_page
    sections = []
    for number in range(pages * sections_per_page):
        sentences: list[str] = []
        while sum(len(s.split()) for s in sentences) < words_per_section:
            sentences.append(rng.choice(SENTENCES))
        if rng.random() < 1 / 3:
            sentences.insert(rng.randrange(len(sentences)), pii_sentence(rng))
        sections.append((f"{number + 1}. {TITLES[number % len(TITLES)]}", " ".join(sentences)))
    return sections


def contract_docx(seed: int, pages: int = 10, words_per_page: int = 500) -> bytes:
    from tests.corpus import docx_bytes

    return docx_bytes(contract_sections(seed, pages, words_per_page), pages=1)


def xml_flood_docx_bytes(inflated_mib: int = 240) -> bytes:
    """A .docx whose document.xml is millions of empty paragraphs inflating to just under
    MAX_INFLATED_BYTES: it passes every check made before parsing, so only the child's memory
    limit stops it (not in tests/corpus.py)."""
    from tests.corpus import docx_bytes

    head = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body>"
    )
    block = b"<w:p/>" * (MIB // 6)
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(docx_bytes())) as good,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as flood,
    ):
        for item in good.infolist():
            if item.filename != "word/document.xml":
                flood.writestr(item, good.read(item))
        with flood.open("word/document.xml", "w", force_zip64=True) as part:
            part.write(head)
            for _ in range(inflated_mib):
                part.write(block)
            part.write(b"</w:body></w:document>")
    return out.getvalue()


def many_parts_docx_bytes(parts: int = 2_100) -> bytes:
    """A .docx with more zip entries than MAX_ZIP_ENTRIES (not in tests/corpus.py)."""
    from tests.corpus import docx_bytes

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_bytes())) as good, zipfile.ZipFile(out, "w") as many:
        for item in good.infolist():
            many.writestr(item, good.read(item))
        for i in range(parts):
            many.writestr(f"bench/part{i}.xml", b"<a/>")
    return out.getvalue()


def hostile_corpus() -> list[tuple[str, str, Callable[[], bytes]]]:
    """(file name, origin, generator): the hostile files of tests/corpus.py, three more made
    here, and two good files as a baseline."""
    from tests import corpus

    return [
        ("good-10-page.docx", "baseline", lambda: contract_docx(0)),
        ("good.pdf", "baseline (tests/corpus.py)", corpus.pdf_bytes),
        ("zip-bomb.docx", "tests/corpus.py", corpus.zip_bomb_docx_bytes),
        ("billion-laughs.docx", "tests/corpus.py", corpus.entity_docx_bytes),
        ("stream-bomb.pdf", "tests/corpus.py", corpus.pdf_stream_bomb_bytes),
        ("encrypted.pdf", "tests/corpus.py", corpus.encrypted_pdf_bytes),
        ("xml-flood.docx", "bench", xml_flood_docx_bytes),
        ("many-parts.docx", "bench", many_parts_docx_bytes),
        ("truncated.docx", "bench", lambda: contract_docx(1)[:20_000]),
    ]


# --- extraction + PII ---------------------------------------------------------------------------


@dataclass
class DocTiming:
    detect: float
    extract: float
    pii: float
    sections: int
    words: int
    findings: int

    @property
    def total(self) -> float:
        return self.detect + self.extract + self.pii


async def process_document(path: Path, limits: Limits, *, isolated: bool) -> DocTiming:
    """What the pipeline does to a file: detect its kind (at upload), extract it and scan every
    section for PII. extract_isolated scans in its child; in-process, extract_file does not,
    so the scan is timed apart (the "pii scan ms" column)."""
    t0 = time.perf_counter()
    kind = detect(path)
    t1 = time.perf_counter()
    if isolated:
        extracted = await extract_isolated(path, kind, limits)
        t2 = t3 = time.perf_counter()
        findings = sum(len(found) for found in extracted.findings or [])
    else:
        extracted = extract_file(path, kind, limits)
        t2 = time.perf_counter()
        findings = sum(len(scan(section.content)) for section in extracted.sections)
        t3 = time.perf_counter()
    return DocTiming(
        t1 - t0, t2 - t1, t3 - t2, len(extracted.sections), extracted.word_count, findings
    )


async def run_documents(
    paths: list[Path], limits: Limits, *, isolated: bool, concurrency: int
) -> tuple[float, list[DocTiming]]:
    """Wall time and per-document timings, ``concurrency`` documents in flight (a worker with
    PRISM_WORKER_CONCURRENCY slots)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(path: Path) -> DocTiming:
        async with gate:
            return await process_document(path, limits, isolated=isolated)

    start = time.perf_counter()
    timings = await asyncio.gather(*(one(p) for p in paths))
    return time.perf_counter() - start, list(timings)


def extraction_row(
    mode: str, concurrency: int, wall: float, timings: list[DocTiming], *, isolated: bool
) -> dict[str, Any]:
    totals = [t.total for t in timings]
    return {
        "mode": mode,
        "concurrency": concurrency,
        "docs": len(timings),
        "wall s": wall,
        "docs/s": len(timings) / wall,
        "ms/doc mean": ms(statistics.mean(totals)),
        "ms/doc p50": ms(pct(totals, 0.5)),
        "ms/doc p95": ms(pct(totals, 0.95)),
        "detect ms": ms(statistics.mean(t.detect for t in timings)),
        # Isolated, the child scans for PII too: its scan is part of "extract".
        "extract ms": ms(statistics.mean(t.extract for t in timings)),
        "pii scan ms": None if isolated else ms(statistics.mean(t.pii for t in timings)),
    }


def write_contracts(directory: Path, count: int, pages: int, words_per_page: int) -> list[Path]:
    paths = []
    for seed in range(count):
        path = directory / f"contract-{seed}.docx"
        path.write_bytes(contract_docx(seed, pages, words_per_page))
        paths.append(path)
    return paths


async def bench_extraction(args: argparse.Namespace) -> None:
    limits = Limits()  # production defaults: 60 s, 768 MiB, 2000 pages
    concurrencies = parse_ints(args.concurrency)
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as scratch:
        paths = write_contracts(Path(scratch), args.docs, args.pages, args.words_per_page)
        # Untimed warm-up: the first isolated extraction starts the forkserver (which imports
        # python-docx, pypdf, charset_normalizer); the first in-process one imports docx here.
        clock = time.perf_counter()
        await process_document(paths[0], limits, isolated=True)
        forkserver_start = time.perf_counter() - clock
        sample = await process_document(paths[0], limits, isolated=False)
        docx_kib = paths[0].stat().st_size / 1024

        async def measure(mode: str, c: int, *, isolated: bool) -> tuple[dict[str, Any], Any]:
            runs = []
            for _ in range(args.repeat):
                wall, timings = await run_documents(paths, limits, isolated=isolated, concurrency=c)
                runs.append((extraction_row(mode, c, wall, timings, isolated=isolated), timings))
            return median_run(runs, "docs/s")

        if args.rows_to:  # a variant run for another process: isolated rows only
            rows = [
                (await measure("isolated, main imports prism.cli", c, isolated=True))[0]
                for c in concurrencies
            ]
            write_json(Path(args.rows_to), rows)
            return
        row, inproc = await measure("in-process extract_file", 1, isolated=False)
        rows = [row]
        isolated_by_c = {}
        for c in concurrencies:
            row, isolated_by_c[c] = await measure("isolated extract_isolated", c, isolated=True)
            rows.append(row)
        # The same isolated runs with a main module as heavy as production's (see CLI_MAIN_ENV),
        # in a fresh process so that its forkserver and children start from that main.
        if args.cli_docs:
            rows += await variant_rows(
                "extraction",
                [
                    *("--docs", str(args.cli_docs), "--pages", str(args.pages)),
                    *("--words-per-page", str(args.words_per_page)),
                    *("--concurrency", args.concurrency, "--repeat", "1"),
                ],
            )
    base = statistics.mean(t.total for t in inproc)
    one = isolated_by_c.get(1) or next(iter(isolated_by_c.values()))
    isolated_mean = statistics.mean(t.total for t in one)
    comparison = [
        {
            "figure": "isolated / in-process time per document (concurrency 1)",
            "value": isolated_mean / base,
        },
        {"figure": "isolation overhead ms/doc", "value": ms(isolated_mean - base)},
        {
            "figure": "forkserver start ms (first extraction, untimed)",
            "value": ms(forkserver_start),
        },
        {"figure": "sections per document", "value": sample.sections},
        {"figure": "words per document", "value": sample.words},
        {"figure": "PII findings per document", "value": sample.findings},
        {"figure": "docx size KiB", "value": docx_kib},
    ]
    record(
        args,
        "extraction",
        f"Extraction + PII: {args.pages}-page docx, detect → extract → scan",
        {
            "docs": args.docs,
            "pages": args.pages,
            "words_per_page": args.words_per_page,
            "concurrency": args.concurrency,
            "cli_docs": args.cli_docs,
            "repeat": args.repeat,
            "limits": vars_of(limits),
        },
        {"Throughput": rows, "Comparison": comparison},
    )


async def variant_rows(name: str, arguments: list[str]) -> list[dict[str, Any]]:
    """Rows of a benchmark run in a child process whose main module imports prism.cli."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            name,
            *arguments,
            "--rows-to",
            out.name,
            env={**os.environ, CLI_MAIN_ENV: "1"},
        )
        if await process.wait() != 0:
            raise RuntimeError(f"the {name} variant with a prism.cli main failed")
        rows: list[dict[str, Any]] = read_json(Path(out.name))
        return rows


def vars_of(limits: Limits) -> dict[str, Any]:
    return {
        "timeout_seconds": limits.timeout_seconds,
        "memory_mb": limits.memory_mb,
        "max_pages": limits.max_pages,
    }


# --- rules analysis ------------------------------------------------------------------------------


def bench_analysis(args: argparse.Namespace) -> None:
    from prism.analysis.rules import analyze_text

    rows = []
    workloads = {
        # The sections of the extraction benchmark's contracts (three a page).
        "contract sections (3 a page)": [
            body for seed in range(50) for _, body in contract_sections(seed)
        ],
        # Documents without headings: one section a page.
        "page-long sections": [
            body for seed in range(50) for _, body in contract_sections(seed, sections_per_page=1)
        ],
    }
    for workload, bodies in workloads.items():
        prepared = [(body, [f.type for f in scan(body)]) for body in bodies]
        words = statistics.mean(len(body.split()) for body in bodies)
        for operation in ("rules analyze_text", "pii scan"):
            done = items = 0
            start = time.perf_counter()
            while done < args.sections:
                for body, pii_types in prepared:
                    if operation == "pii scan":
                        items += len(scan(body))
                    else:
                        items += len(analyze_text(body, pii_types).items)
                    done += 1
                    if done == args.sections:
                        break
            elapsed = time.perf_counter() - start
            rows.append(
                {
                    "operation": operation,
                    "workload": workload,
                    "sections": done,
                    "words/section": words,
                    "seconds": elapsed,
                    "sections/s": done / elapsed,
                    "µs/section": elapsed / done * 1e6,
                    "words/s": done * words / elapsed,
                    "items/section": items / done,
                }
            )
    record(
        args,
        "analysis",
        "Rules analysis: analyze_text over sections (one core, no database)",
        {"sections": args.sections},
        {"Throughput": rows},
    )


# --- the database ------------------------------------------------------------------------------


class SqlCounter:
    """Statements, transactions and pool checkouts of an engine, by kind of statement: where a
    job's round trips go. Each checkout costs a round trip too (pool_pre_ping), and each
    transaction a BEGIN and a COMMIT."""

    KINDS = (
        ("claim", "prism_claim_jobs"),
        ("finish", "UPDATE jobs"),
        ("insert job", "INSERT INTO jobs"),
        ("set_config", "set_config"),
        ("notify", "pg_notify"),
        ("lock document", "FOR UPDATE"),
        ("insert analysis", "INSERT INTO analysis_results"),
        ("insert section", "INSERT INTO document_sections"),
        ("audit", "audit_"),
    )

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.reset()
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._before)
        event.listen(sync, "after_cursor_execute", self._after)
        event.listen(sync, "commit", self._commit)
        event.listen(sync.pool, "checkout", self._checkout)

    def reset(self) -> None:
        self.count: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.commits = 0
        self.checkouts = 0

    def _before(self, conn: Any, *_: Any) -> None:
        conn.info.setdefault("bench_clock", []).append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        elapsed = time.perf_counter() - conn.info["bench_clock"].pop()
        kind = next((k for k, marker in self.KINDS if marker in statement), "other")
        self.count[kind] = self.count.get(kind, 0) + 1
        self.seconds[kind] = self.seconds.get(kind, 0.0) + elapsed

    def _commit(self, *_: Any) -> None:
        self.commits += 1

    def _checkout(self, *_: Any) -> None:
        self.checkouts += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "count": dict(self.count),
            "seconds": dict(self.seconds),
            "commits": self.commits,
            "checkouts": self.checkouts,
        }

    @property
    def statements(self) -> int:
        return sum(self.count.values())

    def round_trips(self) -> int:
        """Statements + BEGIN + COMMIT + the pre-ping of each checkout (a lower bound: a
        statement's first run on a connection also prepares it)."""
        return self.statements + 2 * self.commits + self.checkouts


# --- queue ---------------------------------------------------------------------------------------


async def ack(run: Any) -> None:
    """A handler that only finishes its job, the way every real handler ends: the pipeline's
    own complete (finish_job fenced on the claim), in a transaction bound to the job's
    organization: calling it keeps this benchmark in step with the pipeline."""
    from prism.jobs.handlers import complete

    async with run.services.db.transaction(run.job.organization_id) as session:
        await complete(session, run)


async def enqueue_batches(
    bench: BenchDatabase, jobs: int, batch: int, *, bulk: bool = False, offset: int = 0
) -> float:
    """Enqueue ``jobs`` jobs, ``batch`` to a transaction: with enqueue_job (one INSERT each, as
    the app does), or with ``bulk`` one multi-row INSERT a batch. Returns the seconds taken."""
    from prism.models.base import utcnow
    from prism.models.jobs import Job, enqueue_job

    db, org = bench.services.db, bench.organization_id
    start = time.perf_counter()
    for first in range(offset, offset + jobs, batch):
        count = min(batch, offset + jobs - first)
        async with db.transaction(org) as session:
            if bulk:
                session.add_all(
                    Job(organization_id=org, kind=BENCH_KIND, payload={"n": n}, run_at=utcnow())
                    for n in range(first, first + count)
                )
                await session.flush()
            else:
                for n in range(first, first + count):
                    await enqueue_job(
                        session, organization_id=org, kind=BENCH_KIND, payload={"n": n}
                    )
    return time.perf_counter() - start


async def truncate_jobs(bench: BenchDatabase) -> None:
    conn = await bench.owner()
    await conn.execute("TRUNCATE jobs")
    await conn.execute("VACUUM ANALYZE jobs")
    await conn.close()


async def job_states(bench: BenchDatabase) -> dict[str, int]:
    conn = await bench.owner()
    rows = await conn.fetch("SELECT state::text, count(*) FROM jobs GROUP BY state")
    await conn.close()
    return {row[0]: row[1] for row in rows}


def per_job(counter: SqlCounter, cpu: CpuClock, jobs: int) -> dict[str, Any]:
    return {
        "transactions/job": counter.commits / jobs,
        "statements/job": counter.statements / jobs,
        "round trips/job": counter.round_trips() / jobs,
        "python CPU ms/job": ms(cpu.python / jobs),
        "postgres CPU ms/job": ms(cpu.postgres / jobs) if cpu.postgres is not None else None,
    }


async def drain(bench: BenchDatabase, concurrency: int, counter: SqlCounter) -> dict[str, Any]:
    """Claim and ack everything queued with a real Worker (its drain loop) and the ack handler."""
    from prism.jobs.worker import Worker

    worker = Worker(bench.services, concurrency=concurrency, handlers={BENCH_KIND: ack})
    counter.reset()
    with CpuClock(bench.postmaster_pid) as cpu:
        done = await worker.drain()
    claims = counter.count.get("claim", 0)
    return {
        "jobs": done,
        "seconds": cpu.wall,
        "jobs/s": done / cpu.wall,
        "claims": claims,
        "jobs/claim": done / claims if claims else None,
        "claim ms": ms(counter.seconds.get("claim", 0) / claims) if claims else None,
        "finish ms": ms(counter.seconds.get("finish", 0) / max(counter.count.get("finish", 0), 1)),
        **per_job(counter, cpu, done),
    }


async def overlapped(bench: BenchDatabase, jobs: int, batch: int, concurrency: int) -> float:
    """Producer and Worker.run at once, as in production (the worker wakes on NOTIFY): seconds
    from the first enqueue to the last ack."""
    from prism.jobs.worker import Worker

    done = 0
    stop = asyncio.Event()

    async def counting_ack(run: Any) -> None:
        nonlocal done
        await ack(run)
        done += 1
        if done == jobs:
            stop.set()

    worker = Worker(bench.services, concurrency=concurrency, handlers={BENCH_KIND: counting_ack})
    start = time.perf_counter()
    running = asyncio.create_task(worker.run(stop, grace_seconds=5))
    await enqueue_batches(bench, jobs, batch)
    await stop.wait()
    elapsed = time.perf_counter() - start
    await running
    return elapsed


async def add_jobs(bench: BenchDatabase, rows: int, state: str) -> None:
    """Jobs straight into the table: a backlog (QUEUED) or the history a queue accumulates
    (SUCCEEDED: nothing deletes finished jobs)."""
    conn = await bench.owner()
    await conn.execute(
        """
        INSERT INTO jobs (id, organization_id, kind, payload, state, priority, attempts,
                          max_attempts, run_at, created_at, updated_at, started_at, finished_at)
        SELECT gen_random_uuid(), $1, $2, '{}'::jsonb, $4, 0, 0, 5,
               now() - interval '1 day' + n * interval '1 ms', now(), now(), NULL, NULL
        FROM generate_series(1, $3) AS n
        """,
        bench.organization_id,
        BENCH_KIND,
        rows,
        state,
    )
    await conn.execute("VACUUM ANALYZE jobs")
    await conn.close()


CLAIM_SELECTION = """
    SELECT id FROM jobs
    WHERE (state IN ('QUEUED', 'FAILED') AND run_at <= now())
       OR (state = 'RUNNING' AND locked_until < now())
    ORDER BY priority, run_at
    LIMIT 4
    FOR UPDATE SKIP LOCKED
"""  # the selection inside prism_claim_jobs (migration 0002)


async def claim_latency(bench: BenchDatabase, backlog: int, calls: int = 20) -> dict[str, Any]:
    """prism_claim_jobs' latency over a backlog of queued jobs (each call rolled back, so every
    call sees the whole backlog), and the plan of its selection."""
    await add_jobs(bench, backlog, "QUEUED")
    conn = await bench.owner()
    seconds = []
    try:
        for _ in range(calls):
            transaction = conn.transaction()
            await transaction.start()
            start = time.perf_counter()
            await conn.fetchval("SELECT count(*) FROM prism_claim_jobs('bench', 4, 60)")
            seconds.append(time.perf_counter() - start)
            await transaction.rollback()
        transaction = conn.transaction()
        await transaction.start()
        plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)" + CLAIM_SELECTION)
        await transaction.rollback()
    finally:
        await conn.close()
    await truncate_jobs(bench)
    return {
        "queued jobs": backlog,
        "claim ms p50": ms(pct(seconds, 0.5)),
        "claim ms max": ms(max(seconds)),
        "plan": "\n".join(row[0] for row in plan),
    }


async def batched_claim_ack(bench: BenchDatabase, batch: int) -> dict[str, Any]:
    """Not the Worker: ``batch`` jobs claimed in one transaction and finished by one fenced
    UPDATE in another, to show what batching the worker's claims and acks would buy."""
    import sqlalchemy as sa

    from prism.models import jobs as job_models
    from prism.models.base import utcnow
    from prism.models.enums import JobState
    from prism.models.jobs import Job

    db, worker, done = bench.services.db, "bench-batched", 0
    with CpuClock(bench.postmaster_pid) as cpu:
        while True:
            async with db.transaction(None) as session:
                claimed = await job_models.claim_jobs(
                    session, worker=worker, limit=batch, lease_seconds=60
                )
            if not claimed:
                break
            # One organization here; the worker would group by organization (RLS binds each
            # transaction to one), or finish through a SECURITY DEFINER function.
            async with db.transaction(bench.organization_id) as session:
                result = await session.execute(
                    sa.update(Job)
                    .where(  # fenced on each claim, as finish_job is
                        sa.tuple_(Job.id, Job.attempts).in_(
                            [(job.id, job.attempts) for job in claimed]
                        ),
                        Job.locked_by == worker,
                        Job.state == JobState.RUNNING,
                    )
                    .values(
                        state=JobState.SUCCEEDED,
                        locked_by=None,
                        locked_until=None,
                        finished_at=utcnow(),
                    )
                )
                if result.rowcount != len(claimed):  # type: ignore[attr-defined]
                    raise RuntimeError("a batched ack lost a lease")
            done += len(claimed)
    return {"batch": batch, "jobs": done, "seconds": cpu.wall, "jobs/s": done / cpu.wall}


async def bench_queue(args: argparse.Namespace) -> None:
    concurrencies = parse_ints(args.concurrency)
    jobs, batch = args.jobs, args.batch
    tables: dict[str, list[dict[str, Any]]] = {}
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as scratch:
        async with bench_database(Path(scratch), pool_size=max(concurrencies) + 4) as bench:
            counter = SqlCounter(bench.services.db.engine)
            await enqueue_batches(bench, 200, 100)  # warm-up: connections, prepared statements
            await drain(bench, 4, counter)
            await truncate_jobs(bench)

            # (a) enqueue
            rows = []
            single = min(jobs, args.single_jobs)
            for label, count, size, bulk in (
                ("enqueue_job, 1 job a transaction (an upload)", single, 1, False),
                (f"enqueue_job, {batch} jobs a transaction", jobs, batch, False),
                (f"one multi-row INSERT of {batch} jobs a transaction", jobs, batch, True),
            ):
                runs = []
                for _ in range(args.repeat):
                    counter.reset()
                    with CpuClock(bench.postmaster_pid) as cpu:
                        await enqueue_batches(bench, count, size, bulk=bulk)
                    await truncate_jobs(bench)
                    row = {"enqueue": label, "jobs": count, "seconds": cpu.wall}
                    row |= {"jobs/s": count / cpu.wall, **per_job(counter, cpu, count)}
                    runs.append((row, None))
                rows.append(median_run(runs, "jobs/s")[0])
            tables["Enqueue"] = rows

            # (b) claim + ack, and end to end, by worker concurrency
            rows = []
            for c in concurrencies:
                runs = []
                for _ in range(args.repeat):
                    enqueue_seconds = await enqueue_batches(bench, jobs, batch)
                    drained = await drain(bench, c, counter)
                    states = await job_states(bench)
                    if states != {"SUCCEEDED": jobs}:
                        raise RuntimeError(f"unexpected job states after the drain: {states}")
                    await truncate_jobs(bench)
                    row = {
                        "concurrency": c,
                        "end-to-end jobs/s": jobs / (enqueue_seconds + drained["seconds"]),
                        "enqueue s": enqueue_seconds,
                        "claim+ack s": drained["seconds"],
                        "claim+ack jobs/s": drained["jobs/s"],
                    }
                    row |= {k: v for k, v in drained.items() if k not in {"seconds", "jobs/s"}}
                    runs.append((row, None))
                rows.append(median_run(runs, "end-to-end jobs/s")[0])
            tables["Enqueue in batches, then claim + ack (Worker.drain)"] = rows
            best = max(rows, key=lambda row: row["end-to-end jobs/s"])["concurrency"]

            # (c) producer and worker at once, at the best concurrency of (b)
            runs = []
            for _ in range(args.repeat):
                seconds = await overlapped(bench, jobs, batch, best)
                await truncate_jobs(bench)
                row = {"concurrency": best, "jobs": jobs, "seconds": seconds}
                runs.append(({**row, "jobs/s": jobs / seconds}, None))
            tables["Enqueue and Worker.run at once"] = [median_run(runs, "jobs/s")[0]]

            # (d) what batching acks would buy
            runs = []
            for _ in range(args.repeat):
                enqueue_seconds = await enqueue_batches(bench, jobs, batch)
                batched = await batched_claim_ack(bench, batch)
                batched["end-to-end jobs/s"] = jobs / (enqueue_seconds + batched["seconds"])
                await truncate_jobs(bench)
                runs.append((batched, None))
            tables["Batched claim + ack (not the Worker: what batching would buy)"] = [
                median_run(runs, "end-to-end jobs/s")[0]
            ]

            # (e) claim latency by backlog: the selection sorts every runnable job
            latencies = [await claim_latency(bench, n) for n in parse_ints(args.backlogs)]
            extra["claim_plans"] = {row["queued jobs"]: row.pop("plan") for row in latencies}
            tables["prism_claim_jobs latency by backlog"] = latencies

            # (f) a drain with finished jobs in the table, as a long-running queue has them
            if args.history:
                await add_jobs(bench, args.history, "SUCCEEDED")
                await enqueue_batches(bench, jobs, batch)
                drained = await drain(bench, best, counter)
                tables[f"Claim + ack with {args.history:,} finished jobs in the table"] = [
                    {"finished jobs in the table": args.history, **drained}
                ]
    largest = max(extra["claim_plans"], default=None)
    if largest is not None:
        print(f"\n### Claim selection plan, {largest:,} queued jobs\n")
        print("```\n" + extra["claim_plans"][largest] + "\n```")
    record(
        args,
        "queue",
        "Job queue: enqueue, claim and ack against PostgreSQL",
        {
            "jobs": jobs,
            "batch": batch,
            "single_jobs": args.single_jobs,
            "concurrency": args.concurrency,
            "history": args.history,
            "backlogs": args.backlogs,
            "repeat": args.repeat,
            "database": "PRISM_DATABASE_URL"
            if os.environ.get("PRISM_DATABASE_URL")
            else "embedded",
        },
        tables,
        extra,
    )


# --- hostile files -------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS), VmRSS and VmPeak (peak address space) of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "VmPeak"):
                values[key] = int(rest.split()[0])
    return values


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


class MemorySampler(threading.Thread):
    """Samples this process and its descendants from /proc every millisecond or so.

    Extraction children are grandchildren (the forkserver forks them). VmHWM is a process's
    own peak, so the last sample before a child exits holds its peak up to that moment: the
    sampling interval only loses growth in a child's last millisecond (the kernel's figure,
    RUSAGE_CHILDREN after the forkserver exits, checks the largest). A child that lives less
    than an interval may be missed altogether: child_samples says how often each was seen."""

    def __init__(self, interval: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.label = ""
        self.child_hwm: dict[str, int] = {}  # label → peak RSS of any extraction child, KiB
        self.child_vm: dict[str, int] = {}  # label → peak address space, KiB
        self.child_samples: dict[str, int] = {}  # label → samples that saw a child
        self.tree_rss: dict[str, int] = {}  # label → peak sum of RSS over the process tree
        self.infrastructure: dict[int, dict[str, int]] = {}  # forkserver, resource tracker
        self.parent_rss = 0
        self._halt = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._halt.is_set():
            with contextlib.suppress(OSError, ValueError):  # a process exited mid-sample
                self.sample(me)
            time.sleep(self.interval)

    def sample(self, me: int) -> None:
        label = self.label
        total = proc_status(me)["VmRSS"]
        self.parent_rss = max(self.parent_rss, total)
        for direct in children_of(me):
            with_status = self._status(direct)
            if with_status is None:
                continue
            self.infrastructure[direct] = with_status
            total += with_status["VmRSS"]
            for child in children_of(direct):
                status = self._status(child)
                if status is None:
                    continue
                total += status["VmRSS"]
                self.child_samples[label] = self.child_samples.get(label, 0) + 1
                self.child_hwm[label] = max(self.child_hwm.get(label, 0), status["VmHWM"])
                self.child_vm[label] = max(self.child_vm.get(label, 0), status["VmPeak"])
        self.tree_rss[label] = max(self.tree_rss.get(label, 0), total)

    @staticmethod
    def _status(pid: int) -> dict[str, int] | None:
        """None for a process gone or a zombie (exited, not yet reaped: no memory left)."""
        try:
            status = proc_status(pid)
        except OSError:
            return None
        return status if "VmRSS" in status else None

    def stop(self) -> None:
        self._halt.set()
        self.join()


async def hostile_outcome(path: Path, limits: Limits) -> str:
    try:
        kind = detect(path)
    except Unsupported as exc:
        return f"refused at detection: {exc}"
    try:
        extracted = await extract_isolated(path, kind, limits)
    except ExtractionError as exc:
        return f"refused: {exc}"
    return f"extracted: {len(extracted.sections)} sections"


def write_hostile_corpus(directory: Path, only: str | None = None) -> list[tuple[str, str, Path]]:
    wanted = None if only is None else {name.strip() for name in only.split(",")}
    corpus = [entry for entry in hostile_corpus() if wanted is None or entry[0] in wanted]
    if wanted is not None and len(corpus) != len(wanted):
        known = ", ".join(name for name, _, _ in hostile_corpus())
        raise SystemExit(f"--only: unknown file among {only!r}; the corpus: {known}")
    files = []
    for name, origin, make in corpus:
        path = directory / name
        if not path.exists():  # a variant run reuses its parent's corpus
            path.write_bytes(make())
        files.append((name, origin, path))
    return files


async def bench_hostile(args: argparse.Namespace) -> None:
    limits = Limits()  # production defaults: 60 s, 768 MiB, 2000 pages
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as scratch:
        corpus_dir = Path(args.corpus_dir or scratch)
        files = write_hostile_corpus(corpus_dir, args.only)
        # The sampler starts once the corpus exists: the peaks are the worker's, not the
        # generator's.
        sampler = MemorySampler()
        sampler.start()
        sampler.label = "warm-up"
        await hostile_outcome(files[0][2], limits)  # starts the forkserver
        rows = []
        for name, origin, path in files:
            # Each file a few times: the median time, and the peak over every run (a child of
            # a few milliseconds may slip between two samples once).
            sampler.label = name
            seconds = []
            for _ in range(args.repeat):
                await asyncio.sleep(3 * sampler.interval)  # label set before the child starts
                start = time.perf_counter()
                outcome = await hostile_outcome(path, limits)
                seconds.append(time.perf_counter() - start)
            await asyncio.sleep(3 * sampler.interval)
            seen = sampler.child_samples.get(name, 0)
            rows.append(
                {
                    "file": name,
                    "origin": origin,
                    "KiB": path.stat().st_size / 1024,
                    "outcome": outcome,
                    "ms (median)": ms(statistics.median(seconds)),
                    "child peak RSS MiB": sampler.child_hwm[name] / 1024 if seen else None,
                    "child peak VM MiB": sampler.child_vm[name] / 1024 if seen else None,
                    "child samples": seen,
                }
            )
        if args.rows_to:
            sampler.stop()
            write_json(Path(args.rows_to), rows)
            return
        # The worker's whole process tree with PRISM_WORKER_CONCURRENCY (2) extractions at a
        # time: over the corpus, then the worst case, every slot on a file that reaches the
        # memory limit.
        gate = asyncio.Semaphore(args.concurrency)

        async def gated(path: Path) -> str:
            async with gate:
                return await hostile_outcome(path, limits)

        flood = next((path for name, _, path in files if name == "xml-flood.docx"), None)
        runs = [("the corpus", [path for _, _, path in files])]
        if flood is not None:
            runs.append((f"{args.concurrency} × xml-flood.docx", [flood] * args.concurrency))
        concurrent = []
        for label, paths in runs:
            sampler.label = label
            start = time.perf_counter()
            await asyncio.gather(*(gated(path) for path in paths))
            elapsed = time.perf_counter() - start
            await asyncio.sleep(3 * sampler.interval)
            concurrent.append(
                {
                    "files": label,
                    "at a time": args.concurrency,
                    "seconds": elapsed,
                    "worker tree peak MiB (sum of RSS)": sampler.tree_rss.get(label, 0) / 1024,
                    "largest child peak RSS MiB": sampler.child_hwm.get(label, 0) / 1024,
                }
            )
        sampler.stop()
        kernel = stop_forkserver_and_read_children_peak()
    forkserver = max((s["VmHWM"] for s in sampler.infrastructure.values()), default=0)
    summary = [
        {
            "figure": "largest extraction child peak RSS (sampled)",
            "MiB": max(r["child peak RSS MiB"] or 0 for r in rows),
        },
        {"figure": "largest descendant peak RSS (kernel, RUSAGE_CHILDREN)", "MiB": kernel},
        {"figure": "forkserver peak RSS", "MiB": forkserver / 1024},
        {
            "figure": "parent (worker) peak RSS while extracting (sampled)",
            "MiB": sampler.parent_rss / 1024,
        },
        {
            "figure": "parent peak RSS over the whole run (ru_maxrss, corpus generation included)",
            "MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        {"figure": "extraction memory limit (RLIMIT_AS)", "MiB": float(limits.memory_mb)},
    ]
    tables = {
        "Per file (one at a time)": rows,
        "Peak memory": summary,
        "Whole worker tree, extractions in parallel": concurrent,
    }
    if args.cli_variant:
        # Same files and limits, from a main module as heavy as the `prism` entry script.
        with tempfile.TemporaryDirectory(prefix="prism-bench-") as scratch:
            write_hostile_corpus(Path(scratch), args.only)
            only = ["--only", args.only] if args.only else []
            cli_rows = await variant_rows("hostile", ["--corpus-dir", scratch, *only])
        tables["Per file, main module importing prism.cli (as under `prism worker`)"] = cli_rows
    record(
        args,
        "hostile",
        "Hostile corpus through extract_isolated: outcome and peak memory",
        {
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "only": args.only,
            "limits": vars_of(limits),
        },
        tables,
    )


def stop_forkserver_and_read_children_peak() -> float | None:
    """Stop the forkserver (it reaps the extraction children, so once it is reaped the kernel
    accounts their peak to us) and read the largest descendant peak RSS, in MiB."""
    from multiprocessing import forkserver

    try:
        forkserver._forkserver._stop()  # type: ignore[attr-defined]
    except (AttributeError, OSError):  # private API: skip the cross-check if it changes
        return None
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# --- the whole pipeline ------------------------------------------------------------------------


async def upload(bench: BenchDatabase, seeds: Iterable[int], args: argparse.Namespace) -> float:
    """Each document through receive_upload in its own transaction, as the upload mutation."""
    from prism.documents.intake import receive_upload
    from prism.models.audit import Actor, RequestMeta
    from prism.models.scope import Scope

    org, services = bench.organization_id, bench.services
    start = time.perf_counter()
    for seed in seeds:
        data = contract_docx(seed, args.pages, args.words_per_page)
        async with services.db.transaction(org) as session:
            await receive_upload(
                session,
                services,
                scope=Scope.system(org),
                uploader_id=None,
                department=None,
                source=io.BytesIO(data),
                filename=f"contract-{seed}.docx",
                document_type=None,
                classification=None,
                analyze=True,
                actor=Actor(),
                meta=RequestMeta(user_agent="bench"),
            )
    return time.perf_counter() - start


async def pipeline_counts(bench: BenchDatabase) -> dict[str, int]:
    conn = await bench.owner()
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM documents WHERE processing_status = 'COMPLETED'),
               (SELECT count(*) FROM documents),
               (SELECT count(*) FROM document_sections),
               (SELECT count(*) FROM analysis_results)
        """
    )
    await conn.close()
    return {"completed": row[0], "documents": row[1], "sections": row[2], "analyses": row[3]}


def timed(handler: Callable[[Any], Awaitable[None]], totals: dict[str, float], key: str) -> Any:
    async def run(job_run: Any) -> None:
        start = time.perf_counter()
        try:
            await handler(job_run)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start

    return run


async def bench_pipeline(args: argparse.Namespace) -> None:
    from prism.documents.processing import ANALYZE, EXTRACT
    from prism.jobs.handlers import handle_analyze, handle_extract
    from prism.jobs.worker import Worker

    docs, concurrencies = args.docs, parse_ints(args.concurrency)
    rows, statements = [], []
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as scratch:
        async with bench_database(Path(scratch), pool_size=10) as bench:
            counter = SqlCounter(bench.services.db.engine)
            await upload(bench, [1_000_000], args)  # warm-up: forkserver, connections
            await Worker(bench.services).drain()
            seed = 0

            async def run(c: int) -> tuple[dict[str, Any], dict[str, Any]]:
                nonlocal seed
                # New documents each time: identical bytes would be deduplicated at upload.
                upload_seconds = await upload(bench, range(seed, seed + docs), args)
                seed += docs
                totals: dict[str, float] = {}
                handlers = {
                    EXTRACT: timed(handle_extract, totals, "extract"),
                    ANALYZE: timed(handle_analyze, totals, "analyze"),
                }
                before = await pipeline_counts(bench)
                counter.reset()
                with CpuClock(bench.postmaster_pid) as cpu:
                    worker = Worker(bench.services, concurrency=c, handlers=handlers)
                    jobs = await worker.drain()
                after = await pipeline_counts(bench)
                if after["completed"] != after["documents"]:
                    raise RuntimeError(f"documents left unfinished: {after}")
                row = {
                    "worker": "in-process Worker.drain",
                    "concurrency": c,
                    "docs": docs,
                    "upload s": upload_seconds,
                    "drain s": cpu.wall,
                    "docs/s": docs / cpu.wall,
                    "sections/s": (after["sections"] - before["sections"]) / cpu.wall,
                    "jobs": jobs,
                    "extract job s": totals.get("extract", 0) / docs,
                    "analyze job s": totals.get("analyze", 0) / docs,
                    "transactions/doc": counter.commits / docs,
                    "statements/doc": counter.statements / docs,
                    "python CPU s": cpu.python,
                    "postgres CPU s": cpu.postgres,
                }
                return row, counter.snapshot()

            for c in concurrencies:
                row, counted = median_run([await run(c) for _ in range(args.repeat)], "docs/s")
                rows.append(row)
                if not statements:  # where the statements go, once
                    statements = [
                        {
                            "statement": kind,
                            "per document": count / docs,
                            "ms per document": ms(counted["seconds"][kind] / docs),
                        }
                        for kind, count in sorted(counted["count"].items(), key=lambda kv: -kv[1])
                    ]
                    statements.append(
                        {"statement": "COMMIT", "per document": counted["commits"] / docs}
                    )
            if args.cli_docs:
                rows.append(await drain_with_cli(bench, args, concurrencies[0], start_seed=seed))
    record(
        args,
        "pipeline",
        "Whole pipeline: upload → extraction job → analysis job (rules), through PostgreSQL",
        {
            "docs": docs,
            "cli_docs": args.cli_docs,
            "pages": args.pages,
            "words_per_page": args.words_per_page,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
        },
        {
            "Throughput": rows,
            f"Statements per document (concurrency {concurrencies[0]})": statements,
        },
    )


async def drain_with_cli(
    bench: BenchDatabase, args: argparse.Namespace, concurrency: int, start_seed: int
) -> dict[str, Any]:
    """The same drain by the real `prism worker --drain` process, whose main module is the
    `prism` entry script: its start-up (an empty drain) is measured apart and subtracted."""
    prism = Path(sys.executable).with_name("prism")
    command = [str(prism), "worker", "--drain", "--concurrency", str(concurrency)]
    env = {
        **os.environ,
        "PRISM_DATABASE_URL": bench.url,
        "PRISM_DATA_DIR": str(bench.data_dir),
        "PRISM_LOG_LEVEL": "WARNING",
    }

    async def run() -> float:
        start = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if await process.wait() != 0:
            raise RuntimeError("prism worker --drain failed")
        return time.perf_counter() - start

    startup = await run()  # nothing queued: start-up, migration check, shutdown
    before = await pipeline_counts(bench)
    upload_seconds = await upload(bench, range(start_seed, start_seed + args.cli_docs), args)
    wall = await run()
    after = await pipeline_counts(bench)
    if after["completed"] != after["documents"]:
        raise RuntimeError(f"documents left unfinished by the CLI worker: {after}")
    drain_seconds = wall - startup
    docs = after["completed"] - before["completed"]
    return {
        "worker": f"`prism worker --drain` process (its {startup:.1f} s start-up subtracted, "
        "its forkserver's start not)",
        "concurrency": concurrency,
        "docs": docs,
        "upload s": upload_seconds,
        "drain s": drain_seconds,
        "docs/s": docs / drain_seconds,
        "sections/s": (after["sections"] - before["sections"]) / drain_seconds,
    }


# --- command line ------------------------------------------------------------------------------

BENCHMARKS = ("extraction", "analysis", "queue", "hostile", "pipeline")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = top.add_subparsers(dest="benchmark", required=True)
    results = [common.results_options()]

    def document_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--pages", type=int, default=10, help="pages per docx (default 10)")
        p.add_argument(
            "--words-per-page", type=int, default=500, help="words per page (default 500)"
        )

    p = sub.add_parser(
        "extraction", parents=results, help="detect + extract (isolated and in-process) + PII scan"
    )
    p.add_argument("--docs", type=int, default=40, help="documents (default 40)")
    p.add_argument("--concurrency", default="1,2", help="documents in flight, a list (1,2)")
    p.add_argument(
        "--cli-docs",
        type=int,
        default=10,
        help="documents for the run whose main module imports prism.cli (0: skip; default 10)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each row, median kept (3)")
    document_options(p)
    p.add_argument("--rows-to", help=argparse.SUPPRESS)

    p = sub.add_parser(
        "analysis", parents=results, help="rules analyzer over sections (sections/s)"
    )
    p.add_argument("--sections", type=int, default=20_000, help="sections (default 20000)")

    p = sub.add_parser(
        "queue", parents=results, help="enqueue, claim and ack against PostgreSQL (jobs/s)"
    )
    p.add_argument("--jobs", type=int, default=5_000, help="jobs per run (default 5000)")
    p.add_argument("--batch", type=int, default=100, help="jobs per enqueue transaction (100)")
    p.add_argument(
        "--single-jobs", type=int, default=1_000, help="jobs enqueued one a transaction (1000)"
    )
    p.add_argument("--concurrency", default="1,2,4,8,16", help="worker concurrencies, a list")
    p.add_argument(
        "--history",
        type=int,
        default=100_000,
        help="finished jobs put in the table for the last run (0: skip; default 100000)",
    )
    p.add_argument(
        "--backlogs",
        default="1000,10000,100000",
        help="queued-job backlogs to time prism_claim_jobs over, a list",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each row, median kept (3)")

    p = sub.add_parser(
        "hostile", parents=results, help="hostile corpus: outcome and peak memory per file"
    )
    p.add_argument("--concurrency", type=int, default=2, help="files at once in the last run (2)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each file (3)")
    p.add_argument(
        "--no-cli-variant",
        dest="cli_variant",
        action="store_false",
        help="skip the run whose main module imports prism.cli",
    )
    p.add_argument(
        "--only",
        help="these files of the corpus only, a list of names (default: all; the parallel run "
        "of xml-flood.docx needs it)",
    )
    p.add_argument("--rows-to", help=argparse.SUPPRESS)
    p.add_argument("--corpus-dir", help=argparse.SUPPRESS)

    p = sub.add_parser(
        "pipeline", parents=results, help="upload → extract → analyze through the Worker (docs/s)"
    )
    p.add_argument("--docs", type=int, default=20, help="documents (default 20)")
    p.add_argument(
        "--concurrency", default="2,4", help="worker concurrencies, a list (default 2,4)"
    )
    p.add_argument(
        "--cli-docs",
        type=int,
        default=10,
        help="documents drained by a `prism worker --drain` process (0: skip; default 10)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each row, median kept (3)")
    document_options(p)

    sub.add_parser(
        "all", parents=results, help="every benchmark with its defaults, each in a fresh process"
    )
    return top


def run_all(args: argparse.Namespace) -> int:
    """Each benchmark in its own process: a fresh forkserver, a clean peak RSS, and one
    benchmark's database not warming the next's."""
    failed = []
    for name in BENCHMARKS:
        command = [sys.executable, __file__, name, "--results-dir", str(args.results_dir)]
        done = subprocess.run(command, check=False)  # noqa: S603
        if done.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    args = parser().parse_args()
    if args.benchmark == "all":
        return run_all(args)
    if args.benchmark == "analysis":
        bench_analysis(args)
        return 0
    runs: dict[str, Callable[[argparse.Namespace], Awaitable[None]]] = {
        "extraction": bench_extraction,
        "queue": bench_queue,
        "hostile": bench_hostile,
        "pipeline": bench_pipeline,
    }
    asyncio.run(runs[args.benchmark](args))
    return 0


# extract_isolated's children re-import this module as __mp_main__: nothing may run on import.
if __name__ == "__main__":
    sys.exit(main())
