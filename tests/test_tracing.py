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
    printed = _python(
        script, database_url, PRISM_DATA_DIR=str(settings.data_dir), PRISM_LOG_LEVEL="WARNING"
    )
    assert printed.strip() == "off"


def _python(script: str, *args: str, **env: str) -> str:
    """What ``script`` printed, run by another interpreter with ``args``, in this environment
    without its ``OTEL_*`` and ``PRISM_*`` variables but with ``env`` (tracing is set up once
    per process)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PRISM_"))}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


_SAMPLING = """
import sys
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from prism import tracing

assert tracing.configure("prism-sampling")
limit, bound = TraceIdRatioBased.TRACE_ID_LIMIT, TraceIdRatioBased(0.5).bound


def scope(path="/graphql", headers=()):
    return {"type": "http", "method": "POST", "path": path, "headers": list(headers),
            "client": ("10.0.0.1", 1), "scheme": "http"}


sampled_ids = []
for i in range(400):
    entered = tracing.enter_request(scope(), "/graphql", f"request-{i}")
    _, trace_id, _, flags = tracing.current_traceparent().split("-")
    sampled = entered.span is not None
    # decided on the trace id the request's trace then has, and said so to what it queues
    assert sampled == bool(int(flags, 16) & 1) == ((int(trace_id, 16) & limit) < bound), flags
    with tracing.resumed(tracing.current_traceparent()):  # the relay, sending its event
        resumed = tracing._trace.get_current_span().get_span_context()
        assert resumed.trace_flags.sampled == sampled
        assert tracing._context.get_value(tracing._SUPPRESS) is (not sampled)
    assert tracing.carried()["traceparent"].split("-")[1] == trace_id
    assert tracing._trace_ids(None, "info", {})["trace_id"] == trace_id
    if sampled:
        sampled_ids.append(trace_id)
    entered.answered(200)
    entered.close()
    assert tracing.current_traceparent() is None
assert 120 < len(sampled_ids) < 280, len(sampled_ids)
for flags in ("01", "00"):  # a caller's decision is followed, in its trace
    caller = "ab" * 16
    header = (b"traceparent", f"00-{caller}-{'cd' * 8}-{flags}".encode())
    entered = tracing.enter_request(scope(headers=[header]), "/graphql", "called")
    assert (entered.span is not None) == (flags == "01")
    assert tracing.current_traceparent().split("-")[1] == caller
    assert tracing.current_traceparent().endswith("-" + flags)
    entered.close()
failing = (b"traceparent", f"00-{'ef' * 16}-{'cd' * 8}-01".encode())
entered = tracing.enter_request(scope(headers=[failing]), "/graphql", "failing")
entered.failed(RuntimeError("jane.doe@example.com"))
entered.close()
probe = tracing.enter_request(scope("/healthz"), "/healthz", "probe")
assert probe.span is None and tracing.current_traceparent() is None
probe.close()
print(" ".join(sampled_ids))
"""


def test_a_request_is_sampled_on_its_own_trace_id_and_its_work_follows(
    receiver: tuple[Receiver, str],
) -> None:
    """With ``parentbased_traceidratio`` at 0.5: each request is sampled on the trace id its
    trace then has (the ratio's rule holds for every exported trace, and for no dropped
    one), what a dropped request queues carries its trace id, not sampled, a caller's
    traceparent is followed either way, and probes are not traced; exactly the sampled
    requests' spans are exported."""
    spans, endpoint = receiver
    printed = _python(
        _SAMPLING,
        PYTHONWARNINGS="ignore",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.5",
    )
    sampled = set(printed.split())
    exported = [s for s in spans.spans if s.service == "prism-sampling"]
    assert {s.trace_id for s in exported} == sampled | {"ab" * 16, "ef" * 16}
    assert all(s.kind == SERVER and s.name == "POST /graphql" for s in exported)
    assert len(exported) == len(sampled) + 2
    # a failed request: its error's type, not its text or stack
    (failed,) = [s for s in exported if s.trace_id == "ef" * 16]
    assert failed.attributes["error.type"] == "RuntimeError"
    assert "jane" not in orjson.dumps([failed.attributes, failed.events]).decode()
    assert not any("client.address" in s.attributes for s in exported)


def test_the_sampling_shortcut_decides_as_the_sampler_does() -> None:
    """Where the configured sampler decides a root span on its trace id alone, the request's
    decision is that comparison, made without the sampler's machinery: the same decision
    for every trace id; any other sampler is asked."""
    import random

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_OFF,
        ALWAYS_ON,
        DEFAULT_ON,
        ParentBased,
        ParentBasedTraceIdRatio,
        TraceIdRatioBased,
    )
    from opentelemetry.trace import SpanKind

    for sampler in (
        TraceIdRatioBased(0.25),
        ParentBasedTraceIdRatio(0.5),
        ParentBased(TraceIdRatioBased(0.01)),
        TraceIdRatioBased(0.0),
        TraceIdRatioBased(1.0),
    ):
        decide = tracing._by_trace_id(sampler)
        assert decide is not None, sampler
        for _ in range(5000):
            trace_id = random.getrandbits(128)
            asked = sampler.should_sample(Context(), trace_id, "POST /graphql", SpanKind.SERVER)
            assert decide(trace_id) == asked.decision.is_sampled(), sampler
    for other in (ALWAYS_ON, ALWAYS_OFF, DEFAULT_ON, ParentBased(ALWAYS_OFF)):
        assert tracing._by_trace_id(other) is None


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

        # a planned read (the lean path): its HTTP span names the operation, and its one
        # statement is a child span with the stable database conventions
        read_trace, read_parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            read = await client.post(
                "/graphql",
                json={
                    "query": "query Opened($id: ID!) { document(id: $id) { id filename } }",
                    "variables": {"id": document},
                },
                headers={
                    "authorization": f"Bearer {tenant.tokens[Role.REVIEWER]}",
                    "traceparent": f"00-{read_trace}-{read_parent}-01",
                },
            )
        assert read.json()["extensions"]["execution"]["path"] == "compiled", read.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            planned = spans.of_trace(read_trace)
            if len(planned) >= 2:
                break
            await asyncio.sleep(0.2)
        (read_http,) = [s for s in planned if s.kind == SERVER]
        assert read_http.name == "POST /graphql"
        assert read_http.parent_id == read_parent
        assert read_http.attributes["graphql.operation.type"] == "query"
        assert read_http.attributes["graphql.operation.name"] == "Opened"
        assert read_http.attributes["http.route"] == "/graphql"
        assert read_http.attributes["http.response.status_code"] == 200
        assert "client.address" not in read_http.attributes  # personal data: not recorded
        # (beside it: its rate limit and response cache in Redis, and the token's first
        # verification, a transaction of its own)
        (statement,) = [s for s in planned if s.attributes.get("db.system.name") == "postgresql"]
        assert statement.kind == CLIENT
        assert statement.parent_id == read_http.span_id
        assert statement.name == "SELECT"
        assert statement.attributes["db.namespace"] == make_url(database_url).database
        assert statement.attributes["db.query.text"].startswith("SELECT CASE WHEN")
        assert "$1" in statement.attributes["db.query.text"]  # its values are not in it
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
