"""Benchmarks of the outbox and its Kafka relay (issue "Events"): relay throughput to the local
broker (target ≥ 5,000 events/s), what writing a change's event adds to a mutation (target
≤ 5 %), and the latency from a change's commit to its arrival in Kafka (target p95 < 500 ms).

    .venv/bin/python bench/outbox.py                      # 50,000 events, 4 organizations
    .venv/bin/python bench/outbox.py --events 10000 --rounds 3
    make bench-events                                     # starts the Kafka broker first

Kafka is the broker at PRISM_BENCH_KAFKA_BOOTSTRAP (`scripts/kafka.sh start` prints it).

- **throughput**: the events are written to the outbox first (``append_event``, in
  transactions of 500), then each round a relay with a fresh cursor and topic prefix publishes
  all of them (``Relay.drain``: one batch per organization at a time, four organizations at
  once, the brokers' acknowledgement of each batch awaited before its cursor moves).
- **overhead**: an ADMIN's `updateDocument` mutation (legal hold on, then off) through the
  real ASGI app; and, in blocks taken in turn, the same audit event written alone and with its
  outbox event (``record_event``, one transaction each): the difference, in wall time and in
  CPU (this process and PostgreSQL's), is what the outbox adds to the mutation.
- **latency**: a relay runs (woken by NOTIFY); audited changes are committed one at a time and
  a consumer reads them: the time from each commit to its arrival.

Results: bench/results/events.json (or in --results-dir), summarised in events.md. These are
measurements to record, not tests: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common
from bench.cache import make_documents, make_users
from bench.common import ms, pct


async def write_events(bench: Any, organizations: list[uuid.UUID], count: int) -> float:
    """``count`` events spread over the organizations (metrics snapshots: the relay's own
    event); seconds taken."""
    from prism.events.relay import snapshot_draft
    from prism.models import outbox

    per = count // len(organizations)
    started = time.perf_counter()

    async def fill(organization_id: uuid.UUID) -> None:
        figures = outbox.Activity(
            organization_id, {"analysis": {"QUEUED": 3}}, 12, 2, 0.4, 1.2, 900, 0.02
        )
        left = per
        while left:
            n = min(500, left)
            async with bench.services.db.transaction(organization_id) as session:
                for _ in range(n):
                    await outbox.append_event(
                        session, snapshot_draft(figures, 60.0, datetime.now(UTC))
                    )
            left -= n

    await asyncio.gather(*(fill(o) for o in organizations))
    return time.perf_counter() - started


def relay_for(bench: Any, kafka: str, prefix: str, consumer: str, batch: int) -> Any:
    from prism.events.kafka import KafkaPublisher
    from prism.events.relay import Relay

    settings = bench.services.settings.model_copy(
        update={
            "kafka_bootstrap": kafka,
            "kafka_topic_prefix": prefix,
            "events_snapshot_seconds": 0.0,
            "events_poll_seconds": 0.05,
        }
    )
    return Relay(
        bench.services.db, settings, KafkaPublisher(settings), consumer=consumer, batch_size=batch
    )


async def throughput(bench: Any, kafka: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for round_ in range(args.rounds):
        tag = uuid.uuid4().hex[:8]
        relay = relay_for(bench, kafka, f"bench-{tag}.", f"bench-{tag}", args.batch)
        await relay.register()
        with common.CpuClock(bench.postmaster_pid) as clock:
            try:
                published = await relay.drain()
            finally:
                await relay.publisher.close()
        rows.append(
            {
                "round": round_ + 1,
                "events": published,
                "batch": args.batch,
                "seconds": round(clock.wall, 3),
                "events/s": round(published / clock.wall),
                "python CPU s": round(clock.python, 2),
                "PostgreSQL CPU s": None if clock.postgres is None else round(clock.postgres, 2),
            }
        )
    return rows


UPDATE = """mutation($input: UpdateDocumentInput!) {
  updateDocument(input: $input) { id legalHold } }"""


async def overhead(bench: Any, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    import httpx
    from asgi_lifespan import LifespanManager

    from prism.audit import OPERATOR, outbox_event
    from prism.execution.ids import to_global_id
    from prism.models.audit import Actor, Subject, record_event
    from prism.models.enums import Classification
    from prism.tokens import api_tokens
    from prism.web.app import create_app

    users = await make_users(bench, bench.organization_id, "events.example")
    (document_id,) = await make_documents(
        bench, bench.organization_id, users[:3], 1, seed=7, pages=1
    )
    admin = users[0]
    created = await api_tokens.create_token(
        bench.services,
        OPERATOR,
        bench.organization_id,
        name="bench",
        scopes=["documents:read", "documents:write"],
        user_email=admin.email,
    )
    headers = {"authorization": f"Bearer {created.secret}", "content-type": "application/json"}
    gid = to_global_id("Document", document_id)

    async def audit_only(with_outbox: bool) -> float:
        started = time.perf_counter()
        async with bench.services.db.transaction(bench.organization_id) as session:
            await record_event(
                session,
                organization_id=bench.organization_id,
                actor=Actor(user_id=admin.id),
                event_type="document.legal_hold",
                category="governance",
                description="Document 'contract.docx' updated",
                resource_type="Document",
                resource_id=document_id,
                before={"legalHold": False, "classification": "INTERNAL"},
                after={"legalHold": True, "classification": "INTERNAL"},
                subject=Subject(Classification.INTERNAL, "legal"),
                outbox=outbox_event if with_outbox else None,
            )
        return time.perf_counter() - started

    app = create_app(bench.services.settings, database_url=bench.url)
    # Blocks of each, in turn (the first of each pair alternating): wall time and CPU (this
    # process and PostgreSQL's) summed per kind, so load that comes and goes hits all alike.
    totals = {k: {"n": 0, "wall": 0.0, "cpu": 0.0} for k in ("mutation", "with", "without")}
    latencies: list[float] = []

    async def block(kind: str, step: Any) -> None:
        with common.CpuClock(bench.postmaster_pid) as clock:
            for _ in range(args.block):
                await step()
        if warm:
            totals[kind]["n"] += args.block
            totals[kind]["wall"] += clock.wall
            totals[kind]["cpu"] += clock.python + (clock.postgres or 0.0)

    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as http:
            hold = [False]

            async def mutate() -> None:
                hold[0] = not hold[0]
                started = time.perf_counter()
                answer = await http.post(
                    "/graphql",
                    json={
                        "query": UPDATE,
                        "variables": {"input": {"id": gid, "legalHold": hold[0]}},
                    },
                    headers=headers,
                )
                latencies.append(time.perf_counter() - started)
                body = answer.json()
                if body.get("errors") or body["data"]["updateDocument"]["legalHold"] != hold[0]:
                    raise RuntimeError(f"updateDocument failed: {body}")

            async def with_outbox() -> None:
                await audit_only(True)

            async def without() -> None:
                await audit_only(False)

            warm = False
            await block("mutation", mutate)
            await block("with", with_outbox)
            await block("without", without)
            warm = True
            latencies.clear()
            for n in range(args.blocks):
                pair = [("with", with_outbox), ("without", without)]
                for kind, step in pair if n % 2 == 0 else reversed(pair):
                    await block(kind, step)
                await block("mutation", mutate)

    def per(kind: str, what: str) -> float:
        return totals[kind][what] / totals[kind]["n"]

    added_wall = per("with", "wall") - per("without", "wall")
    added_cpu = per("with", "cpu") - per("without", "cpu")
    mutation_wall, mutation_cpu = per("mutation", "wall"), per("mutation", "cpu")
    return {
        "A mutation (updateDocument, legal hold, ADMIN API token, in-process ASGI)": [
            {
                "requests": totals["mutation"]["n"],
                "mean ms": round(ms(mutation_wall), 3),
                "p50 ms": round(ms(pct(latencies, 0.5)), 3),
                "p95 ms": round(ms(pct(latencies, 0.95)), 3),
                "CPU ms (Python + PostgreSQL)": round(ms(mutation_cpu), 3),
            }
        ],
        "Its audit event alone, without and with its outbox event (one transaction each)": [
            {
                "variant": variant,
                "transactions": totals[kind]["n"],
                "mean ms": round(ms(per(kind, "wall")), 3),
                "CPU ms (Python + PostgreSQL)": round(ms(per(kind, "cpu")), 3),
            }
            for variant, kind in (
                ("audit event only (as before the outbox)", "without"),
                ("audit event + outbox event (the same statement)", "with"),
            )
        ],
        "What the outbox adds to the mutation": [
            {
                "measure": measure,
                "added ms": round(ms(added), 3),
                "mutation without it ms": round(ms(whole - added), 3),
                "overhead %": round(100 * added / (whole - added), 2),
            }
            for measure, added, whole in (
                ("wall time", added_wall, mutation_wall),
                ("CPU (Python + PostgreSQL)", added_cpu, mutation_cpu),
            )
        ],
    }


async def latency(bench: Any, kafka: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Commit → arrival in Kafka, with a relay running and a consumer reading."""
    from aiokafka import AIOKafkaConsumer

    from prism import audit
    from prism.audit import OPERATOR
    from prism.events.catalog import USER_INTERACTIONS

    tag = uuid.uuid4().hex[:8]
    prefix, consumer_name = f"latency-{tag}.", f"latency-{tag}"
    relay = relay_for(bench, kafka, prefix, consumer_name, args.batch)
    await relay.register()
    stop = asyncio.Event()
    committed: dict[str, float] = {}
    arrived: dict[str, float] = {}
    written, all_arrived = asyncio.Event(), asyncio.Event()
    reader = AIOKafkaConsumer(
        f"{prefix}{USER_INTERACTIONS}",
        bootstrap_servers=kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()

    async def read() -> None:
        while not stop.is_set() or len(arrived) < len(committed):
            batch = await reader.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    arrived.setdefault(dict(record.headers)["ce_id"].decode(), now)
            if written.is_set() and len(arrived) >= len(committed):
                all_arrived.set()
            if stop.is_set() and time.perf_counter() - stopped_at > 30:
                return

    await relay.drain()  # what the organizations had: published before measuring
    running = asyncio.create_task(relay.run(stop))
    stopped_at = 0.0
    reading = asyncio.create_task(read())
    try:
        for i in range(args.latency_changes):
            async with bench.services.db.transaction(bench.organization_id) as session:
                event = await audit.record(
                    session,
                    None,
                    OPERATOR,
                    organization_id=bench.organization_id,
                    event_type="job.retry",
                    category="administration",
                    description=f"change {i}",
                )
            committed[str(event.id)] = time.perf_counter()
            await asyncio.sleep(args.latency_gap)
        # the relay still runs until the last change arrived (or 30 s passed)
        written.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_arrived.wait(), 30)
    finally:
        stopped_at = time.perf_counter()
        stop.set()
        await reading
        await running
        await reader.stop()
    delays = [arrived[k] - t for k, t in committed.items() if k in arrived]
    return [
        {
            "changes": len(committed),
            "arrived": len(delays),
            "gap between changes ms": round(ms(args.latency_gap), 1),
            "p50 ms": round(ms(pct(delays, 0.5)), 1) if delays else None,
            "p95 ms": round(ms(pct(delays, 0.95)), 1) if delays else None,
            "max ms": round(ms(max(delays)), 1) if delays else None,
        }
    ]


async def bench_all(args: argparse.Namespace) -> None:
    from prism.audit import OPERATOR
    from prism.identity import organizations as identity_organizations

    kafka = args.kafka or os.environ.get("PRISM_BENCH_KAFKA_BOOTSTRAP", "")
    if not kafka:
        sys.exit("no Kafka broker: set PRISM_BENCH_KAFKA_BOOTSTRAP (scripts/kafka.sh start)")
    with tempfile.TemporaryDirectory(prefix="prism-bench-events-") as scratch:
        async with common.bench_database(Path(scratch), pool_size=10) as bench:
            organizations = [bench.organization_id]
            for n in range(args.organizations - 1):
                other = await identity_organizations.create_organization(
                    bench.services, OPERATOR, f"Bench events {n}"
                )
                organizations.append(other.id)
            # first, while the outbox holds only the organizations' own few events
            measured_latency = await latency(bench, kafka, args)
            written = await write_events(bench, organizations, args.events)
            tables: dict[str, list[dict[str, Any]]] = {
                "Writing the events to the outbox (append_event, 500 a transaction)": [
                    {
                        "events": args.events,
                        "organizations": len(organizations),
                        "seconds": round(written, 2),
                        "events/s": round(args.events / written),
                    }
                ],
                "Relay throughput to the local broker (Relay.drain, acks=all, idempotent)": (
                    await throughput(bench, kafka, args)
                ),
            }
            tables.update(await overhead(bench, args))
            tables["Latency: commit → arrival in Kafka (relay running, woken by NOTIFY)"] = (
                measured_latency
            )
    common.record(
        "events",
        "Outbox and Kafka relay",
        {
            "events": args.events,
            "organizations": args.organizations,
            "batch": args.batch,
            "rounds": args.rounds,
            "blocks": args.blocks,
            "block": args.block,
            "latency_changes": args.latency_changes,
        },
        tables,
        script="bench/outbox.py",
        file_name="events",
        results_dir=args.results_dir,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, parents=[common.results_options()])
    parser.add_argument("--kafka", default="", help="host:port (default from the environment)")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--organizations", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=20, help="blocks of each kind, in turn")
    parser.add_argument("--block", type=int, default=25, help="operations a block")
    parser.add_argument("--latency-changes", type=int, default=100)
    parser.add_argument("--latency-gap", type=float, default=0.05)
    asyncio.run(bench_all(parser.parse_args()))


if __name__ == "__main__":
    main()
