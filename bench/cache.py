"""Benchmarks of the response cache and the query limits (issue "Persisted queries, Redis
caching and query limits for BI tools and partners").

    .venv/bin/python bench/cache.py all                  # what bench/results/cache.md records
    .venv/bin/python bench/cache.py all --duration 5 --rounds 1 --docs 100   # a quick look
    .venv/bin/python bench/cache.py profile              # where a warm hit's server time goes

One run builds a realistic organization in a fresh database (documents made by the pipeline's
own functions: sections, PII findings, rules analyses, reviewer feedback), registers a BI
operation, creates a BI token (`bi:read,documents:read`, AUDITOR, CONFIDENTIAL), starts a
redis-server and three `prism serve` processes on 127.0.0.1 side by side, and drives them in
turns over GET with the operation's hash and the token:

- server `redis`: the cache and the rate-limit buckets in Redis,
  `PRISM_RESPONSE_CACHE_TTL_SECONDS` at its default (60). Two workloads: *warm* (the same
  variables every request: hits) and *cold* (new variables every request: each one misses,
  runs, and stores its answer).
- server `local`: the same without Redis (each process's own memory), warm and cold.
- server `off`: Redis for the rate limits, cache TTL 0 (the cache is off: no data-version
  read, no lookup, no store), for what a miss costs over not caching at all.

Each workload runs at each concurrency for a fixed time; the workloads take turns in rounds,
in a rotated order, so that load from elsewhere on the machine falls on all of them alike, and
each ratio is taken within a round. Then in-process microbenchmarks time each step the limits
and the cache add to a request (cost estimate, bucket take, data-version read, cache key,
lookup, store, ETag) against the end-to-end latency.

`profile` runs the `redis` server alone under cProfile with warm requests, and breaks a hit's
time down by step and by package (bench/results/cache-profile.json).

Prints Markdown tables and writes bench/results/cache.json. Measurements to record, not
tests: nothing here asserts a figure. The database is fresh: on PRISM_DATABASE_URL's server
when it is set (dropped afterwards), else an embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import common
from bench.common import (
    ROOT,
    BenchDatabase,
    bench_database,
    fmt,
    ms,
    parse_ints,
    pct,
    postgres_cpu,
)
from bench.ingest import contract_sections

# The operation a BI tool (Metabase, Grafana, Superset) registers for a documents dashboard:
# one page of documents with what a dashboard shows of them, and a count beside it.
OPERATION = """
query BiDocumentsPage($first: Int!, $filter: DocumentFilter) {
  documents(first: $first, filter: $filter, orderBy: {field: CREATED_AT, direction: DESC}) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges {
      node {
        id filename documentType classification riskLevel confidence
        totalSections totalFeedbackItems wordCount createdAt
        uploadedBy { email department }
        piiSummary { type count }
      }
    }
  }
  highRisk: documents(filter: {riskLevel: [HIGH]}) { totalCount }
}
"""
OPERATION_NAME = "BiDocumentsPage"
PAGE = 50
# The warm workload's filter: every document (all were created before it). The cold one moves
# this instant by a microsecond per request: the same answer, a new cache key each time.
WARM_BEFORE = datetime(2100, 1, 1, tzinfo=UTC)

CLASSIFICATIONS = (("PUBLIC", 15), ("INTERNAL", 45), ("CONFIDENTIAL", 30), ("RESTRICTED", 10))
DOCUMENT_TYPES = ("CONTRACT", "CONTRACT", "CONTRACT", "POLICY", "REPORT", "GENERAL")
DEPARTMENTS = ("legal", "legal", "finance", "hr", "procurement")
# Rate limits high enough never to refuse a request here: the bucket is still taken (and
# refunded) on every request, which is the cost measured; refusals would measure something
# else. What the defaults allow is in the analysis (bench/results/cache.md).
RATE_LIMIT = {
    "PRISM_RATE_LIMIT_CAPACITY": "1000000000",
    "PRISM_RATE_LIMIT_REFILL_PER_SECOND": "1e9",
}


# --- reporting ---------------------------------------------------------------------------------


def record(
    args: argparse.Namespace,
    name: str,
    title: str,
    parameters: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Print the tables as Markdown and write everything to <results>/<name>.json."""
    common.record(
        name,
        title,
        parameters,
        tables,
        extra,
        script="bench/cache.py",
        file_name=name,
        results_dir=args.results_dir,
    )


# --- the organization ----------------------------------------------------------------------------


@dataclass
class Organization:
    docs: int
    sections: int
    analyses: int
    feedback: int
    users: int
    other_docs: int
    seconds: float


async def make_documents(
    bench: BenchDatabase,
    organization_id: uuid.UUID,
    uploaders: list[Any],
    count: int,
    *,
    seed: int,
    pages: int,
    concurrency: int = 4,
) -> list[uuid.UUID]:
    """``count`` documents as the pipeline leaves them: sections with their PII findings
    (store_sections), one rules analysis a section and the document's aggregates
    (analyze_sections), COMPLETED; as tests/factories.py add_document makes them."""
    from prism.analysis.rules import RulesAnalyzer
    from prism.documents.processing import analyze_sections, store_sections
    from prism.extraction.text import split_sections
    from prism.models.documents import Document
    from prism.models.enums import Classification, DocumentType

    rng = random.Random(seed)  # noqa: S311 - reproducible data, not security
    weights = [w for _, w in CLASSIFICATIONS]
    plans = []
    for n in range(count):
        text = "\n\n".join(
            f"{heading}\n{body}" for heading, body in contract_sections(seed + n, pages=pages)
        )
        (classification,) = rng.choices([c for c, _ in CLASSIFICATIONS], weights)
        plans.append(
            (
                n,
                text,
                Classification(classification),
                DocumentType(rng.choice(DOCUMENT_TYPES)),
                rng.choice(DEPARTMENTS),
                rng.choice(uploaders),
            )
        )
    analyzer = RulesAnalyzer()
    gate = asyncio.Semaphore(concurrency)
    made: list[uuid.UUID] = []

    async def one(plan: tuple[Any, ...]) -> None:
        n, text, classification, document_type, department, uploader = plan
        content = f"{text}\n{seed}-{n}".encode()
        async with gate, bench.services.db.transaction(organization_id) as session:
            document = Document(
                organization_id=organization_id,
                uploaded_by=uploader.id,
                department=department,
                filename=f"{document_type.value.lower()}-{seed}-{n:04d}.docx",
                mime_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                file_size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                document_type=document_type,
                classification=classification,
            )
            session.add(document)
            await session.flush()
            envelope = bench.services.envelope
            sections = await store_sections(
                session, document, split_sections(text), envelope=envelope
            )
            await analyze_sections(session, document, sections, analyzer, envelope=envelope)
            made.append(document.id)

    await asyncio.gather(*(one(plan) for plan in plans))
    return made


async def add_feedback(
    bench: BenchDatabase, organization_id: uuid.UUID, reviewer: Any, approver: Any
) -> int:
    """Reviewer feedback on the flagged analyses of every other document (accepted and
    approved, or a custom note), as prism.demo's review step makes it."""
    import sqlalchemy as sa

    from prism.models.analyses import Analysis
    from prism.models.base import utcnow
    from prism.models.enums import FeedbackAction, WorkflowStatus
    from prism.models.feedback import Feedback

    async with bench.services.db.transaction(organization_id) as session:
        flagged = list(
            await session.scalars(
                sa.select(Analysis)
                .where(Analysis.feedback_items != sa.text("'[]'::jsonb"))
                .order_by(Analysis.document_id, Analysis.created_at)
            )
        )
        by_document: dict[uuid.UUID, list[Any]] = {}
        for analysis in flagged:
            by_document.setdefault(analysis.document_id, []).append(analysis)
        rows = []
        for n, analyses in enumerate(by_document.values()):
            if n % 2:
                continue
            first, last = analyses[0], analyses[-1]
            item = first.feedback_items[0]
            rows.append(
                Feedback(
                    organization_id=organization_id,
                    document_id=first.document_id,
                    section_id=first.section_id,
                    analysis_id=first.id,
                    user_id=reviewer.id,
                    item_id=item["id"],
                    category=item["category"],
                    action=FeedbackAction.ACCEPTED,
                    rating=4,
                    workflow_status=WorkflowStatus.APPROVED,
                    approved_by=approver.id,
                    approved_at=utcnow(),
                )
            )
            rows.append(
                Feedback(
                    organization_id=organization_id,
                    document_id=last.document_id,
                    section_id=last.section_id,
                    analysis_id=last.id,
                    user_id=reviewer.id,
                    action=FeedbackAction.CUSTOM,
                    rating=3,
                    custom_text="Ask counsel to review this clause before signature.",
                )
            )
        session.add_all(rows)
        await session.flush()
    return len(rows)


async def make_users(bench: BenchDatabase, organization_id: uuid.UUID, domain: str) -> list[Any]:
    from prism.audit import OPERATOR
    from prism.identity import users as identity_users
    from prism.models.enums import Classification, Role

    people = [
        ("admin", Role.ADMIN, Classification.RESTRICTED, "legal"),
        ("approver", Role.APPROVER, Classification.CONFIDENTIAL, "legal"),
        ("reviewer", Role.REVIEWER, Classification.CONFIDENTIAL, "legal"),
        ("reviewer2", Role.REVIEWER, Classification.CONFIDENTIAL, "finance"),
        ("reviewer3", Role.REVIEWER, Classification.RESTRICTED, "hr"),
        ("buyer", Role.REVIEWER, Classification.INTERNAL, "procurement"),
        ("auditor", Role.AUDITOR, Classification.CONFIDENTIAL, "legal"),
        ("viewer", Role.VIEWER, Classification.INTERNAL, "finance"),
    ]
    users = []
    for name, role, clearance, department in people:
        users.append(
            await identity_users.add_user(
                bench.services,
                OPERATOR,
                organization_id,
                email=f"{name}@{domain}",
                password="correct horse battery staple " + name,
                role=role,
                clearance=clearance,
                department=department,
                first_name=name.title(),
                last_name="Bench",
            )
        )
    return users


async def make_organization(bench: BenchDatabase, args: argparse.Namespace) -> Organization:
    """The organization of the BI token, and another one beside it (tenants share tables)."""
    from prism.audit import OPERATOR
    from prism.identity import organizations as identity_organizations

    start = time.perf_counter()
    users = await make_users(bench, bench.organization_id, "bench.example")
    uploaders = [u for u in users if u.role.value in ("ADMIN", "APPROVER", "REVIEWER")]
    docs = await make_documents(
        bench, bench.organization_id, uploaders, args.docs, seed=0, pages=args.pages
    )
    feedback = await add_feedback(bench, bench.organization_id, users[2], users[1])
    other_docs = 0
    if args.other_docs:
        other = await identity_organizations.create_organization(
            bench.services, OPERATOR, "Other tenant"
        )
        other_users = await make_users(bench, other.id, "other.example")
        other_docs = len(
            await make_documents(
                bench, other.id, other_users[:3], args.other_docs, seed=10_000, pages=args.pages
            )
        )
    conn = await bench.owner()
    try:
        await conn.execute("VACUUM ANALYZE")
        sections, analyses = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM document_sections WHERE organization_id = $1),"
            " (SELECT count(*) FROM analysis_results WHERE organization_id = $1)",
            bench.organization_id,
        )
    finally:
        await conn.close()
    return Organization(
        docs=len(docs),
        sections=sections,
        analyses=analyses,
        feedback=feedback,
        users=len(users),
        other_docs=other_docs,
        seconds=time.perf_counter() - start,
    )


@dataclass
class BiSetup:
    digest: str
    document: str
    token: str
    token_id: uuid.UUID


async def register_and_token(bench: BenchDatabase) -> BiSetup:
    """What an operator does for a BI tool: push the operation (as `prism operations push`
    does) and create a BI service token (as `prism token create --scopes
    bi:read,documents:read --role AUDITOR --clearance CONFIDENTIAL`: `bi:read` alone reads no
    documents here)."""
    from prism.audit import OPERATOR
    from prism.models.enums import Classification, Role
    from prism.models.registered_operations import register_operations
    from prism.operations.persisted import split_operations
    from prism.tokens import api_tokens

    found = split_operations(OPERATION, common.core_schema())
    async with bench.services.db.transaction(None) as session:
        ((_, digest, _),) = await register_operations(session, found)
    created = await api_tokens.create_token(
        bench.services,
        OPERATOR,
        bench.organization_id,
        name="metabase",
        scopes=["bi:read", "documents:read"],
        role=Role.AUDITOR,
        clearance=Classification.CONFIDENTIAL,
    )
    return BiSetup(
        digest=digest, document=found[0][1], token=created.secret, token_id=created.token.id
    )


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float, log: Path) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}); see {log}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} in time; see {log}")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def redis_server(scratch: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of our own on a free port, without persistence (as the tests start it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/redis.sh ensure installs it)")
    port = free_port()
    directory = scratch / "redis"
    directory.mkdir()
    log = directory / "redis.log"
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(directory), "--logfile", str(log)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        wait_for_port(port, process, time.monotonic() + 15, log)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        stop(process)


PRISM = Path(sys.executable).with_name("prism")


@dataclass
class Server:
    """One `prism serve` process (one uvicorn worker) on 127.0.0.1."""

    name: str
    description: str
    environment: dict[str, str]
    # Instead of `prism serve` (the profile runs it under cProfile).
    command: list[str] | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def start(self, scratch: Path, database_url: str, timeout: float) -> None:
        self.port = free_port()
        home = scratch / f"server-{self.name}"
        home.mkdir()
        self.log = home / "server.log"
        # Nothing of the caller's PRISM_* environment, and no .env (the cwd is empty).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
        env.update(
            {
                "PRISM_MODE": "production",
                "PRISM_HOST": "127.0.0.1",
                "PRISM_PORT": str(self.port),
                "PRISM_DATABASE_URL": database_url,
                "PRISM_DATA_DIR": str(home / "data"),
                "PRISM_JWT_SECRET": "bench-jwt-secret-" + "x" * 40,
                "PRISM_ENCRYPTION_KEY": "ab" * 32,
                **RATE_LIMIT,
                **self.environment,
            }
        )
        command = self.command or [str(PRISM), "serve"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603
                command, env=env, cwd=home, stdout=out, stderr=out
            )
        wait_for_port(self.port, self.process, time.monotonic() + timeout, self.log)

    def stop(self) -> None:
        stop(self.process)

    def cpu_seconds(self) -> float:
        import psutil

        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system


def process_cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


# --- the load generator -------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared GETs and reads the answers:
    tens of microseconds of client CPU a request, so that the two cores go to the server."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = (
            f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\nUser-Agent: prism-bench\r\n\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(b"GET " + target + b" HTTP/1.1\r\n" + self.headers)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def target(digest: str, variables: dict[str, Any]) -> bytes:
    query = urllib.parse.urlencode(
        {
            "operationName": OPERATION_NAME,
            "variables": json.dumps(variables, separators=(",", ":")),
            "extensions": json.dumps(
                {"persistedQuery": {"version": 1, "sha256Hash": digest}}, separators=(",", ":")
            ),
        }
    )
    return f"/graphql?{query}".encode()


def warm_variables() -> dict[str, Any]:
    return {"first": PAGE, "filter": {"createdBefore": WARM_BEFORE.isoformat()}}


COLD_COUNTER = itertools.count(1)


def cold_variables() -> dict[str, Any]:
    before = WARM_BEFORE + timedelta(microseconds=next(COLD_COUNTER))
    return {"first": PAGE, "filter": {"createdBefore": before.isoformat()}}


@dataclass
class Workload:
    name: str
    server: Server
    cache: str  # "warm", "cold" or "off"
    store: str  # "Redis", "in-process"

    def next_target(self, digest: str) -> bytes:
        return target(digest, cold_variables() if self.cache == "cold" else warm_variables())


@dataclass
class LoadResult:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    hits: int = 0
    bytes: int = 0
    first_error: str | None = None


async def drive(
    workload: Workload, digest: str, token: str, concurrency: int, seconds: float
) -> LoadResult:
    """``concurrency`` connections, each sending its next request as soon as the previous
    answer arrives (a closed loop), for ``seconds``."""
    result = LoadResult(seconds=0.0)
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        connection = Connection(workload.server.port, token)
        try:
            while time.perf_counter() < deadline:
                request = workload.next_target(digest)
                start = time.perf_counter()
                status, body = await connection.get(request)
                result.latencies.append(time.perf_counter() - start)
                result.bytes += len(body)
                if status != 200 or b'"errors"' in body:
                    result.errors += 1
                    if result.first_error is None:
                        result.first_error = f"{status} {body[:300]!r}"
                elif b'"cached":true' in body:
                    result.hits += 1
        finally:
            await connection.close()

    start = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(loop() for _ in range(concurrency))), timeout=seconds + 60
    )
    result.seconds = time.perf_counter() - start
    return result


async def check_workload(workload: Workload, setup: BiSetup) -> tuple[dict[str, Any], Any]:
    """Two requests through httpx, read in full: the answer is the one a dashboard wants, and
    the cache does what the workload says (a hit on the second warm request, never a hit
    otherwise)."""
    import httpx

    base = f"http://127.0.0.1:{workload.server.port}"
    headers = {"authorization": f"Bearer {setup.token}"}
    answers = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(2):
            response = await client.get(
                workload.next_target(setup.digest).decode(), headers=headers
            )
            body = response.json()
            if response.status_code != 200 or body.get("errors"):
                raise RuntimeError(f"{workload.name}: {response.status_code} {body}")
            answers.append((response, body))
    (_, first), (response, second) = answers
    edges = second["data"]["documents"]["edges"]
    expected_hit = workload.cache == "warm"
    page = min(PAGE, second["data"]["documents"]["totalCount"])
    if len(edges) != page or second["extensions"]["cost"]["cached"] is not expected_hit:
        raise RuntimeError(f"{workload.name}: unexpected answer {second['extensions']}")
    return {
        "workload": workload.name,
        "answer bytes": len(response.content),
        "documents in page": len(edges),
        "totalCount": second["data"]["documents"]["totalCount"],
        "highRisk totalCount": second["data"]["highRisk"]["totalCount"],
        "cost requested": first["extensions"]["cost"]["requested"],
        "cost actual": first["extensions"]["cost"]["actual"],
        "X-Prism-Cache": response.headers.get("x-prism-cache"),
        "ETag": bool(response.headers.get("etag")),
        "RateLimit-Remaining": response.headers.get("ratelimit-remaining"),
    }, second["data"]


# --- end to end ----------------------------------------------------------------------------------


@dataclass
class Clocks:
    """CPU seconds of the processes serving a workload: the server, PostgreSQL (its backends
    by pid: the pools keep theirs open), Redis, and this process (the load generator)."""

    server: Server
    postmaster: int | None
    redis_pid: int

    def read(self) -> tuple[dict[str, float], dict[int, float]]:
        return (
            {
                "server": self.server.cpu_seconds(),
                "redis": process_cpu(self.redis_pid),
                "client": time.process_time(),
            },
            postgres_cpu(self.postmaster),
        )

    @staticmethod
    def used(
        before: tuple[dict[str, float], dict[int, float]],
        after: tuple[dict[str, float], dict[int, float]],
    ) -> dict[str, float]:
        used = {k: after[0][k] - before[0][k] for k in before[0]}
        used["postgres"] = sum(v - before[1].get(pid, 0.0) for pid, v in after[1].items())
        return used


async def run_slot(
    workload: Workload,
    setup: BiSetup,
    concurrency: int,
    args: argparse.Namespace,
    clocks: Clocks,
) -> dict[str, Any]:
    await drive(workload, setup.digest, setup.token, concurrency, args.warmup)
    before = clocks.read()
    done = await drive(workload, setup.digest, setup.token, concurrency, args.duration)
    used = Clocks.used(before, clocks.read())
    count = len(done.latencies)
    lat = done.latencies
    return {
        "workload": workload.name,
        "concurrency": concurrency,
        "requests": count,
        "req/s": count / done.seconds,
        "p50 ms": ms(pct(lat, 0.50)),
        "p95 ms": ms(pct(lat, 0.95)),
        "p99 ms": ms(pct(lat, 0.99)),
        "mean ms": ms(statistics.mean(lat)),
        "hit %": 100 * done.hits / count,
        "errors": done.errors,
        "first error": done.first_error,
        "KiB/answer": done.bytes / count / 1024,
        "server CPU ms/req": ms(used["server"] / count),
        "postgres CPU ms/req": ms(used["postgres"] / count) if clocks.postmaster else None,
        "redis CPU ms/req": ms(used["redis"] / count),
        "client CPU ms/req": ms(used["client"] / count),
        "loadavg 1m": os.getloadavg()[0],
    }


def parse_names(text: str, known: dict[str, Any]) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise SystemExit(f"--servers: {text!r}; choose among {', '.join(known)}")
    return names


def rotated(items: list[Workload], by: int) -> list[Workload]:
    by %= len(items)
    return items[by:] + items[:by]


async def end_to_end(
    workloads: list[Workload],
    setup: BiSetup,
    args: argparse.Namespace,
    postmaster: int | None,
    redis_pid: int,
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], list[dict[str, Any]]]]:
    """Every workload at every concurrency, ``rounds`` times; the workloads' order rotates from
    one round to the next."""
    by_slot: dict[tuple[str, int], list[dict[str, Any]]] = {}
    runs: list[dict[str, Any]] = []
    total = args.rounds * len(parse_ints(args.concurrency)) * len(workloads)
    done = 0
    for round_ in range(args.rounds):
        for concurrency in parse_ints(args.concurrency):
            for workload in rotated(workloads, round_):
                clocks = Clocks(workload.server, postmaster, redis_pid)
                row = await run_slot(workload, setup, concurrency, args, clocks)
                row["round"] = round_ + 1
                runs.append(row)
                by_slot.setdefault((workload.name, concurrency), []).append(row)
                done += 1
                print(
                    f"  [{done}/{total}] round {round_ + 1} {workload.name} c={concurrency}: "
                    f"{row['req/s']:.0f} req/s, p50 {row['p50 ms']:.2f} ms, "
                    f"p99 {row['p99 ms']:.2f} ms, hits {row['hit %']:.0f} %, "
                    f"errors {row['errors']}, load {row['loadavg 1m']:.2f}",
                    flush=True,
                )
    return runs, by_slot


CPU_COLUMNS = (
    "server CPU ms/req",
    "postgres CPU ms/req",
    "redis CPU ms/req",
    "client CPU ms/req",
    "KiB/answer",
    "loadavg 1m",
)


def throughput_tables(
    by_slot: dict[tuple[str, int], list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per workload and concurrency, each figure the median of the rounds' (every round
    weighs the same: pooling the requests would favour quiet rounds, which hold more of
    them), with the range of req/s and the quietest round's p50; then the CPU a request
    cost each process, also the median of the rounds'."""

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    speed, cpu = [], []
    for (name, concurrency), runs in by_slot.items():
        requests = sum(r["requests"] for r in runs)
        speeds = [r["req/s"] for r in runs]
        speed.append(
            {
                "workload": name,
                "concurrency": concurrency,
                "rounds": len(runs),
                "requests": requests,
                "req/s": median(runs, "req/s"),
                "req/s range": f"{fmt(min(speeds))}–{fmt(max(speeds))}",
                "p50 ms": median(runs, "p50 ms"),
                "p95 ms": median(runs, "p95 ms"),
                "p99 ms": median(runs, "p99 ms"),
                "p50 ms, quietest round": min(r["p50 ms"] for r in runs),
                "hit %": sum(r["hit %"] * r["requests"] for r in runs) / requests,
                "errors": sum(r["errors"] for r in runs),
            }
        )
        cpu.append(
            {
                "workload": name,
                "concurrency": concurrency,
                **{key: median(runs, key) for key in CPU_COLUMNS if key != "loadavg 1m"},
                "server CPU ms/req, least": min(r["server CPU ms/req"] for r in runs),
                "loadavg 1m, range": f"{fmt(min(r['loadavg 1m'] for r in runs))}–"
                f"{fmt(max(r['loadavg 1m'] for r in runs))}",
            }
        )
    return speed, cpu


def ratio_table(
    by_slot: dict[tuple[str, int], list[dict[str, Any]]], concurrencies: list[int]
) -> list[dict[str, Any]]:
    """Ratios taken within each round (the two workloads ran minutes apart at most), then
    the median over the rounds, with the range."""
    pairs = [
        ("warm / cold, Redis", "warm · Redis", "cold · Redis"),
        ("warm / cold, in-process", "warm · in-process", "cold · in-process"),
        ("warm Redis / warm in-process", "warm · Redis", "warm · in-process"),
        ("cold (miss) / cache off", "cold · Redis", "cache off"),
        ("warm Redis / cache off", "warm · Redis", "cache off"),
    ]
    rows = []
    for label, a, b in pairs:
        for c in concurrencies:
            ra, rb = by_slot.get((a, c)), by_slot.get((b, c))
            if not ra or not rb:
                continue
            rounds = list(zip(ra, rb, strict=True))

            def ratios(key: str, rounds: list[Any] = rounds) -> list[float]:
                return [x[key] / y[key] for x, y in rounds]

            speed, p50, p99 = ratios("req/s"), ratios("p50 ms"), ratios("p99 ms")
            # CPU a request costs the server, the other way round: how many times as many
            # requests one core serves (what the load from elsewhere disturbs least).
            cpu = [y["server CPU ms/req"] / x["server CPU ms/req"] for x, y in rounds]
            rows.append(
                {
                    "ratio": label,
                    "concurrency": c,
                    "req/s ×": statistics.median(speed),
                    "req/s × range": f"{fmt(min(speed))}–{fmt(max(speed))}",
                    "p50 ×": statistics.median(p50),
                    "p99 ×": statistics.median(p99),
                    "server CPU capacity ×": statistics.median(cpu),
                    "rounds": len(rounds),
                }
            )
    return rows


# --- microbenchmarks ----------------------------------------------------------------------------


async def timed(call: Callable[[], Any], iterations: int, *, is_async: bool) -> list[float]:
    """The seconds of each of ``iterations`` calls, after a few untimed ones."""
    for _ in range(min(20, iterations)):
        if is_async:
            await call()
        else:
            call()
    samples = []
    clock = time.perf_counter
    for _ in range(iterations):
        start = clock()
        if is_async:
            await call()
        else:
            call()
        samples.append(clock() - start)
    return samples


def extension_rules(schema: Any) -> list[Any]:
    """The validation rules the schema's extensions add to every request."""
    from strawberry.extensions import AddValidationRules

    rules = []
    for factory in schema.extensions:
        extension = factory()
        if isinstance(extension, AddValidationRules):
            rules.extend(extension.validation_rules)
    return rules


async def microbenchmarks(
    bench: BenchDatabase, setup: BiSetup, data: Any, redis_url: str, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Each step the limits and the response cache add to a request, timed alone, in this
    process, with the same functions and clients the server uses."""
    import orjson
    from graphql import parse, specified_rules
    from strawberry.schema.schema import validate_document

    from prism.authn.bearer import authenticate_bearer
    from prism.cache.store import LocalStore, Rate, build_store
    from prism.execution.context import Context, RequestTransaction
    from prism.execution.cost import actual, estimate, operation_of
    from prism.execution.limits import bucket_key, cache_key, etag
    from prism.models.audit import RequestMeta
    from prism.operations.registry import ResolvedOperation
    from prism.schema import build_schema

    services = bench.services
    strawberry_schema = build_schema(services.settings.model_copy(update={"mode": "production"}))
    schema = common.core_schema(strawberry_schema)
    # The rules a request validates with: graphql-core's and the extensions' (depth, aliases,
    # one secret check, no introspection in production), as the schema adds them.
    rules = (*specified_rules, *extension_rules(strawberry_schema))
    document = parse(setup.document)
    operation = operation_of(document, OPERATION_NAME)
    assert operation is not None
    variables = warm_variables()
    principal = await authenticate_bearer(services.db, services.access_tokens, setup.token)
    context = Context(
        services=services,
        principal=principal,
        meta=RequestMeta(ip_address="127.0.0.1"),
        transaction=RequestTransaction(services.db, principal.organization_id),
    )
    context.operation = ResolvedOperation(setup.document, setup.digest, registered=True)
    found = estimate(schema, document, operation, variables)
    context.root_fields = found.root_fields
    version = await context.data_version()
    key = cache_key(context, variables, version)
    assert key is not None
    stored = orjson.dumps(data)  # the answer as the server stores it
    rate = Rate(10**9, 1e9)
    bucket = bucket_key(context)
    redis = build_store(redis_url)
    local = LocalStore()
    await redis.set(key, stored, 60)
    await local.set(key, stored, 60)
    n, n_io = args.micro_iterations, args.micro_io_iterations

    steps: list[tuple[str, str, Callable[[], Any], int, bool]] = [
        (
            "limits",
            "cost estimate: `estimate` over the parsed operation",
            lambda: estimate(schema, document, operation, variables),
            n,
            False,
        ),
        ("limits", "actual cost: `actual` over the answer", lambda: actual(data), n, False),
        (
            "limits",
            "rate-limit bucket take, Redis (EVALSHA via ResilientStore)",
            lambda: redis.take(bucket, found.cost, rate),
            n_io,
            True,
        ),
        (
            "limits",
            "rate-limit bucket take, in-process (LocalStore)",
            lambda: local.take(bucket, found.cost, rate),
            n,
            True,
        ),
        (
            "cache",
            "data-version read: `Context.data_version` (a pooled transaction)",
            context.data_version,
            n_io,
            True,
        ),
        (
            "cache",
            "cache key: `cache_key` (visibility, version, hash, variables → sha256)",
            lambda: cache_key(context, variables, version),
            n,
            False,
        ),
        ("cache", "lookup, Redis, hit (GET)", lambda: redis.get(key), n_io, True),
        ("cache", "lookup, Redis, miss (GET)", lambda: redis.get("rc:missing"), n_io, True),
        ("cache", "lookup, in-process, hit", lambda: local.get(key), n, True),
        ("cache", "lookup, in-process, miss", lambda: local.get("rc:missing"), n, True),
        ("cache", "store, Redis (SET with TTL)", lambda: redis.set(key, stored, 60), n_io, True),
        ("cache", "store, in-process", lambda: local.set(key, stored, 60), n, True),
        ("cache", "decode a hit: `orjson.loads`", lambda: orjson.loads(stored), n, False),
        (
            "cache",
            "ETag: `etag` (orjson.dumps + sha256 of the answer)",
            lambda: etag(data),
            n,
            False,
        ),
        (
            "context",
            "validation: `validate_document` of the operation (a validation-cache miss)",
            lambda: validate_document(schema, document, rules),
            max(1, n // 10),
            False,
        ),
        (
            "context",
            "token authentication: `authenticate_bearer` (API token lookup transaction)",
            lambda: authenticate_bearer(services.db, services.access_tokens, setup.token),
            n_io,
            True,
        ),
    ]
    # In batches, every step in turn, several times: a burst of load from elsewhere falls on
    # one batch of each step, not on all the calls of one step. The quietest batch's p50 is
    # what a step costs (the others are that plus interruptions).
    samples: dict[str, list[float]] = {name: [] for _, name, *_ in steps}
    batch_p50s: dict[str, list[float]] = {name: [] for _, name, *_ in steps}
    for _ in range(args.micro_batches):
        for _group, name, call, iterations, is_async in steps:
            batch = await timed(call, max(1, iterations // args.micro_batches), is_async=is_async)
            samples[name] += batch
            batch_p50s[name].append(pct(batch, 0.5))
    await redis.close()
    await local.close()
    await context.finish(commit=False)  # the data-version reads' transaction
    rows = []
    best: dict[str, float] = {}
    for group, name, *_ in steps:
        every = samples[name]
        best[name] = min(batch_p50s[name]) * 1e6
        rows.append(
            {
                "group": group,
                "step": name,
                "p50 µs, quietest batch": best[name],
                "p50 µs, all calls": pct(every, 0.5) * 1e6,
                "mean µs": statistics.mean(every) * 1e6,
                "p99 µs": pct(every, 0.99) * 1e6,
                "calls": len(every),
            }
        )
    return rows, best


def overhead_table(
    steps: dict[str, float], p50: dict[tuple[str, int], tuple[float, float]]
) -> list[dict[str, Any]]:
    """What the steps add up to on each path of a request (each step's p50 in its quietest
    batch), against the end-to-end p50 at concurrency 1 of the matching workload: the median
    of the rounds' p50s, and the quietest round's."""

    def total(*names: str) -> float:
        return sum(next(v for k, v in steps.items() if k.startswith(prefix)) for prefix in names)

    estimate, counted = "cost estimate", "actual cost"
    take_redis, take_local = "rate-limit bucket take, Redis", "rate-limit bucket take, in-process"
    version, key, etag = "data-version read", "cache key", "ETag"
    paths = [
        (
            "limits (cost estimate + actual count + bucket take), Redis, on a hit",
            ("warm · Redis", 1),
            total(estimate, counted, take_redis),
        ),
        (
            "limits, Redis, on a miss (+ the refund of the unused estimate: a second take)",
            ("cold · Redis", 1),
            total(estimate, counted, take_redis, take_redis),
        ),
        (
            "limits, in-process, on a hit",
            ("warm · in-process", 1),
            total(estimate, counted, take_local),
        ),
        (
            "limits, in-process, on a miss (+ refund)",
            ("cold · in-process", 1),
            total(estimate, counted, take_local, take_local),
        ),
        (
            "cache on a hit, Redis (version + key + GET + decode + ETag)",
            ("warm · Redis", 1),
            total(version, key, "lookup, Redis, hit", "decode a hit", etag),
        ),
        (
            "cache on a miss, Redis (version + key + GET + SET + ETag)",
            ("cold · Redis", 1),
            total(version, key, "lookup, Redis, miss", "store, Redis", etag),
        ),
        (
            "cache on a hit, in-process",
            ("warm · in-process", 1),
            total(version, key, "lookup, in-process, hit", "decode a hit", etag),
        ),
        (
            "cache on a miss, in-process",
            ("cold · in-process", 1),
            total(version, key, "lookup, in-process, miss", "store, in-process", etag),
        ),
        (
            "token authentication (every request; not a limit, for scale)",
            ("warm · Redis", 1),
            total("token authentication"),
        ),
        (
            "validation of the operation, when the validation cache misses (for scale)",
            ("warm · Redis", 1),
            total("validation"),
        ),
    ]
    rows = []
    for label, slot, micros in paths:
        typical, quietest = p50.get(slot, (None, None))
        rows.append(
            {
                "per request": label,
                "µs": micros,
                "workload": f"{slot[0]}, c={slot[1]}",
                "p50 µs (median round)": typical * 1000 if typical else None,
                "% of it": 100 * micros / (typical * 1000) if typical else None,
                "p50 µs (quietest round)": quietest * 1000 if quietest else None,
                "% of that": 100 * micros / (quietest * 1000) if quietest else None,
            }
        )
    return rows


# --- the run -------------------------------------------------------------------------------------


async def bench_all(args: argparse.Namespace) -> None:
    concurrencies = parse_ints(args.concurrency)
    with tempfile.TemporaryDirectory(prefix="prism-bench-cache-") as tmp:
        scratch = Path(tmp)
        async with bench_database(scratch, pool_size=args.pool_size) as bench:
            print("building the organization ...", flush=True)
            org = await make_organization(bench, args)
            setup = await register_and_token(bench)
            print(
                f"  {org.docs} documents, {org.sections} sections, {org.analyses} analyses, "
                f"{org.feedback} feedback, {org.users} users (+ {org.other_docs} documents "
                f"of another organization) in {org.seconds:.0f} s",
                flush=True,
            )
            with redis_server(scratch) as (redis_url, redis_process):
                servers = [
                    Server(
                        "redis",
                        "cache and rate limits in Redis, TTL 60 s (the default)",
                        {"PRISM_REDIS_URL": redis_url},
                    ),
                    Server(
                        "local",
                        "cache and rate limits in the process's memory (no PRISM_REDIS_URL)",
                        {},
                    ),
                    Server(
                        "off",
                        "rate limits in Redis, response cache off (TTL 0)",
                        {"PRISM_REDIS_URL": redis_url, "PRISM_RESPONSE_CACHE_TTL_SECONDS": "0"},
                    ),
                ]
                by_name = {s.name: s for s in servers}
                workloads = [
                    Workload("warm · Redis", by_name["redis"], "warm", "Redis"),
                    Workload("cold · Redis", by_name["redis"], "cold", "Redis"),
                    Workload("warm · in-process", by_name["local"], "warm", "in-process"),
                    Workload("cold · in-process", by_name["local"], "cold", "in-process"),
                    Workload("cache off", by_name["off"], "off", "Redis"),
                ]
                wanted = set(parse_names(args.servers, by_name))
                servers = [s for s in servers if s.name in wanted]
                workloads = [w for w in workloads if w.server.name in wanted]
                try:
                    for server in servers:
                        server.start(scratch, bench.url, args.server_timeout)
                    checked = [await check_workload(w, setup) for w in workloads]
                    checks = [row for row, _ in checked]
                    data = checked[0][1]  # the answer (a hit returns it whole)
                    print("end to end ...", flush=True)
                    runs, by_slot = await end_to_end(
                        workloads, setup, args, bench.postmaster_pid, redis_process.pid
                    )
                finally:
                    for server in servers:
                        server.stop()
                print("microbenchmarks ...", flush=True)
                micro, means = await microbenchmarks(bench, setup, data, redis_url, args)
    throughput, cpu = throughput_tables(by_slot)
    p50 = {
        (row["workload"], row["concurrency"]): (row["p50 ms"], row["p50 ms, quietest round"])
        for row in throughput
    }
    record(
        args,
        "cache",
        "Response cache and limits: a registered BI operation over GET, warm vs cold",
        {
            "docs": args.docs,
            "pages_per_doc": args.pages,
            "other_docs": args.other_docs,
            "page_size": PAGE,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "server_pool_size": 10,
            "servers": {s.name: s.description for s in servers},
            "rate_limits": RATE_LIMIT,
            "log_level": "INFO (production default: one access line a request)",
        },
        {
            "Organization": [
                {
                    "documents": org.docs,
                    "sections": org.sections,
                    "analyses": org.analyses,
                    "feedback": org.feedback,
                    "users": org.users,
                    "other organization's documents": org.other_docs,
                    "built in s": org.seconds,
                }
            ],
            "The answer (checked before measuring)": checks,
            "Throughput and latency (medians of the rounds)": throughput,
            "CPU per request, by process (medians of the rounds)": cpu,
            "Ratios within a round (median over rounds)": ratio_table(by_slot, concurrencies),
            "Steps, timed alone in process": micro,
            "Overhead per request vs end-to-end p50 (concurrency 1)": overhead_table(means, p50),
        },
        extra={"runs": runs, "operation": OPERATION, "operation_sha256": setup.digest},
    )


# --- profile -------------------------------------------------------------------------------------


# `prism serve` with a profiler that SIGUSR1 starts and SIGUSR2 stops and writes to argv[1]:
# the start-up (imports, migrations) stays out of the profile.
PROFILED_SERVE = """
import cProfile, signal, sys
out, profile = sys.argv[1], cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
def dump(*_):
    profile.disable()
    profile.dump_stats(out)
signal.signal(signal.SIGUSR2, dump)
sys.argv = ["prism", "serve"]
from prism.cli.main import main
main()
"""


def profiled_functions() -> list[tuple[str, Any]]:
    """The functions a warm request passes through, by what they do (their code objects name
    them in the server's profile: same files, same lines)."""
    from strawberry.extensions import ValidationCache
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from prism.execution.context import Context
    from prism.execution.extensions import Metrics, ParseCache, TransactionEnd
    from prism.execution.limits import OperationCost, RateLimit, ResponseCache
    from prism.operations.registry import OperationRegistry
    from prism.web.app import RequestIdMiddleware
    from prism.web.auth import BearerAuthentication
    from prism.web.graphql import PrismGraphQL

    return [
        ("the request inside the app (uvicorn's `run_asgi`)", RequestResponseCycle.run_asgi),
        ("request id + access log middleware", RequestIdMiddleware.__call__),
        (
            "token authentication (`BearerAuthentication.authenticate`)",
            BearerAuthentication.authenticate,
        ),
        ("GraphQL view (`PrismGraphQL.__call__`)", PrismGraphQL.__call__),
        ("persisted query → text (`OperationRegistry.resolve`)", OperationRegistry.resolve),
        ("parse (`ParseCache.on_parse`)", ParseCache.on_parse),
        ("validation (`ValidationCache.on_validate`)", ValidationCache.on_validate),
        ("cost estimate + actual (`OperationCost.on_execute`)", OperationCost.on_execute),
        ("response cache (`ResponseCache.on_execute`)", ResponseCache.on_execute),
        ("… of which the data-version read (`Context.data_version`)", Context.data_version),
        ("rate limit (`RateLimit.on_execute`)", RateLimit.on_execute),
        ("transaction end (`TransactionEnd.on_operation`)", TransactionEnd.on_operation),
        ("metrics (`Metrics.on_operation`)", Metrics.on_operation),
        ("response body (`PrismGraphQL.create_response`)", PrismGraphQL.create_response),
    ]


def package_of(filename: str) -> str:
    if filename == "~" or filename.startswith("<"):
        return "C functions (builtins, orjson, hashlib, socket, …)"
    path = Path(filename)
    if "site-packages" in path.parts:
        return path.parts[path.parts.index("site-packages") + 1].split(".")[0]
    if ROOT / "prism" in path.parents:
        return "prism"
    return "Python's standard library (asyncio, …)"


def profile_tables(stats_path: Path, requests: int) -> dict[str, list[dict[str, Any]]]:
    import pstats

    stats = pstats.Stats(str(stats_path)).stats  # type: ignore[attr-defined]
    by_code = {}
    for (filename, line, name), (_cc, calls, _tt, cumulative, _callers) in stats.items():
        by_code[(filename, line, name)] = (calls, cumulative)
    rows = []
    whole = None
    for label, function in profiled_functions():
        code = getattr(function, "__wrapped__", function).__code__
        calls, cumulative = by_code.get(
            (code.co_filename, code.co_firstlineno, code.co_name), (0, 0.0)
        )
        whole = whole or cumulative
        rows.append(
            {
                "step": label,
                "calls/request": calls / requests,
                "ms/request": ms(cumulative / requests),
                "% of the request": 100 * cumulative / whole if whole else None,
            }
        )
    # Self time by package (the event loop's C code, running since before the profile
    # started, is not in it: nor is its waiting).
    packages: dict[str, float] = {}
    for (filename, _line, _name), (_cc, _calls, own, _cumulative, _callers) in stats.items():
        package = package_of(filename)
        packages[package] = packages.get(package, 0.0) + own
    busy = sum(packages.values())
    by_package = [
        {"package": package, "ms/request": ms(own / requests), "% of busy time": 100 * own / busy}
        for package, own in sorted(packages.items(), key=lambda item: -item[1])
    ]
    return {"steps": rows, "packages": by_package}


async def bench_profile(args: argparse.Namespace) -> None:
    """One server (Redis, TTL 60) under cProfile, warm requests at concurrency 1: where a hit
    spends the server's time. cProfile slows Python code about twice; read the shares."""
    with tempfile.TemporaryDirectory(prefix="prism-bench-cache-") as tmp:
        scratch = Path(tmp)
        async with bench_database(scratch, pool_size=args.pool_size) as bench:
            await make_organization(bench, args)
            setup = await register_and_token(bench)
            out = scratch / "server.prof"
            with redis_server(scratch) as (redis_url, _):
                server = Server(
                    "redis",
                    "cache and rate limits in Redis, TTL 60 s, under cProfile",
                    {"PRISM_REDIS_URL": redis_url},
                    command=[sys.executable, "-c", PROFILED_SERVE, str(out)],
                )
                workload = Workload("warm · Redis", server, "warm", "Redis")
                try:
                    server.start(scratch, bench.url, args.server_timeout)
                    await check_workload(workload, setup)
                    await drive(workload, setup.digest, setup.token, 1, 1.0)  # warm-up
                    assert server.process is not None
                    server.process.send_signal(signal.SIGUSR1)
                    await asyncio.sleep(0.2)
                    done = await drive(workload, setup.digest, setup.token, 1, args.duration)
                    server.process.send_signal(signal.SIGUSR2)
                    deadline = time.monotonic() + 30
                    while not out.exists() and time.monotonic() < deadline:  # noqa: ASYNC110
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(0.5)  # the file is written whole
                finally:
                    server.stop()
            tables = profile_tables(out, len(done.latencies))
    record(
        args,
        "cache-profile",
        "Where a warm hit spends the server's time (cProfile, one server, concurrency 1)",
        {"docs": args.docs, "duration_s": args.duration, "requests": len(done.latencies)},
        {
            "Steps (cumulative time, per request)": tables["steps"],
            "Self time by package": tables["packages"],
        },
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = top.add_subparsers(dest="benchmark", required=True)
    results = [common.results_options()]
    p = sub.add_parser(
        "all",
        parents=results,
        help="build the organization, run every workload, then the steps",
    )
    p.add_argument("--docs", type=int, default=300, help="documents of the BI organization (300)")
    p.add_argument("--pages", type=int, default=2, help="pages per document, 3 sections each (2)")
    p.add_argument(
        "--other-docs", type=int, default=100, help="documents of another organization (100)"
    )
    p.add_argument("--concurrency", default="1,10", help="connections at once, a list (1,10)")
    p.add_argument(
        "--servers",
        default="redis,local,off",
        help="the servers started and their workloads, a list (redis,local,off)",
    )
    p.add_argument("--duration", type=float, default=6, help="seconds per measured slot (6)")
    p.add_argument("--warmup", type=float, default=1, help="untimed seconds before each slot (1)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of every slot, median kept (5)")
    p.add_argument(
        "--micro-iterations", type=int, default=20_000, help="calls of in-memory steps (20000)"
    )
    p.add_argument(
        "--micro-io-iterations",
        type=int,
        default=2_000,
        help="calls of steps that go to Redis or PostgreSQL (2000)",
    )
    p.add_argument(
        "--micro-batches", type=int, default=10, help="batches each step's calls run in (10)"
    )
    p.add_argument("--pool-size", type=int, default=4, help="this process's database pool (4)")
    p.add_argument(
        "--server-timeout", type=float, default=90, help="seconds a server may take to start"
    )
    p = sub.add_parser(
        "profile",
        parents=results,
        help="one server under cProfile: where a warm hit's time goes",
    )
    p.add_argument("--docs", type=int, default=300, help="documents of the BI organization (300)")
    p.add_argument("--pages", type=int, default=2, help="pages per document, 3 sections each (2)")
    p.add_argument("--other-docs", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=15, help="seconds of warm requests (15)")
    p.add_argument("--pool-size", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--server-timeout", type=float, default=90, help=argparse.SUPPRESS)
    return top


def main() -> int:
    args = parser().parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(bench_all(args) if args.benchmark == "all" else bench_profile(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
