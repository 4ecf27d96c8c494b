"""Traces (decision 0034): `prism serve` and `prism worker` export OpenTelemetry spans over
OTLP/HTTP to a real receiver run here (protobuf decoded with opentelemetry-proto), and an
upload's trace holds its HTTP span, its GraphQL operation, its SQL, Redis and S3 calls, and
the extraction and analysis jobs the worker ran for it (children of the request's spans), the
index job's OpenSearch calls and the relay's Kafka sends; the worker's log lines carry the
upload's trace id and request id. Off (no OTEL endpoint), no tracer, exporter or
instrumentation is even imported.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from prism import bootstrap, tracing
from prism.config import Settings
from prism.db import migrations
from prism.models.enums import Role
from tests.conftest import NewDatabase, RedisServer
from tests.factories import CONTRACT, Tenant, gql, make_tenant
from tests.otlp import CLIENT, CONSUMER, PRODUCER, SERVER, Receiver, Span, receiving
from tests.pipeline_helpers import upload
from tests.test_storage import bucket, s3_endpoint  # noqa: F401 - fixtures

PRISM = [sys.executable, "-m", "prism.cli"]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with receiving() as found:
        yield found


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([*PRISM, *args], env=env, stdout=out, stderr=out)


def test_tracing_is_wanted_only_with_an_otlp_endpoint() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )


def test_off_without_an_endpoint_nothing_of_opentelemetry_is_loaded(
    database_url: str, settings: Settings
) -> None:
    """The app built (schema, middleware) and a job's context taken, with no OTEL endpoint:
    no tracer, exporter or instrumentation in the process, and no traceparent anywhere."""
    script = (
        "import sys\n"
        "from prism.web.app import create_app\n"
        "from prism import tracing\n"
        "app = create_app(database_url=sys.argv[1])\n"
        "assert not tracing.ENABLED\n"
        "assert tracing.carried() == {}\n"
        "assert tracing.current_traceparent() is None\n"
        # redis-py imports parts of the API for its own (opt-in) metrics: what matters is
        # that no tracer, exporter or instrumentation is loaded, and asyncpg is untouched.
        "loaded = sorted(m for m in sys.modules if m.startswith(("
        "'opentelemetry.sdk.trace', 'opentelemetry.exporter', 'opentelemetry.instrumentation')))\n"
        "assert not loaded, loaded\n"
        "import asyncpg.connection\n"
        "assert not hasattr(asyncpg.connection.Connection.execute, '__wrapped__')\n"
        "print('off')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PRISM_"))}
    env.update(PRISM_DATA_DIR=str(settings.data_dir), PRISM_LOG_LEVEL="WARNING")
    done = subprocess.run(
        [sys.executable, "-c", script, database_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "off"


async def _wait_ready(port: int, processes: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        while time.monotonic() < deadline:
            for name, process in processes.items():
                assert process.poll() is None, (logs / f"{name}.log").read_text()[-3000:]
            try:
                if (await client.get("/readyz", timeout=2)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise AssertionError("prism serve did not become ready")


def _ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    chain = []
    current = by_id.get(span.parent_id)
    while current is not None and len(chain) < 100:
        chain.append(current)
        current = by_id.get(current.parent_id)
    return chain


async def test_an_uploads_trace_holds_its_request_its_jobs_and_their_calls(
    receiver: tuple[Receiver, str],
    settings: Settings,
    new_database: NewDatabase,
    redis_server: RedisServer,
    s3_endpoint: str,  # noqa: F811 - the fixture imported above
    bucket: str,  # noqa: F811
    opensearch_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    spans, endpoint = receiver
    # A database of its own: the worker's relay registers the `kafka` consumer, which would
    # otherwise hold every other test's events from being pruned (and publish them).
    database_url = await new_database()
    await asyncio.to_thread(migrations.upgrade, database_url)
    own = settings.model_copy(update={"database_url": SecretStr(database_url)})
    services = bootstrap.build_services(own, database_url)
    try:
        tenant: Tenant = await make_tenant(services)
    finally:
        await services.close()
    port = _free_port()
    alias = f"prism-test-otel-{uuid.uuid4().hex[:8]}"
    topics = f"otel-{uuid.uuid4().hex[:8]}."
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PRISM_"))}
    env.update(
        PYTHONWARNINGS="ignore",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_TRACES_SAMPLER="parentbased_always_on",
        OTEL_BSP_SCHEDULE_DELAY="100",
        PRISM_LOG_LEVEL="INFO",
        PRISM_JWT_SECRET=settings.jwt_secret.get_secret_value() if settings.jwt_secret else "",
        PRISM_DATABASE_URL=database_url,
        PRISM_DATA_DIR=str(settings.data_dir),
        PRISM_PORT=str(port),
        PRISM_LIFECYCLE_INTERVAL_HOURS="0",
        PRISM_REDIS_URL=redis_server.url,
        PRISM_S3_BUCKET=bucket,
        PRISM_S3_ENDPOINT_URL=s3_endpoint,
        PRISM_S3_PREFIX=f"otel-{uuid.uuid4().hex[:8]}/",
        PRISM_OPENSEARCH_URL=opensearch_url,
        PRISM_OPENSEARCH_INDEX=alias,
        PRISM_OPENSEARCH_REPLICAS="0",
        PRISM_KAFKA_BOOTSTRAP=kafka_bootstrap,
        PRISM_KAFKA_TOPIC_PREFIX=topics,
        PRISM_EVENTS_SNAPSHOT_SECONDS="0",
    )
    processes = {
        name: _start(args, env, tmp_path / f"{name}.log")
        for name, args in (("serve", ["serve"]), ("worker", ["worker"]))
    }
    # The client's own trace context: the upload's HTTP span continues it.
    trace_id, client_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    try:
        await _wait_ready(port, processes, tmp_path)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answer = await upload(
                client,
                tenant.tokens[Role.ADMIN],
                "contract.txt",
                CONTRACT.encode(),
                content_type="text/plain",
                headers={
                    "apollo-require-preflight": "true",
                    "traceparent": f"00-{trace_id}-{client_span}-01",
                },
            )
            assert answer.status_code == 200, answer.text
            request_id = answer.headers["x-request-id"]
            document = answer.json()["data"]["uploadDocument"]["document"]["id"]
            deadline = time.monotonic() + 180
            status = None
            while time.monotonic() < deadline:
                body = await gql(
                    client,
                    "query($id: ID!) { document(id: $id) { processingStatus } }",
                    {"id": document},
                    token=tenant.tokens[Role.ADMIN],
                )
                status = body["data"]["document"]["processingStatus"]
                if status in ("COMPLETED", "FAILED"):
                    break
                await asyncio.sleep(0.5)
            assert status == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]

        # then, once the processes' batches are exported, the upload's trace holds it all
        wanted = {"job document.extract", "job document.analyze", "job search.index"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = spans.of_trace(trace_id)
            names = {s.name for s in found}
            if wanted <= names and any(s.kind == PRODUCER for s in found):
                break
            await asyncio.sleep(0.3)
        found = spans.of_trace(trace_id)
        by_id = {s.span_id: s for s in found}
        summary = sorted({(s.service, s.name) for s in found})

        http = [s for s in found if s.kind == SERVER and s.service == "prism-api"]
        assert len(http) == 1, summary
        (request,) = http
        assert request.parent_id == client_span
        assert request.attributes.get("prism.request_id") == request_id
        operation = next(s for s in found if s.name == "mutation" or s.name.startswith("mutation"))
        assert request in _ancestors(operation, by_id)
        assert operation.attributes["graphql.operation.type"] == "mutation"

        def under(span: Span, ancestor: Span) -> bool:
            return ancestor in _ancestors(span, by_id)

        # the request's own calls: SQL, Redis (rate limits), S3 (the original stored)
        api_calls = [s for s in found if s.service == "prism-api" and under(s, operation)]
        assert any(s.attributes.get("db.system") == "postgresql" for s in api_calls), summary
        assert any(s.attributes.get("db.system") == "redis" for s in api_calls), summary
        assert any(s.name == "s3.PutObject" for s in api_calls), summary

        # the jobs: extraction a child of the request, analysis and indexing of extraction
        extract = next(s for s in found if s.name == "job document.extract")
        analyze = next(s for s in found if s.name == "job document.analyze")
        index = next(s for s in found if s.name == "job search.index")
        assert extract.service == analyze.service == "prism-worker"
        assert extract.kind == CONSUMER
        assert under(extract, operation)
        assert under(extract, request)
        assert under(analyze, extract)
        assert under(analyze, request)
        assert under(index, request)
        worker_calls = [s for s in found if s.service == "prism-worker"]
        assert any(s.name == "s3.GetObject" and under(s, extract) for s in worker_calls), summary
        assert any(
            s.attributes.get("db.system") == "postgresql" and under(s, analyze)
            for s in worker_calls
        ), summary
        # OpenSearch's client (aiohttp) called from the index job
        search_port = str(urlsplit(opensearch_url).port)
        assert any(
            s.kind == CLIENT
            and under(s, index)
            and search_port in orjson.dumps(s.attributes).decode()
            for s in worker_calls
        ), summary
        # the relay's send of the upload's event, in the trace of the change that wrote it
        assert any(s.kind == PRODUCER and s.service == "prism-worker" for s in found), summary

        # the outbox event carries the trace (CloudEvents distributed-tracing extension)
        conn = await asyncpg.connect(
            make_url(database_url).set(drivername="postgresql").render_as_string(False)
        )
        try:
            parents = await conn.fetch(
                "SELECT event->>'traceparent' FROM outbox_events WHERE organization_id = $1 "
                "AND type = 'prism.document.uploaded'",
                tenant.org_id,
            )
        finally:
            await conn.close()
        assert [p[0].split("-")[1] for p in parents] == [trace_id]

        # the worker's log lines of the jobs name the upload's trace and request
        lines = [
            orjson.loads(line)
            for line in (tmp_path / "worker.log").read_text().splitlines()
            if line.startswith("{")
        ]
        succeeded = [
            line
            for line in lines
            if line.get("event") == "job succeeded" and line.get("trace_id") == trace_id
        ]
        assert {line["kind"] for line in succeeded} >= {"document.extract", "document.analyze"}
        assert all(line.get("request_id") == request_id for line in succeeded)
        access = [
            orjson.loads(line)
            for line in (tmp_path / "serve.log").read_text().splitlines()
            if line.startswith("{") and '"request"' in line
        ]
        assert any(
            a.get("request_id") == request_id and a.get("trace_id") == trace_id for a in access
        )
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with httpx.Client() as http:
            http.delete(f"{opensearch_url}/{alias}-*", params={"ignore_unavailable": "true"})
