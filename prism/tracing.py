"""Traces over OpenTelemetry, off unless an OTLP endpoint is configured (decision 0034).

``configure(service)`` sets the SDK up from the standard ``OTEL_*`` variables when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and
``OTEL_SDK_DISABLED`` is not ``true``: a tracer provider (sampler from ``OTEL_TRACES_SAMPLER``
and ``OTEL_TRACES_SAMPLER_ARG``, resource from ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``), a batch processor (``OTEL_BSP_*``) and the OTLP/HTTP exporter
(``OTEL_EXPORTER_OTLP_*``), and the maintained instrumentations of the clients Prism uses:
asyncpg (every SQL statement, the ORM's and the planner's), Redis, aiohttp (OpenSearch's
client), aiokafka (the relay's sends); S3 and Bedrock calls (aiobotocore, which no maintained
instrumentation covers) get a client span here. The HTTP span is ``ServerSpan``'s; the
GraphQL operation's span is ``operation_span``'s.

Unset, nothing of the SDK is imported or set up: ``ENABLED`` stays False and every helper
here returns at its first line, so the request path pays one global read.

The trace context travels with the work a request causes: ``carried()`` is what a job's
payload and an outbox event keep of it (the W3C ``traceparent``, and the request id), and a
job runs in ``job_span``, a child of the span that queued it, so a document's extraction and
analysis join its upload's trace. Log lines carry ``trace_id`` and ``span_id``
(``log_processors``). Imports nothing of Prism's, so any layer may use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

ENABLED = False
TRACEPARENT = "traceparent"
REQUEST_ID = "requestId"
# Never traced: the platform's probes and scrapes (a span each, every few seconds, of nothing).
_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})

_tracer: Tracer | None = None
_NOTHING = contextlib.nullcontext()
# Set by configure: OpenTelemetry's context and trace API, and the context key that makes the
# client instrumentations return at their first line (suppress_instrumentation's).
_context: Any = None
_trace: Any = None
_SUPPRESS: Any = None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, the SDK not disabled, and
    the traces exporter not ``none``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def configure(service: str) -> bool:
    """Set tracing up for this process if the environment asks for it (once; later calls
    change nothing). ``service`` is the default ``service.name`` (``OTEL_SERVICE_NAME`` or
    ``OTEL_RESOURCE_ATTRIBUTES`` win). Whether traces are on."""
    global ENABLED, _tracer, _context, _trace, _SUPPRESS
    if ENABLED or not wanted():
        return ENABLED
    from opentelemetry import context, trace
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    detected = OTELResourceDetector().detect()
    defaults = {} if "service.name" in detected.attributes else {"service.name": service}
    # The sampler the environment names (OTEL_TRACES_SAMPLER; the SDK's default otherwise),
    # held to traces that start where work enters Prism (see _entries_only).
    configured = TracerProvider(shutdown_on_exit=False).sampler
    provider = TracerProvider(resource=Resource.create(defaults), sampler=_entries_only(configured))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument()
    AioHttpClientInstrumentor().instrument()
    AIOKafkaInstrumentor().instrument()
    _instrument_aiobotocore()
    _tracer = trace.get_tracer("prism")
    _context, _trace, _SUPPRESS = context, trace, _SUPPRESS_INSTRUMENTATION_KEY
    ENABLED = True
    return True


def _entries_only(sampler: Any) -> Any:
    """``sampler``, but a span with no parent is sampled only where work enters Prism (an
    HTTP request, a job, a GraphQL operation): a SQL statement, Redis command or AWS call
    made outside any of them (the worker polling for jobs, a metrics scrape) is dropped
    rather than made a trace of its own."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind, get_current_span

    class EntriesOnly(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> Any:
            if kind in (SpanKind.CLIENT, SpanKind.PRODUCER) and not (
                get_current_span(parent_context).get_span_context().is_valid
            ):
                return SamplingResult(Decision.DROP)
            return sampler.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"EntriesOnly{{{sampler.get_description()}}}"

    return EntriesOnly()


def asgi_middleware(name_of: Callable[[str, str], str]) -> list[tuple[Any, dict[str, Any]]]:
    """The ASGI middleware (class and options) that puts each request in its HTTP server
    span, named by ``name_of(method, path)`` (a route template: few names); none when
    tracing is off."""
    if not ENABLED:
        return []
    return [(ServerSpan, {"name_of": name_of})]


class ServerSpan:
    """ASGI: the HTTP server span of a request (a WebSocket's: of its whole connection),
    continuing the W3C trace context of its ``traceparent`` header, with the stable HTTP
    semantic conventions' attributes and the answer's status.

    The sampler decides first, from the span's name and parent alone: a request it does not
    sample only carries its (unsampled) context on, so what it queues stays unsampled too,
    and runs with the client instrumentations suppressed (its SQL, Redis and AWS calls cost
    one context lookup each). That is why this is not opentelemetry-instrumentation-asgi's
    middleware, which reads every header and builds every attribute of every request before
    sampling (about 50 µs a request here; decision 0034). Probes and scrapes are not traced."""

    def __init__(self, app: Any, name_of: Callable[[str, str], str]) -> None:
        from opentelemetry.propagate import get_global_textmap

        self.app = app
        self.name_of = name_of
        self.propagator = get_global_textmap()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        path = scope.get("path", "")
        if kind not in ("http", "websocket") or path in _UNTRACED:
            token = _context.attach(_context.set_value(_SUPPRESS, True))
            try:
                await self.app(scope, receive, send)
            finally:
                _context.detach(token)
            return
        carrier = {}
        for key, value in scope.get("headers") or ():
            if key in (b"traceparent", b"tracestate"):
                carrier[key.decode()] = value.decode("latin-1")
        parent = self.propagator.extract(carrier) if carrier else None
        method = scope.get("method", "GET")
        assert _tracer is not None
        span = _tracer.start_span(
            self.name_of(method, path), context=parent, kind=_trace.SpanKind.SERVER
        )
        recording = span.is_recording()
        within = _trace.set_span_in_context(span, parent)
        token = _context.attach(_context.set_value(_SUPPRESS, not recording, within))
        if not recording:
            try:
                await self.app(scope, receive, send)
            finally:
                _context.detach(token)
            return
        client = scope.get("client")
        server = scope.get("server")
        span.set_attributes(
            {
                "http.request.method": method,
                "url.path": path,
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
                **({"client.address": client[0]} if client else {}),
                **({"server.address": server[0], "server.port": server[1]} if server else {}),
            }
        )
        for key, value in scope.get("headers") or ():
            if key == b"user-agent":
                span.set_attribute("user_agent.original", value.decode("latin-1")[:256])

        async def answered(message: Any) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(_trace.Status(_trace.StatusCode.ERROR))
                    span.set_attribute("error.type", str(status))
            await send(message)

        try:
            await self.app(scope, receive, answered)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            _context.detach(token)
            span.end()


def tag_request(request_id: str) -> None:
    """The request id on the current (HTTP) span, so a trace finds its log lines."""
    if not ENABLED:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("prism.request_id", request_id)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (None: tracing off, or no span)."""
    if not ENABLED:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def carried() -> dict[str, str]:
    """What a job's payload keeps of the request that queued it: its ``traceparent`` (when
    traced) and its request id (when there is one), so the job's spans join the request's
    trace and its log lines name the request."""
    found: dict[str, str] = {}
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if isinstance(request_id, str):
        found[REQUEST_ID] = request_id
    parent = current_traceparent()
    if parent is not None:
        found[TRACEPARENT] = parent
    return found


@contextlib.contextmanager
def _span_under(
    name: str, traceparent: str | None, kind: str, attributes: Mapping[str, Any]
) -> Iterator[Span]:
    """A span (a child of ``traceparent``'s when given, else of the current one); inside it
    the client instrumentations run only if it is recorded (sampled)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    assert _tracer is not None
    parent = (
        TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent}) if traceparent else None
    )
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=getattr(_trace.SpanKind, kind),
        attributes=dict(attributes),
    ) as span:
        token = _context.attach(_context.set_value(_SUPPRESS, not span.is_recording()))
        try:
            yield span
        finally:
            _context.detach(token)


def job_span(
    kind: str, payload: Mapping[str, Any], attributes: Mapping[str, Any]
) -> contextlib.AbstractContextManager[Any]:
    """The span a job runs in: a child of the span that queued it (``payload``'s
    ``traceparent``), or a new trace for a job nothing traced queued (a schedule)."""
    if not ENABLED:
        return _NOTHING
    parent = payload.get(TRACEPARENT)
    return _span_under(
        f"job {kind}",
        parent if isinstance(parent, str) else None,
        "CONSUMER",
        {"prism.job.kind": kind, **attributes},
    )


def resumed(traceparent: object) -> contextlib.AbstractContextManager[Any]:
    """Work done for an event stored with ``traceparent`` (the relay sending it): the current
    context becomes that span's, so what is done inside (the Kafka send's span) joins the
    trace of the change that wrote the event."""
    if not ENABLED or not isinstance(traceparent, str):
        return _NOTHING
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    @contextlib.contextmanager
    def attached() -> Iterator[None]:
        extracted = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
        sampled = traceparent.endswith("-01")
        token = _context.attach(_context.set_value(_SUPPRESS, not sampled, extracted))
        try:
            yield
        finally:
            _context.detach(token)

    return attached()


def operation_span(operation_type: str, name: str | None) -> contextlib.AbstractContextManager[Any]:
    """One span per GraphQL operation (``query DocumentList``), with its type and name; its
    SQL, Redis and OpenSearch spans are its children. The document itself is not recorded
    (its literals may be personal data)."""
    if not ENABLED or not _trace.get_current_span().is_recording():
        return _NOTHING
    attributes = {"graphql.operation.type": operation_type}
    if name:
        attributes["graphql.operation.name"] = name
    return _span_under(
        f"{operation_type} {name}" if name else operation_type, None, "INTERNAL", attributes
    )


def name_operation(span: Any, operation_type: str, name: str | None) -> None:
    """An operation span's name and attributes once the document is parsed (the full path
    opens the span before it knows what the operation is)."""
    if span is None or not span.is_recording():
        return
    span.update_name(f"{operation_type} {name}" if name else operation_type)
    span.set_attribute("graphql.operation.type", operation_type)
    if name:
        span.set_attribute("graphql.operation.name", name)


def log_processors() -> list[structlog.typing.Processor]:
    """The log processor that adds ``trace_id`` and ``span_id`` to every line written inside
    a span (none when tracing is off: the line costs nothing more)."""
    if not ENABLED:
        return []
    return [_trace_ids]


def _trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = f"{context.trace_id:032x}"
        event["span_id"] = f"{context.span_id:016x}"
    return event


def _instrument_aiobotocore() -> None:
    """A client span for every AWS call made through aiobotocore (S3, Bedrock, KMS): the
    maintained botocore instrumentation wraps the synchronous client, which aiobotocore's
    client overrides."""
    try:
        from aiobotocore.client import AioBaseClient
    except ImportError:  # pragma: no cover - aioboto3 is a dependency
        return
    from opentelemetry import trace

    original = AioBaseClient._make_api_call
    if getattr(original, "_prism_traced", False):
        return
    tracer = trace.get_tracer("prism.aws")

    async def traced(self: Any, operation_name: str, api_params: Any) -> Any:
        if _context.get_value(_SUPPRESS):
            return await original(self, operation_name, api_params)
        service = self.meta.service_model.service_id.hyphenize()
        attributes: dict[str, Any] = {
            "rpc.system": "aws-api",
            "rpc.service": service,
            "rpc.method": operation_name,
            "cloud.region": self.meta.region_name or "",
        }
        bucket = api_params.get("Bucket") if isinstance(api_params, dict) else None
        if isinstance(bucket, str):
            attributes["aws.s3.bucket"] = bucket
        with tracer.start_as_current_span(
            f"{service}.{operation_name}", kind=trace.SpanKind.CLIENT, attributes=attributes
        ):
            return await original(self, operation_name, api_params)

    traced._prism_traced = True  # type: ignore[attr-defined]
    AioBaseClient._make_api_call = traced


def failed(span: Any, error: BaseException) -> None:
    """A job's span marked failed, with the error's type (its text stays in the logs)."""
    if span is None or not ENABLED or not span.is_recording():
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.set_attribute("error.type", type(error).__qualname__)
