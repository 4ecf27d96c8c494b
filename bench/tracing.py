"""What tracing costs a request (decision 0034): CPU time of the server process per request,
with tracing off, on with no request sampled (the floor: what every request pays), on with
10% sampling (the target: at most 5% more than off) and on with every request sampled, side
by side.

Four `prism serve` processes of this checkout on one database (embedded PostgreSQL, or
PRISM_DATABASE_URL's server): ``off`` (no OTEL variable), ``unsampled``
(``parentbased_traceidratio`` at 0), ``sampled`` (at ``--ratio``) and ``always``
(``parentbased_always_on``), the traced ones exporting over OTLP/HTTP to a real receiver in
this process (tests/otlp.py; its CPU is not the server's), started anew every round (a
process keeps a speed of its own for its life, a few percent either way). Per round, each
server in turn (the order rotated every round, so a change in the machine's load weighs on
all alike) answers ``--requests`` requests of each query at ``--concurrency``: a registered
query by its hash (the lean, compiled path), and a query sent as text that the full
Strawberry path answers (each answer's ``extensions.execution.path`` is recorded). CPU
ms/request is the server process's CPU time over those requests (the scheduler's per-thread
nanoseconds, so a thread's exports count); the ratio to ``off`` is taken per round and its
median kept (the range beside it). The servers share one CPU and one hash seed, the load
generator (and the database it starts) the other CPUs.

    .venv/bin/python bench/tracing.py [--requests 400] [--rounds 5] [--ratio 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import common
from prism.execution.ids import to_global_id
from prism.models.enums import Role
from prism.models.registered_operations import register_operations
from prism.operations.persisted import split_operations
from tests.factories import add_document, make_tenant
from tests.otlp import receiving

OPERATIONS = """
query One($id: ID!) { node(id: $id) { id ... on Document { filename classification
  sections(first: 3) { edges { node { name } } } } } }
"""
# Sent as text: answered by the full path (Strawberry's pipeline, resolvers, loaders), as the
# planner plans neither root field (search is its backend's; retention policies, Python's).
FULL = (
    'query Full { search(query: "agreement", first: 5) { totalCount } '
    "retentionPolicies { category hotDays } }"
)
SERVERS = ("off", "unsampled", "sampled", "always")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uptime() -> str:
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)  # noqa: S607
    return done.stdout.strip()


def _cpu(process: psutil.Process) -> float:
    """The process's CPU seconds so far: the scheduler's nanosecond count of each of its
    threads (``/proc/<pid>/task/*/schedstat``), where Linux has it; else user + system time
    in clock ticks (10 ms, too coarse for a round of lean requests)."""
    tasks = Path(f"/proc/{process.pid}/task")
    try:
        total = 0
        for task in tasks.iterdir():
            total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        times = process.cpu_times()
        return float(times.user + times.system)


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prism.cli", "serve"], env=env, stdout=out, stderr=out
        )
    cpus = os.sched_getaffinity(0)
    if len(cpus) > 1:
        # Every server on the same CPU (one answers at a time), the load generator (this
        # process) on the others: the servers compare on equal terms.
        os.sched_setaffinity(process.pid, {max(cpus)})
    return process


async def _ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prism serve exited: {_tail(log)}")
            try:
                if (await client.get("/readyz", timeout=2)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError("prism serve did not become ready")


async def _burst(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str], n: int, c: int
) -> str:
    """``n`` requests, ``c`` at a time; the path that answered the last one."""
    left = n
    path = ""

    async def one_worker() -> None:
        nonlocal left, path
        while left > 0:
            left -= 1
            response = await client.post("/graphql", json=body, headers=headers)
            answer = response.json()
            if response.status_code != 200 or answer.get("errors"):
                raise RuntimeError(f"bad answer: {response.status_code} {answer}")
            path = (answer.get("extensions") or {}).get("execution", {}).get("path", "full")

    await asyncio.gather(*(one_worker() for _ in range(c)))
    return path


async def main(args: argparse.Namespace) -> None:
    uptime_start = _uptime()
    cpus = os.sched_getaffinity(0)
    if len(cpus) > 1:
        os.sched_setaffinity(0, cpus - {max(cpus)})
    try:
        await _run(args, uptime_start, cpus)
    finally:
        os.sched_setaffinity(0, cpus)


async def _run(args: argparse.Namespace, uptime_start: str, cpus: set[int]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="prism-bench-tracing-"))
    async with common.bench_database(scratch, pool_size=5) as db:
        tenant = await make_tenant(db.services)
        docs = [await add_document(db.services, tenant) for _ in range(args.documents)]
        async with db.services.db.transaction(None) as session:
            stored = await register_operations(
                session, split_operations(OPERATIONS, common.core_schema())
            )
        digest = next(d for name, d, _ in stored if name == "One")
        # A reviewer's token for the registered query (an ADMIN's clearance reaches RESTRICTED
        # reads, which are audited, so not planned); an ADMIN's for retentionPolicies.
        tokens = {
            "lean (registered, compiled)": tenant.tokens[Role.REVIEWER],
            "full (text, Strawberry)": tenant.tokens[Role.ADMIN],
        }
        queries: dict[str, dict[str, Any]] = {
            "lean (registered, compiled)": {
                "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}},
                "variables": {"id": to_global_id("Document", docs[0].id)},
            },
            "full (text, Strawberry)": {"query": FULL},
        }
        queries = {q: body for q, body in queries.items() if q.split()[0] in args.queries}
        headers = {query: {"authorization": f"Bearer {tokens[query]}"} for query in queries}
        with receiving() as (receiver, endpoint):
            base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PRISM_"))}
            base.update(
                PYTHONWARNINGS="ignore",
                # The same string hashes in every server: one less way two processes of the
                # same code differ (set and dict layouts, hence their speed).
                PYTHONHASHSEED="0",
                PRISM_DATABASE_URL=db.url,
                PRISM_DATA_DIR=str(db.data_dir),
                PRISM_JWT_SECRET="bench-secret-" + "x" * 40,
                PRISM_LOG_LEVEL="WARNING",
                PRISM_LIFECYCLE_INTERVAL_HOURS="0",
                PRISM_RESPONSE_CACHE_TTL_SECONDS="0",
                PRISM_RATE_LIMIT_CAPACITY="1000000000",
                PRISM_RATE_LIMIT_REFILL_PER_SECOND="1000000000",
                PRISM_DATABASE_POOL_SIZE="5",
            )
            traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
            envs = {
                "off": {},
                "unsampled": {
                    **traced,
                    "OTEL_SERVICE_NAME": "prism-unsampled",
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0",
                },
                "sampled": {
                    **traced,
                    "OTEL_SERVICE_NAME": "prism-sampled",
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": str(args.ratio),
                },
                "always": {
                    **traced,
                    "OTEL_SERVICE_NAME": "prism-always",
                    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
                },
            }
            measured: dict[tuple[str, str], list[float]] = {
                (q, s): [] for q in queries for s in SERVERS
            }
            paths: dict[str, str] = {}
            for round_no in range(args.rounds):
                # New processes every round: a process keeps, for its life, a speed of its
                # own (where its memory landed), a few percent either way.
                async with _servers(base, envs, scratch) as (processes, ports):
                    await _round(
                        args, round_no, processes, ports, queries, headers, paths, measured
                    )
                    await asyncio.sleep(2)  # the traced servers' last batches
            spans = {
                name: sum(1 for s in receiver.spans if s.service == f"prism-{name}")
                for name in SERVERS[1:]
            }
    rows, ratios = [], []
    total = args.requests * args.rounds
    for query in queries:
        off = measured[(query, "off")]
        for name in SERVERS:
            cpu = measured[(query, name)]
            row: dict[str, Any] = {
                "query": query,
                "path": paths[query],
                "server": name,
                "CPU ms/request (median of rounds)": round(statistics.median(cpu) * 1000, 3),
                "range": f"{min(cpu) * 1000:.3f}–{max(cpu) * 1000:.3f}",
            }
            if name != "off":
                # A round too short for the CPU clock (10 ms ticks) to see `off` has no ratio.
                per_round = [c / o for c, o in zip(cpu, off, strict=True) if o > 0]
                ratio = round(statistics.median(per_round), 3) if per_round else None
                row["÷ off (median of rounds)"] = ratio
                row["÷ off range"] = (
                    f"{min(per_round):.3f}–{max(per_round):.3f}" if per_round else "–"
                )
                ratios.append({"query": query, "server": name, "ratio": ratio})
            rows.append(row)
    exported = [
        {
            "server": name,
            "requests": total * len(queries),
            "spans received": spans[name],
            "spans per request": round(spans[name] / (total * len(queries)), 2),
        }
        for name in SERVERS[1:]
    ]
    os.sched_setaffinity(0, cpus)  # the record says what the machine has
    common.record(
        "tracing",
        "Tracing overhead: server CPU per request, off / sampled / always",
        {
            "requests per round per query": args.requests,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "sampling ratio": args.ratio,
            "documents": args.documents,
            "queries": " ".join(args.queries),
        },
        {"CPU per request": rows, "spans exported": exported},
        {"uptime_start": uptime_start, "uptime_end": _uptime(), "ratios": ratios},
        script="bench/tracing.py",
        file_name="tracing",
        results_dir=args.results_dir,
    )


@contextlib.asynccontextmanager
async def _servers(
    base: dict[str, str], envs: dict[str, dict[str, str]], scratch: Path
) -> AsyncIterator[tuple[dict[str, subprocess.Popen[bytes]], dict[str, int]]]:
    """One ``prism serve`` of each configuration, ready; stopped afterwards."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    try:
        for name in SERVERS:
            ports[name] = _free_port()
            processes[name] = _start(
                {**base, **envs[name], "PRISM_PORT": str(ports[name])}, scratch / f"{name}.log"
            )
        for name in SERVERS:
            await _ready(ports[name], processes[name], scratch / f"{name}.log")
        yield processes, ports
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def _round(
    args: argparse.Namespace,
    round_no: int,
    processes: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    queries: dict[str, dict[str, Any]],
    headers: dict[str, dict[str, str]],
    paths: dict[str, str],
    measured: dict[tuple[str, str], list[float]],
) -> None:
    """One round: each server warmed up, then each in turn (the order rotated by round)
    answering ``--requests`` of each query, its CPU time per request appended to
    ``measured``."""
    watched = {name: psutil.Process(p.pid) for name, p in processes.items()}
    limits = httpx.Limits(max_connections=args.concurrency)
    clients = {
        name: httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30)
        for name, port in ports.items()
    }
    try:
        for name in SERVERS:  # warm-up: plans, caches, connections
            for query, body in queries.items():
                path = await _burst(
                    clients[name], body, headers[query], args.warmup, args.concurrency
                )
                paths[query] = path
        turn = round_no % len(SERVERS)
        for name in SERVERS[turn:] + SERVERS[:turn]:
            for query, body in queries.items():
                before = _cpu(watched[name])
                await _burst(clients[name], body, headers[query], args.requests, args.concurrency)
                measured[(query, name)].append((_cpu(watched[name]) - before) / args.requests)
    finally:
        for client in clients.values():
            await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], parents=[common.results_options()]
    )
    parser.add_argument("--requests", type=int, default=400, help="per round, server, query")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--ratio", type=float, default=0.1, help="sampling ratio of `sampled`")
    parser.add_argument("--documents", type=int, default=10)
    parser.add_argument("--queries", nargs="+", choices=("lean", "full"), default=["lean", "full"])
    asyncio.run(main(parser.parse_args()))
