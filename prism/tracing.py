"""Traces over OpenTelemetry, off unless an OTLP endpoint is configured (decision 0034).

``configure(service)`` sets the SDK up from the standard ``OTEL_*`` variables when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and
``OTEL_SDK_DISABLED`` is not ``true``: a tracer provider (sampler from ``OTEL_TRACES_SAMPLER``
and ``OTEL_TRACES_SAMPLER_ARG``, resource from ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``), a batch processor (``OTEL_BSP_*``) and the OTLP/HTTP exporter
(``OTEL_EXPORTER_OTLP_*``), and the maintained instrumentations of the clients Prism uses:
asyncpg (every SQL statement, the ORM's and the planner's), Redis, aiohttp (OpenSearch's
client), aiokafka (the relay's sends); S3 and Bedrock calls (aiobotocore, which no maintained
instrumentation covers) get a client span here. The HTTP span is ``enter_request``'s; the
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
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

_Method = TypeVar("_Method", bound=Callable[..., Any])

ENABLED = False
TRACEPARENT = "traceparent"
REQUEST_ID = "requestId"
# Never traced: the platform's probes and scrapes (a span each, every few seconds, of nothing).
_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})

_tracer: Tracer | None = None
_NOTHING = contextlib.nullcontext()
# Set by configure: OpenTelemetry's context and trace API; the context key that makes the
# client instrumentations return at their first line (suppress_instrumentation's); the key
# under which a request the sampler dropped keeps the trace id it was decided on; the
# provider's sampler and id generator; the empty context a request without a parent is
# sampled in, and that context with the instrumentations quiet; the W3C propagator.
_context: Any = None
_trace: Any = None
_SUPPRESS: Any = None
_UNSAMPLED: Any = None
_sampler: Any = None
_ids: Any = None
_ROOT: Any = None
_QUIET: Any = None
_propagator: Any = None
_root_sampled: Callable[[int], bool] | None = None
_CONTEXT_HEADERS = frozenset({b"traceparent", b"tracestate"})


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
    global ENABLED, _tracer, _context, _trace, _SUPPRESS, _UNSAMPLED, _sampler, _ids, _ROOT
    global _propagator, _QUIET, _root_sampled
    if ENABLED or not wanted():
        return ENABLED
    from opentelemetry import context, trace
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.propagate import get_global_textmap
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    detected = OTELResourceDetector().detect()
    defaults = {} if "service.name" in detected.attributes else {"service.name": service}
    # The sampler the environment names (OTEL_TRACES_SAMPLER; the SDK's default otherwise),
    # held to traces that start where work enters Prism (see _entries_only).
    configured = TracerProvider(shutdown_on_exit=False).sampler
    sampler, ids = _entries_only(configured), _drawn_ids()
    provider = TracerProvider(
        resource=_hashed_once(Resource.create(defaults)), sampler=sampler, id_generator=ids
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument()
    AioHttpClientInstrumentor().instrument()
    AIOKafkaInstrumentor().instrument()
    _instrument_aiobotocore()
    _tracer = trace.get_tracer("prism")
    _context, _trace, _SUPPRESS = context, trace, _SUPPRESS_INSTRUMENTATION_KEY
    _UNSAMPLED = context.create_key("prism-unsampled")
    _sampler, _ids, _ROOT = sampler, ids, context.Context()
    _root_sampled = _by_trace_id(configured)
    _QUIET = context.set_value(_SUPPRESS, True, _ROOT)
    _propagator = get_global_textmap()
    ENABLED = True
    return True


def _hashed_once(resource: Any) -> Any:
    """``resource``, whose hash is computed once: the OTLP encoder groups every span of a
    batch by its resource, and the SDK's ``Resource.__hash__`` serialises all its attributes
    to JSON each time (a resource never changes once made)."""
    from opentelemetry.sdk.resources import Resource

    class HashedOnce(Resource):
        def __init__(self, attributes: Any, schema_url: str | None) -> None:
            super().__init__(attributes, schema_url)
            self._hash = super().__hash__()

        def __hash__(self) -> int:
            return self._hash

    return HashedOnce(resource.attributes, resource.schema_url)


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


def _drawn_ids() -> Any:
    """The SDK's random ids, except that a trace id handed over (``hand_over``) is the next
    one given out in this thread: the HTTP span's sampling is decided on a trace id drawn
    before anything of the SDK's is built, and the span then gets that id
    (``enter_request``)."""
    import threading

    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class DrawnIds(RandomIdGenerator):
        def __init__(self) -> None:
            self.ahead = threading.local()

        def draw(self) -> int:
            """A new trace id (not handed over)."""
            return super().generate_trace_id()

        def hand_over(self, trace_id: int) -> None:
            """``trace_id`` is the next one this thread's ``generate_trace_id`` gives out."""
            self.ahead.trace_id = trace_id

        def generate_trace_id(self) -> int:
            trace_id: int | None = getattr(self.ahead, "trace_id", None)
            if trace_id is None:
                return super().generate_trace_id()
            self.ahead.trace_id = None
            return trace_id

    return DrawnIds()


def _by_trace_id(sampler: Any) -> Callable[[int], bool] | None:
    """What ``sampler`` decides for a SERVER span without a parent, as a function of the
    trace id alone, when that is all it looks at (a trace-id ratio, alone or as the root of
    ``parentbased_*``): the comparison it makes, without building its parent's context and
    result first. None for any other sampler (``enter_request`` asks it). Tested equal to
    asking it."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    root = getattr(sampler, "_root", None) if isinstance(sampler, ParentBased) else sampler
    if type(root) is not TraceIdRatioBased:
        return None
    limit, bound = TraceIdRatioBased.TRACE_ID_LIMIT, root.bound

    def sampled(trace_id: int) -> bool:
        return trace_id & limit < bound

    return sampled


class Entered:
    """A request (or WebSocket connection) entered by ``enter_request``: its HTTP server span
    when the sampler took it (``span``), else only the quiet context it runs in. ``close``
    once it is over."""

    __slots__ = ("span", "token")

    def __init__(self, span: Any, context: Any) -> None:
        self.span = span
        self.token = _context.attach(context)

    def answered(self, status: int) -> None:
        """The answer's status on the span (a 5xx marks it failed)."""
        if self.span is None:
            return
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(_trace.Status(_trace.StatusCode.ERROR))
            self.span.set_attribute("error.type", str(status))

    def failed(self, error: BaseException) -> None:
        """The request ended by ``error``: the span marked failed with its type (its text
        and stack, which may hold personal data, stay in the logs)."""
        failed(self.span, error)

    def close(self) -> None:
        _context.detach(self.token)
        if self.span is not None:
            self.span.end()


def enter_request(scope: Any, route: str, request_id: str) -> Entered:
    """Enter a request (``scope``, an ASGI HTTP or WebSocket scope, whose route template is
    ``route``): its HTTP server span, continuing the W3C trace context of its
    ``traceparent`` header, named ``POST /graphql``, with the stable HTTP semantic
    conventions' attributes and ``prism.request_id``. Tracing must be on.

    The sampler decides first, on the span's name and parent alone and, with no parent, on the
    trace id the span would get (drawn ahead): a request it drops costs that decision and a
    context that says "not sampled", in which the client instrumentations are quiet (a SQL
    statement or Redis command costs one context lookup) and what the request queues is
    given a traceparent that is not sampled either (``current_traceparent``). Nothing of the
    SDK's is built for it. That is why this is not opentelemetry-instrumentation-asgi's
    middleware, which reads every header and builds every attribute of every request before
    sampling (decision 0034). Probes and scrapes are not traced."""
    path = scope.get("path", "")
    if path in _UNTRACED:
        return Entered(None, _QUIET)
    carrier: dict[str, str] = {}
    headers = scope.get("headers") or ()
    for key, value in headers:
        if key in _CONTEXT_HEADERS:
            carrier[key.decode()] = value.decode("latin-1")
    method = scope.get("method", "GET")
    if carrier:
        parent = _propagator.extract(carrier)
    else:
        parent = _ROOT
        trace_id = _ids.draw()
        if _root_sampled is not None:
            recording = _root_sampled(trace_id)
        else:
            decided = _sampler.should_sample(
                parent, trace_id, f"{method} {route}", _trace.SpanKind.SERVER
            )
            recording = decided.decision.is_recording()
        if not recording:
            return Entered(None, _context.set_value(_UNSAMPLED, trace_id, _QUIET))
        _ids.hand_over(trace_id)
    agent = next((value for key, value in headers if key == b"user-agent"), None)
    assert _tracer is not None
    span = _tracer.start_span(
        f"{method} {route}",
        context=parent,
        kind=_trace.SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "url.scheme": scope.get("scheme", "http"),
            "prism.request_id": request_id,
            # Not ``client.address``: an end user's address is personal data, which Prism's
            # logs do not record either.
            **({"user_agent.original": agent.decode("latin-1")[:256]} if agent else {}),
        },
    )
    within = _trace.set_span_in_context(span, parent)
    if not span.is_recording():  # a parent that is not sampled
        return Entered(None, _context.set_value(_SUPPRESS, True, within))
    return Entered(span, within)


def untraced(method: _Method) -> _Method:
    """``method`` (a client's bound method) as its library defines it, without the wrapper
    the client's instrumentation put around it: for a call Prism makes its own span for
    (``client_call``). As it is with tracing off."""
    if ENABLED:
        return getattr(method, "__wrapped__", method)
    return method


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (None: tracing off, or no span). Inside a
    request the sampler dropped with no parent: one of the trace id it was decided on, not
    sampled, so the work it queues stays out of the traces too (a trace is whole or
    absent)."""
    if not ENABLED:
        return None
    context = _trace.get_current_span().get_span_context()
    if context.is_valid:
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    trace_id = _context.get_value(_UNSAMPLED)
    if trace_id is None:
        return None
    return f"00-{trace_id:032x}-{_ids.generate_span_id():016x}-00"


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
        # The flags as parsed (a root the SDK made says ``03``: sampled, with a random id).
        sampled = _trace.get_current_span(extracted).get_span_context().trace_flags.sampled
        token = _context.attach(_context.set_value(_SUPPRESS, not sampled, extracted))
        try:
            yield
        finally:
            _context.detach(token)

    return attached()


def operation_span(operation_type: str, name: str | None) -> contextlib.AbstractContextManager[Any]:
    """One span per GraphQL operation (``query DocumentList``), with its type and name; its
    SQL, Redis and OpenSearch spans are its children. The document itself is not recorded
    (its literals may be personal data). Only inside a recorded (sampled) span."""
    if not ENABLED or not _trace.get_current_span().is_recording():
        return _NOTHING
    attributes = {"graphql.operation.type": operation_type}
    if name:
        attributes["graphql.operation.name"] = name
    assert _tracer is not None
    return _Current(
        _tracer.start_span(
            f"{operation_type} {name}" if name else operation_type, attributes=attributes
        )
    )


def client_call(name: str, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """A client span (``name``, ``attributes``) around a call Prism makes with a client's own
    method (``untraced``), where it knows better than the client's instrumentation what the
    call is; a child of the current span, and only inside a recorded one. Not made current:
    nothing is traced inside the call."""
    if not ENABLED or not _trace.get_current_span().is_recording():
        return _NOTHING
    assert _tracer is not None
    return _Ended(_tracer.start_span(name, kind=_trace.SpanKind.CLIENT, attributes=attributes))


class _Ended:
    """``span``, ended after ``with``; an exception marks it failed with its type (its text,
    which may hold personal data, stays in the logs)."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def __enter__(self) -> Any:
        return self.span

    def __exit__(self, kind: Any, error: BaseException | None, _traceback: Any) -> None:
        if error is not None:
            failed(self.span, error)
        self.span.end()


def operation_answered(operation_type: str, name: str | None) -> None:
    """The GraphQL operation a request answered without an operation span of its own (the
    lean path, whose one statement is the whole operation: a span more would cost a traced
    lean request about a third more, decision 0038), named on the request's HTTP span."""
    span = _trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("graphql.operation.type", operation_type)
    if name:
        span.set_attribute("graphql.operation.name", name)


class _Current(_Ended):
    """``span`` the current span inside ``with``, ended after it, as ``_Ended``."""

    __slots__ = ("token",)

    def __enter__(self) -> Any:
        self.token = _context.attach(_trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        _context.detach(self.token)
        super().__exit__(kind, error, traceback)


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
    context = _trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = f"{context.trace_id:032x}"
        event["span_id"] = f"{context.span_id:016x}"
    elif (trace_id := _context.get_value(_UNSAMPLED)) is not None:
        event["trace_id"] = f"{trace_id:032x}"  # a request not sampled: no span of its own
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
    """A span (a job's, an operation's) marked failed, with the error's type (its text stays
    in the logs)."""
    if span is None or not ENABLED or not span.is_recording():
        return
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, type(error).__name__))
    span.set_attribute("error.type", type(error).__qualname__)
