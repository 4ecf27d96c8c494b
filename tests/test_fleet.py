"""Prism as a fleet: two API processes (`prism serve`, each on its own loopback port) and two
`prism worker` processes on one PostgreSQL database and one Redis, sharing one
PROMETHEUS_MULTIPROC_DIR as processes of one host do. Uploads are processed exactly once, a
cached answer is invalidated on both API processes by a write on either, rate limits are
shared, a subscription on one process sees changes made by others, one scrape sums every
process's metrics, and when an API process and a worker are killed the rest carry on.

Also: the alert rules and the dashboard under deploy/ name only metrics a real scrape has,
and `prism serve` with PRISM_WORKERS=2 sums its worker processes in every scrape."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import websockets
import yaml
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from websockets.typing import Subprotocol

from prism import bootstrap
from prism.config import Settings
from prism.db import migrations
from prism.events import catalog
from prism.execution.ids import from_global_id, to_global_id
from prism.models import outbox
from prism.models.analyses import Analysis
from prism.models.documents import Document, Section
from prism.models.enums import JobState, ProcessingStatus, Role
from prism.models.jobs import Job
from prism.models.registered_operations import register_operations
from prism.observability import clean_multiprocess_dir, sweep_dead_processes
from prism.operations.persisted import split_operations
from prism.schema import build_schema
from prism.services import Services
from tests.conftest import NewDatabase, RedisServer
from tests.factories import Tenant, codes, gql, make_tenant
from tests.pipeline_helpers import upload

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "prism.json"
LEASE_SECONDS = 5
RATE_CAPACITY = 60
HEALTHZ = {"method": "GET", "route": "/healthz", "status": "200"}
# Metrics only some deployments produce: the relay's (Kafka), the governance quality job's.
RELAY_METRICS = {
    "prism_outbox_published_total",
    "prism_outbox_batches_total",
    "prism_outbox_batch_seconds_bucket",
}
NOT_IN_EVERY_FLEET = RELAY_METRICS | {"prism_outbox_pruned_total", "prism_data_quality_score"}
# Names PromQL expressions may use that are not metrics Prism exposes.
PROMETHEUS_OWN = {"up"}


# --- PromQL, crudely: the metric names an expression reads ------------------------------------

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Identifiers that are not functions, keywords, label names (in braces or after by,
    without, on, ignoring, group_*) or durations: the metrics an expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group(0)
        following = text[match.end() :].lstrip()
        # a function, or an aggregation whose `by (...)` comes first
        if following.startswith("(") or re.match(r"(by|without)\b", following):
            continue
        if name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (kind) (rate(prism_job_runs_total{outcome=~"retried|dead"}[15m])) / on () '
        "histogram_quantile(0.9, sum without (le) (rate(prism_job_seconds_bucket[5m]))) > 0.2"
        " and up == 0"
    )
    assert metric_names(expr) == {"prism_job_runs_total", "prism_job_seconds_bucket", "up"}


def expressions() -> dict[str, str]:
    """Every PromQL expression under deploy/: the alert rules' and the dashboard panels'."""
    found: dict[str, str] = {}
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            found[f"alert {rule['alert']}"] = rule["expr"]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r}"] = target["expr"]
    return found


def named_metrics() -> dict[str, set[str]]:
    """Metric name -> where deploy/ reads it."""
    named: dict[str, set[str]] = {}
    for where, expr in expressions().items():
        for name in metric_names(expr) - PROMETHEUS_OWN:
            named.setdefault(name, set()).add(where)
    return named


def scraped(text: str) -> tuple[set[str], set[str]]:
    """(names a scrape declares, with their sample names; names with samples)."""
    declared: set[str] = set()
    sampled: set[str] = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
    }
    for family in text_string_to_metric_families(text):
        for suffix in suffixes.get(family.type, ("",)):
            declared.add(family.name + suffix)
        for sample in family.samples:
            sampled.add(sample.name)
    return declared | sampled, sampled


async def test_alerts_and_dashboard_name_only_scraped_metrics(client: httpx.AsyncClient) -> None:
    named = named_metrics()
    assert len(named) >= 20, named
    declared, _ = scraped((await client.get("/metrics")).text)
    missing = {name: sorted(where) for name, where in named.items() if name not in declared}
    assert not missing, f"deploy/ names metrics no scrape has: {missing}"
    # and the alert rules are well formed
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule
            assert rule["annotations"]["summary"], rule


# --- the fleet ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Fleet:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "prism.cli", *args],
                env=self.env | env,
                stdout=out,
                stderr=out,
            )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def logs_of_all(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in self.processes)

    async def ready(self, name: str, url: str, within: float = 90) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                process = self.processes[name]
                assert process.poll() is None, self.log(name)
                try:
                    if (await http.get(url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, self.log(name)
                await asyncio.sleep(0.2)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def fleet_of(env: dict[str, str], logs: Path) -> Iterator[Fleet]:
    fleet = Fleet(env, logs)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def _env(settings: Settings, database_url: str, redis_url: str, metrics: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    assert settings.jwt_secret is not None
    env |= {
        "PRISM_DATABASE_URL": database_url,
        "PRISM_DATA_DIR": str(settings.data_dir),
        "PRISM_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "PRISM_REDIS_URL": redis_url,
        "PRISM_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        "PRISM_RATE_LIMIT_CAPACITY": str(RATE_CAPACITY),
        "PRISM_RATE_LIMIT_REFILL_PER_SECOND": "0.001",
        "PRISM_LIFECYCLE_INTERVAL_HOURS": "0",
        "PRISM_PASSWORD_HASH_TIME_COST": "1",
        "PRISM_PASSWORD_HASH_MEMORY_KIB": "1024",
        "PRISM_PASSWORD_HASH_PARALLELISM": "1",
        "PRISM_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    return env


def _text(sections: int) -> bytes:
    body = "\n\n".join(
        f"{i}. Clause {i}\nThe supplier accepts unlimited liability for clause {i}."
        for i in range(1, sections + 1)
    )
    return f"{body}\n{uuid.uuid4()}".encode()


def _document_id(response: httpx.Response) -> uuid.UUID:
    body = response.json()
    assert body.get("errors") is None, body
    return from_global_id(body["data"]["uploadDocument"]["document"]["id"])[1]


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and (labels or {}).items() <= found.labels.items():
                total += found.value
    return total


async def _wait_completed(
    services: Services, tenant: Tenant, ids: list[uuid.UUID], fleet: Fleet, within: float
) -> None:
    deadline = time.monotonic() + within
    while True:
        async with services.db.transaction(tenant.org_id) as session:
            states = list(
                await session.scalars(
                    sa.select(Document.processing_status).where(Document.id.in_(ids))
                )
            )
        if states.count(ProcessingStatus.COMPLETED) == len(ids):
            return
        assert ProcessingStatus.FAILED not in states, fleet.logs_of_all()
        assert time.monotonic() < deadline, (states, fleet.logs_of_all())
        await asyncio.sleep(0.25)


@asynccontextmanager
async def subscription(address: str, token: str, document: uuid.UUID) -> AsyncIterator[Any]:
    async with websockets.connect(
        f"ws://{address}/graphql", subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        query = "subscription($id: ID!) { documentProgress(id: $id) { processingStatus } }"
        variables = {"id": to_global_id("Document", document)}
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables},
                }
            )
        )
        yield ws


async def _statuses(ws: Any, until: str, within: float) -> list[str]:
    seen: list[str] = []
    async with asyncio.timeout(within):
        while until not in seen:
            message = json.loads(await ws.recv())
            if message["type"] in {"ping", "pong"}:
                continue
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["documentProgress"]["processingStatus"])
    return seen


DOCUMENTS = (
    """query FleetDocuments { documents(first: 3) { edges { node { id documentType } } } }"""
)
RETYPE = """mutation($id: ID!, $type: DocumentType!) {
  updateDocument(input: {id: $id, documentType: $type}) { id documentType } }"""


async def _cached_call(http: httpx.AsyncClient, url: str, token: str, digest: str) -> Any:
    response = await http.post(
        f"{url}/graphql",
        json={"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}},
        headers={"authorization": f"Bearer {token}"},
    )
    body = response.json()
    assert body.get("errors") is None, body
    types = {
        edge["node"]["id"]: edge["node"]["documentType"]
        for edge in body["data"]["documents"]["edges"]
    }
    return types, body["extensions"]["cost"]["cached"]


async def _until_published(services: Services, fleet: Fleet) -> None:
    deadline = time.monotonic() + 60
    while True:
        async with services.db.transaction(None) as session:
            pending = (await outbox.lag(session, "kafka")).events
        if pending == 0:
            return
        assert time.monotonic() < deadline, (pending, fleet.logs_of_all())
        await asyncio.sleep(0.25)


async def _head_of(services: Services, organization_id: uuid.UUID) -> int:
    async with services.db.transaction(organization_id) as session:
        events = await outbox.read_after(session, organization_id, 0, 1_000_000)
    return events[-1].sequence if events else 0


async def _consume(address: str, prefix: str, organization: str, head: int) -> dict[str, list[int]]:
    """The organization's sequences by topic, in the order read, until all 1..head came."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=address, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    found: dict[str, list[int]] = {}
    try:
        await consumer.start()
        consumer.subscribe([f"{prefix}{topic}" for topic in catalog.TOPICS])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=250)
            for record in (r for rs in batch.values() for r in rs):
                if record.key is not None and record.key.decode() == organization:
                    event = orjson.loads(record.value)
                    found.setdefault(record.topic, []).append(int(event["sequence"]))
            if {s for ss in found.values() for s in ss} >= set(range(1, head + 1)):
                break
    finally:
        await consumer.stop()
    return found


def kafka_address() -> str | None:
    """The broker `make test` starts, when there is one (CI has one: the Kafka tests fail
    there without it). Without it the fleet runs without the relay."""
    address = os.environ.get("PRISM_TEST_KAFKA_BOOTSTRAP", "")
    if not address:
        return None
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError):
        return None
    return address


@pytest.fixture
async def fleet_database(
    new_database: NewDatabase, settings: Settings
) -> AsyncIterator[tuple[str, Services]]:
    """A database of the fleet's own: its relays publish every organization's events, and
    the other tests' outboxes stay as they are."""
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(update={"database_url": SecretStr(url)})
    built = bootstrap.build_services(own, url)
    yield url, built
    await built.close()


async def test_a_fleet_of_two_api_processes_and_two_workers(
    fleet_database: tuple[str, Services],
    settings: Settings,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    database_url, services = fleet_database
    tenant = await make_tenant(services)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    found = split_operations(DOCUMENTS, build_schema()._schema)
    async with services.db.transaction(None) as session:
        digest = (await register_operations(session, found))[0][1]
    env = _env(settings, database_url, redis_server.url, metrics)
    kafka = kafka_address()
    prefix = f"fleet-{uuid.uuid4().hex[:8]}."
    if kafka is not None:  # each worker runs a relay
        env |= {
            "PRISM_KAFKA_BOOTSTRAP": kafka,
            "PRISM_KAFKA_TOPIC_PREFIX": prefix,
            "PRISM_EVENTS_POLL_SECONDS": "0.2",
        }
    ports = {"a": _free_port(), "b": _free_port()}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    worker_metrics = _free_port()
    reviewer, admin, viewer = (tenant.tokens[r] for r in (Role.REVIEWER, Role.ADMIN, Role.VIEWER))

    with fleet_of(env, tmp_path) as fleet:
        for name, port in ports.items():
            fleet.start(f"api-{name}", "serve", PRISM_PORT=str(port))
        for name in ports:
            await fleet.ready(f"api-{name}", f"{url[name]}/readyz")
        async with (
            httpx.AsyncClient(timeout=30) as http,
            httpx.AsyncClient(base_url=url["a"], timeout=30) as on_a,
            httpx.AsyncClient(base_url=url["b"], timeout=30) as on_b,
        ):
            api = {"a": on_a, "b": on_b}
            # -- a subscription on A sees the changes other processes make ------------------
            watched = _document_id(await upload(on_b, reviewer, "watched.txt", _text(3)))
            async with subscription(f"127.0.0.1:{ports['a']}", reviewer, watched) as ws:
                first = await _statuses(ws, "UPLOADED", 10)
                fleet.start(
                    "worker-1",
                    "worker",
                    "--concurrency",
                    "2",
                    PRISM_WORKER_METRICS_ADDRESS=f"127.0.0.1:{worker_metrics}",
                )
                fleet.start("worker-2", "worker", "--concurrency", "2")
                later = await _statuses(ws, "COMPLETED", 60)
            assert first == ["UPLOADED"]
            assert "EXTRACTING" in later or "ANALYZING" in later, later
            await fleet.ready("worker-1", f"http://127.0.0.1:{worker_metrics}/metrics")

            # -- uploads on either API process are processed exactly once ----------------------
            ids = [watched]
            for n in range(8):
                target = api["a" if n % 2 else "b"]
                response = await upload(target, reviewer, f"d{n}.txt", _text(3))
                ids.append(_document_id(response))
            await _wait_completed(services, tenant, ids, fleet, within=90)
            async with services.db.transaction(tenant.org_id) as session:
                jobs = list(await session.scalars(sa.select(Job)))
                sections = (
                    await session.execute(
                        sa.select(Section.document_id, sa.func.count())
                        .where(Section.document_id.in_(ids))
                        .group_by(Section.document_id)
                    )
                ).all()
                analyses = (
                    await session.execute(
                        sa.select(Analysis.section_id, sa.func.count())
                        .where(Analysis.document_id.in_(ids))
                        .group_by(Analysis.section_id)
                    )
                ).all()
            processing = [j for j in jobs if j.kind.startswith("document.")]
            assert len({j.payload["documentId"] for j in processing}) == len(ids)
            assert {(j.state, j.attempts) for j in processing} == {(JobState.SUCCEEDED, 1)}
            assert sorted(count for _, count in sections) == [3] * len(ids)
            assert len(analyses) == 3 * len(ids)
            assert {count for _, count in analyses} == {1}

            # -- a cached answer is invalidated on both API processes by a write on either -----
            fresh, cached = await _cached_call(http, url["a"], admin, digest)
            assert not cached
            again, cached = await _cached_call(http, url["b"], admin, digest)
            assert cached
            assert again == fresh
            some = next(iter(fresh))
            for writer, reader in (("b", "a"), ("a", "b")):
                kind = "REPORT" if writer == "b" else "POLICY"
                body = await gql(api[writer], RETYPE, {"id": some, "type": kind}, token=admin)
                assert body.get("errors") is None, body
                seen, cached = await _cached_call(http, url[reader], admin, digest)
                assert not cached, writer
                assert seen[some] == kind, (writer, seen)
                seen, cached = await _cached_call(http, url[writer], admin, digest)
                assert cached
                assert seen[some] == kind

            # -- the rate limit is one budget over both processes --------------------------
            remaining = []
            for n in range(6):
                response = await http.post(
                    f"{url['ab'[n % 2]]}/graphql",
                    json={"query": "{ viewer { scopes } }"},
                    headers={"authorization": f"Bearer {viewer}"},
                )
                remaining.append(int(response.headers["ratelimit-remaining"]))
            assert remaining == sorted(remaining, reverse=True)
            assert len(set(remaining)) == 6
            refused = None
            for _ in range(RATE_CAPACITY):
                response = await http.post(
                    f"{url['a']}/graphql",
                    json={"query": "{ viewer { scopes } }"},
                    headers={"authorization": f"Bearer {viewer}"},
                )
                if codes(response.json()) == ["RATE_LIMITED"]:
                    refused = response
                    break
            assert refused is not None, "A never refused"
            from_b = await on_b.post(
                "/graphql",
                json={"query": "{ viewer { scopes } }"},
                headers={"authorization": f"Bearer {viewer}"},
            )
            assert codes(from_b.json()) == ["RATE_LIMITED"], from_b.json()

            # -- one scrape sums the processes of the host ----------------------------------
            nowhere = {"id": to_global_id("Document", uuid.uuid4())}
            missing_document = await gql(
                on_b, "query($id: ID!) { document(id: $id) { id } }", nowhere, token=reviewer
            )
            assert codes(missing_document) == ["NOT_FOUND"], missing_document
            for name, count in (("a", 7), ("b", 5)):
                for _ in range(count):
                    assert (await http.get(f"{url[name]}/healthz")).status_code == 200
            scrapes = {name: (await http.get(f"{url[name]}/metrics")).text for name in ("a", "b")}
            scrapes["worker"] = (await http.get(f"http://127.0.0.1:{worker_metrics}/metrics")).text
            runs = {"kind": "document.extract", "outcome": "succeeded"}
            for name, text in scrapes.items():
                assert sample(text, "prism_http_requests_total", HEALTHZ) == 12, name
                assert sample(text, "prism_job_runs_total", runs) >= len(ids), name
                assert sample(text, "prism_rate_limited_total") >= 2, (name, text)
                assert sample(text, "prism_response_cache_lookups_total", {"result": "hit"}) >= 3
            text = scrapes["a"]
            assert sample(text, "prism_extraction_seconds_count", {"kind": "txt"}) >= len(ids)
            assert sample(text, "prism_analysis_seconds_count") >= 3 * len(ids)
            assert "# TYPE prism_jobs gauge" in text  # read from the database at scrape time
            assert "# TYPE prism_job_oldest_seconds gauge" in text
            pool_size = sample(text, "prism_db_pool_connections", {"state": "size"})
            _, sampled = scraped(text)
            # (the queue's figures have no series while no job waits: read at scrape time,
            # declared)
            optional = NOT_IN_EVERY_FLEET - (RELAY_METRICS if kafka is not None else set())
            queue = {"prism_jobs", "prism_job_oldest_seconds"}
            missing = set(named_metrics()) - sampled - optional - queue
            assert not missing, f"the fleet's scrape lacks {missing}"

            # -- an API process and a worker killed: the rest carry on -----------------------
            long_doc = _document_id(await upload(on_a, reviewer, "long.txt", _text(400)))
            holder, analyzed = None, 0
            deadline = time.monotonic() + 60
            while holder is None or analyzed < 20:
                assert time.monotonic() < deadline, (holder, analyzed, fleet.logs_of_all())
                await asyncio.sleep(0.05)
                async with services.db.transaction(tenant.org_id) as session:
                    job = await session.scalar(
                        sa.select(Job).where(
                            Job.kind == "document.analyze",
                            Job.payload["documentId"].astext == str(long_doc),
                            Job.state == JobState.RUNNING,
                        )
                    )
                    analyzed = int(
                        await session.scalar(
                            sa.select(sa.func.count())
                            .select_from(Analysis)
                            .where(Analysis.document_id == long_doc)
                        )
                        or 0
                    )
                holder = job.locked_by if job is not None else None
            pid = int(holder.split(":")[1])
            victim = next(n for n, p in fleet.processes.items() if p.pid == pid)
            survivor = "worker-2" if victim == "worker-1" else "worker-1"
            fleet.processes[victim].send_signal(signal.SIGKILL)
            api_b = fleet.processes["api-b"]
            api_b.send_signal(signal.SIGKILL)
            fleet.processes[victim].wait(timeout=10)
            api_b.wait(timeout=10)
            with_b = sample(scrapes["a"], "prism_http_requests_total")

            # A still serves; B is gone
            body = await gql(on_a, DOCUMENTS, token=admin)
            assert body.get("errors") is None, body
            try:
                await http.get(f"{url['b']}/healthz")
            except httpx.TransportError:
                pass
            else:
                raise AssertionError("the killed API process still answers")
            # the survivor finishes the job once the lease has run out, without duplicates
            await _wait_completed(services, tenant, [long_doc], fleet, within=90)
            assert fleet.processes[survivor].poll() is None
            async with services.db.transaction(tenant.org_id) as session:
                per_section = (
                    await session.execute(
                        sa.select(Analysis.section_id, sa.func.count())
                        .where(Analysis.document_id == long_doc)
                        .group_by(Analysis.section_id)
                    )
                ).all()
                job = await session.scalar(
                    sa.select(Job).where(
                        Job.kind == "document.analyze",
                        Job.payload["documentId"].astext == str(long_doc),
                    )
                )
            assert len(per_section) == 400
            assert {c for _, c in per_section} == {1}
            assert job is not None
            assert job.state is JobState.SUCCEEDED
            assert job.attempts == 2
            assert job.locked_by is None or str(fleet.processes[survivor].pid) in job.locked_by
            # the scrape forgets the dead processes' live gauges and keeps their counters
            after = (await http.get(f"{url['a']}/metrics")).text
            assert sample(after, "prism_http_requests_total") >= with_b
            assert sample(after, "prism_http_requests_total", HEALTHZ) == 12
            assert not list(metrics.glob(f"gauge_livesum_{api_b.pid}.db"))
            assert sample(after, "prism_db_pool_connections", {"state": "size"}) < pool_size
            assert (
                sample(
                    after,
                    "prism_job_runs_total",
                    {"kind": "document.analyze", "outcome": "succeeded"},
                )
                >= len(ids) + 1
            )


async def test_prism_serve_with_two_worker_processes_sums_them_in_every_scrape(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """PRISM_WORKERS=2: `prism serve` makes its own PROMETHEUS_MULTIPROC_DIR (under TMPDIR),
    whichever worker process answers a scrape sums both, and the directory goes at exit."""
    port = _free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    assert settings.jwt_secret is not None
    env |= {
        "PRISM_DATABASE_URL": database_url,
        "PRISM_DATA_DIR": str(settings.data_dir),
        "PRISM_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "PRISM_WORKERS": "2",
        "PRISM_PORT": str(port),
        "PRISM_DATABASE_POOL_SIZE": "3",
        "PRISM_LOG_LEVEL": "WARNING",
        "TMPDIR": str(scratch),
    }
    url = f"http://127.0.0.1:{port}"
    close = {"connection": "close"}  # a new connection each time: either process may answer
    with fleet_of(env, tmp_path) as fleet:
        fleet.start("serve", "serve")
        await fleet.ready("serve", f"{url}/readyz")
        [directory] = list(scratch.glob("prism-metrics-*"))
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(20):
                assert (await http.get(f"{url}/healthz", headers=close)).status_code == 200
            # both processes write their pool figures at start, then every few seconds
            deadline = time.monotonic() + 30
            while True:
                text = (await http.get(f"{url}/metrics", headers=close)).text
                if sample(text, "prism_db_pool_connections", {"state": "size"}) == 6:
                    break
                assert time.monotonic() < deadline, text
                await asyncio.sleep(0.5)
            for _ in range(8):
                text = (await http.get(f"{url}/metrics", headers=close)).text
                assert sample(text, "prism_http_requests_total", HEALTHZ) == 20
                assert sample(text, "prism_db_pool_connections", {"state": "size"}) == 6
        pids = {p.stem.rsplit("_", 1)[-1] for p in directory.glob("*.db")}
        assert len(pids) >= 2, pids
    assert not directory.exists()


def test_a_kept_metrics_directory_loses_only_the_files_of_processes_gone(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    directory = tmp_path / "metrics"
    directory.mkdir()
    mine, theirs = os.getpid(), gone.pid
    for pid in (mine, theirs):
        for kind in ("counter", "histogram", "gauge_livesum", "gauge_mostrecent"):
            (directory / f"{kind}_{pid}.db").write_bytes(b"")
    # a scrape forgets the live gauges of the process gone, and keeps its counters
    assert sweep_dead_processes(str(directory)) == [theirs]
    left = sorted(p.name for p in directory.iterdir() if p.name.endswith(f"_{theirs}.db"))
    assert left == [
        f"counter_{theirs}.db",
        f"gauge_mostrecent_{theirs}.db",
        f"histogram_{theirs}.db",
    ]
    # a server starting deletes every file of processes gone, and keeps the running ones'
    assert clean_multiprocess_dir(str(directory)) == 3
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        f"{kind}_{mine}.db"
        for kind in ("counter", "histogram", "gauge_livesum", "gauge_mostrecent")
    )
