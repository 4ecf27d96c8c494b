"""The ASGI app: routes, middleware, lifespan. Assembled from lists, Starlette-style."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson
import structlog
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from prism import bootstrap
from prism.authn.bearer import authenticate_bearer
from prism.authz.principal import Principal
from prism.config import Settings
from prism.db.engine import url_for_asyncpg
from prism.db.faults import (
    RETRY_AFTER_SECONDS,
    answer_deadline,
    answered_within,
    log_failure,
)
from prism.db.notify import Notifications
from prism.documents.processing import PROGRESS_CHANNEL
from prism.errors import PrismError, ServiceUnavailable, Unauthenticated
from prism.execution import inputs
from prism.execution.context import Context, RequestTransaction
from prism.execution.limits import (
    CHARGED,
    Refusal,
    bucket_key,
    caller_key,
    charge_context_refusal,
    charge_refusal,
    rate_limited,
    refusal_spent,
)
from prism.jobs.watch import observe_jobs
from prism.models.audit import RequestMeta
from prism.observability import DB_POOL, HTTP_REQUESTS, configure_logging
from prism.privacy import export as personal_export
from prism.schema import build_schema
from prism.services import Services
from prism.web.body import (
    SUBSCRIPTIONS_OVER_WEBSOCKET,
    body_refusal,
    is_multipart,
    multipart_refusal,
    with_media_type_lowercased,
)
from prism.web.edge import (
    MAX_JSON_BODY,
    ClientAddressMiddleware,
    MetricsGate,
    TrustedProxies,
    bind_listener,
    operation_request_problem,
    serve_alone,
    split_host_port,
    token_digest_of,
)
from prism.web.guard import RequestGuard, error_answer
from prism.web.websocket import PrismTransportWS

log = structlog.get_logger("prism.http")
ROUTES = frozenset({"/graphql", "/healthz", "/readyz", "/metrics"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Give every request an id (the client's X-Request-ID if sane), return it in a header,
    bind it to logs, and log one access line with the duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            route = path if path in ROUTES else "other"
            if scope["type"] == "http":
                HTTP_REQUESTS.labels(scope.get("method", ""), route, str(status)).inc()
                log.info(
                    "request",
                    method=scope.get("method"),
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")


class PrincipalUser(BaseUser):
    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return str(self.principal.user_id or self.principal.api_token_id)


class BearerAuthentication(AuthenticationBackend):
    """Who is calling: ``Authorization: Bearer <JWT | prism_pat_…>``; none means anonymous
    (only ``login`` and ``refreshSession`` then work)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if not header or conn.scope.get("path") == "/metrics":
            # /metrics has its own bearer (PRISM_METRICS_TOKEN), checked by its route.
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("Use `Authorization: Bearer <token>`.")
        services: Services = conn.app.state.services
        try:
            principal = await authenticate_bearer(
                services.db, services.access_tokens, value.strip()
            )
        except Unauthenticated as exc:
            raise AuthenticationError(exc.message) from exc
        return AuthCredentials(sorted(principal.granted_scopes)), PrincipalUser(principal)


def bearer_of(conn: HTTPConnection) -> str | None:
    """The credential of an `Authorization: Bearer` header (already authenticated)."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def unauthenticated(conn: HTTPConnection, exc: Exception) -> Response:
    return ChargedRefusal(
        {
            "data": None,
            "errors": [{"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}],
        },
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def rate_limited_response(refusal: Refusal) -> JSONResponse:
    """429 RATE_LIMITED, with when to retry, for a caller who cannot pay for a refusal."""
    bucket, rate = refusal.bucket, refusal.rate
    error = rate_limited(refusal.charge, bucket)
    return JSONResponse(
        {"data": None, "errors": [error.formatted]},
        status_code=429,
        headers={
            "Retry-After": str(bucket.retry_after),
            "RateLimit-Limit": str(rate.capacity),
            "RateLimit-Remaining": str(bucket.remaining),
            "RateLimit-Reset": str(bucket.reset),
        },
    )


def caller_of(scope: Scope) -> str:
    """The rate-limit bucket of an HTTP request's caller, before any context exists."""
    user = scope.get("user")
    principal = user.principal if isinstance(user, PrincipalUser) else None
    client = scope.get("client")
    return caller_key(principal, client[0] if client else None)


async def charged(scope: Scope, response: Response) -> Response:
    """``response`` (a refusal) once the caller has paid for it; 429 when it cannot. Not
    charged twice: a refusal the GraphQL layer charged is marked in the scope's state."""
    state = scope.setdefault("state", {})
    if state.get(CHARGED):
        return response
    state[CHARGED] = True
    services: Services = scope["app"].state.services
    found = await charge_refusal(services, caller_of(scope))
    if found is not None and not found.bucket.allowed:
        return rate_limited_response(found)
    return response


class ChargedRefusal(JSONResponse):
    """A refusal answered by middleware (a bearer token that does not authenticate):
    charged to the source address like any other refusal."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await charged(scope, self) if "app" in scope else self
        if response is self:
            await super().__call__(scope, receive, send)
        else:
            await response(scope, receive, send)


_HTTP_CODES = {404: "NOT_FOUND", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}
# Headers a browser cannot send cross-site without a CORS preflight: their presence proves a
# multipart request is not a forged HTML form post.
CSRF_HEADERS = ("apollo-require-preflight", "x-prism-csrf")
MULTIPART_OVERHEAD = 1024 * 1024


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
    )


class BodyTooLarge(Exception):
    pass


class PrismGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = PrismTransportWS

    def __init__(self, *args: Any, max_upload_bytes: int, **kwargs: Any) -> None:
        # One WebSocket protocol, whose every operation is authenticated and authorized as
        # an HTTP request (the legacy `graphql-ws` handler shares one context per socket).
        kwargs.setdefault("subscription_protocols", (GRAPHQL_TRANSPORT_WS_PROTOCOL,))
        super().__init__(*args, **kwargs)
        self.max_body = max_upload_bytes + MULTIPART_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["headers"] = with_media_type_lowercased(list(scope.get("headers") or []))
        multipart = is_multipart(dict(scope["headers"]).get(b"content-type"))
        limit = self.max_body if multipart else MAX_JSON_BODY
        # A caller who cannot pay for one more refused request is answered before its body
        # is read, parsed, or its persisted query looked up.
        spent = await refusal_spent(scope["app"].state.services, caller_of(scope))
        if spent is not None:
            scope.setdefault("state", {})[CHARGED] = True
            await rate_limited_response(spent)(scope, receive, send)
            return
        request = Request(scope=scope, receive=self._limited(receive, limit))
        refusal = self._refuse(request)
        if refusal is not None:
            await (await charged(scope, refusal))(scope, receive, send)
            return
        # Strawberry answers malformed HTTP requests (no query, bad JSON, a mutation over
        # GET) in plain text; clients get the same typed error shape as everywhere else.
        try:
            response = await self.run(request)
        except HTTPException as exc:
            code = _HTTP_CODES.get(exc.status_code, "BAD_USER_INPUT")
            status = exc.status_code
            if exc.reason == "Unsupported content type":
                code, status = "UNSUPPORTED_MEDIA_TYPE", 415
            response = error_response(status, code, exc.reason)
        except StarletteHTTPException as exc:
            # The multipart parser's refusals (no boundary, too many fields or files).
            status, code = multipart_refusal(exc.detail)
            response = error_response(status, code, exc.detail)
        except UnicodeDecodeError:
            response = error_response(400, "BAD_USER_INPUT", "The request body is not UTF-8.")
        except BodyTooLarge:
            response = error_response(
                413, "PAYLOAD_TOO_LARGE", f"The request body exceeds {limit} bytes."
            )
        finally:
            await request.close()  # the spooled files of a multipart form, however it ended
        if response.status_code >= 400 and response.status_code != 429:
            response = await charged(scope, response)
        await response(scope, receive, send)

    def _refuse(self, request: Request) -> Response | None:
        content_type = request.headers.get("content-type", "")
        length = request.headers.get("content-length")
        if request.method != "POST":
            return None
        unreadable = body_refusal(content_type, request.headers.get("content-encoding"))
        if unreadable is not None:
            return error_response(415, "UNSUPPORTED_MEDIA_TYPE", unreadable)
        if not is_multipart(content_type):
            if length is not None and length.isdigit() and int(length) > MAX_JSON_BODY:
                return error_response(
                    413, "PAYLOAD_TOO_LARGE", f"Requests are limited to {MAX_JSON_BODY} bytes."
                )
            return None
        if not any(request.headers.get(h) for h in CSRF_HEADERS):
            return error_response(
                400,
                "BAD_USER_INPUT",
                "Multipart requests need an `Apollo-Require-Preflight` (or `X-Prism-CSRF`) "
                "header: it protects against cross-site request forgery.",
            )
        if length is not None and length.isdigit() and int(length) > self.max_body:
            # Refused before a byte of the body is read.
            return error_response(
                413, "PAYLOAD_TOO_LARGE", f"Uploads are limited to {self.max_body} bytes."
            )
        return None

    @staticmethod
    def _limited(receive: Receive, limit: int) -> Receive:
        """Count body bytes as they arrive (a chunked body has no Content-Length)."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        return counted

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Resolve a persisted query (registered or automatic) into its text first."""
        try:
            resolved = await context.resolve_operation(request_data.query, request_data.extensions)
        except PrismError as exc:
            limited = await charge_context_refusal(context)
            if limited is not None:
                sub_response.status_code = 429
            return ExecutionResult(
                data=None,
                errors=[limited or GraphQLError(exc.message, extensions=exc.extensions)],
            )
        return await self._execute_query_or_mutation(
            request_adapter, context, root_value, replace(request_data, query=resolved.query)
        )

    async def _execute_query_or_mutation(
        self,
        request_adapter: AsyncHTTPRequestAdapter,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Strawberry's execution of one HTTP operation, where a subscription is not run
        (it would resolve as a query, to an internal error): it is refused, pointing to the
        WebSocket."""
        method = request_adapter.method
        allowed = OperationType.from_http(method) - {OperationType.SUBSCRIPTION}
        if not self.allow_queries_via_get and method == "GET":
            allowed -= {OperationType.QUERY}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPException(400, SUBSCRIPTIONS_OVER_WEBSOCKET) from exc
            raise HTTPException(400, exc.as_http_error_reason(method)) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request") from exc

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry's parsing, then the request shape every transport checks alike."""
        parsed = await super().parse_http_body(request)
        for item in parsed if isinstance(parsed, list) else [parsed]:
            problem = operation_request_problem(
                {
                    "query": item.query,
                    "variables": item.variables,
                    "extensions": item.extensions,
                    "operationName": item.operation_name,
                }
            )
            if problem is not None:
                raise HTTPException(400, problem)
        return parsed

    def decode_json(self, data: str | bytes) -> object:
        """Every JSON the view and the WebSocket handler read: strict and shallow."""
        return inputs.decode_json(data)

    def parse_json(self, data: str | bytes) -> Any:
        """A request's JSON (a body, GET's variables and extensions, multipart's operations
        and map): an object or an array; null is taken for an empty object."""
        try:
            value = self.decode_json(data)
        except inputs.JsonRefused as exc:
            raise HTTPException(400, exc.msg) from exc
        if value is None:
            return {}
        if not isinstance(value, dict | list):
            raise HTTPException(400, "The request's JSON must be an object.")
        return value

    async def parse_multipart(self, request: AsyncHTTPRequestAdapter) -> dict[str, str]:
        """Strawberry's multipart parsing, with the spec's `map` applied strictly."""
        try:
            form = await request.get_form_data()
        except ValueError as exc:
            raise HTTPException(400, "Unable to parse the multipart body") from exc
        except StarletteHTTPException as exc:
            # No boundary, too many fields or files, a part too large: Starlette's refusal.
            status, _ = multipart_refusal(exc.detail)
            raise HTTPException(status, exc.detail) from exc
        fields = [form.form.get("operations", "{}"), form.form.get("map", "{}")]
        if not all(isinstance(field, str | bytes) for field in fields):
            raise HTTPException(400, "`operations` and `map` are form fields, not files.")
        operations, files_map = (self.parse_json(field) for field in fields)
        try:
            placed: dict[str, str] = inputs.place_files(operations, files_map, form.files)
        except inputs.MultipartRefused as exc:
            raise HTTPException(400, str(exc)) from exc
        return placed

    def should_render_graphql_ide(self, request: Any) -> bool:
        """GraphiQL for a browser's bare GET, not for a persisted query sent over GET."""
        return super().should_render_graphql_ide(request) and (
            request.query_params.get("extensions") is None
        )

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        if sub_response.status_code == 304:
            # The client's copy is current: headers only (ETag, Cache-Control, limits).
            response = Response(status_code=304)
            response.headers.raw.extend(sub_response.headers.raw)
            return response
        response = Response(
            orjson.dumps(response_data),
            status_code=sub_response.status_code or 200,
            media_type="application/json",
        )
        response.headers.raw.extend(sub_response.headers.raw)
        outage = _outage(response_data)
        if outage is not None:
            # A dependency that is down: 503 when nothing was answered, and when to come back.
            if outage:
                response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    async def on_ws_connect(self, context: Context) -> Any:
        """Subscriptions authenticate in connection_init (browsers cannot set headers on a
        WebSocket): `{"authorization": "Bearer …"}`."""
        if context.principal is not None:
            return UNSET
        params = context.connection_params or {}
        raw = params.get("authorization") or params.get("Authorization") or ""
        bearer = str(raw).removeprefix("Bearer ").strip()
        if not bearer:
            raise await _rejected(context, "Authentication required.")
        services = context.services
        # A database that is down is not a rejection (4403): its error goes on to
        # RequestGuard, which closes the socket with 1013 (try again later). No HTTP request
        # deadline runs here: the answer has one of its own.
        deadline = answer_deadline(services.settings.request_timeout_seconds)
        try:
            async with answered_within(deadline, "connection_init"):
                principal = await authenticate_bearer(services.db, services.access_tokens, bearer)
        except Unauthenticated as exc:
            raise await _rejected(context, exc.message) from exc
        context.authenticate(principal, bearer)
        return UNSET

    async def get_context(self, request: Any, response: Any) -> Context:
        services: Services = request.app.state.services
        user = request.scope.get("user")
        principal = user.principal if isinstance(user, PrincipalUser) else None
        client = request.client
        return Context(
            services=services,
            principal=principal,
            meta=RequestMeta(
                ip_address=client.host if client else None,
                user_agent=request.headers.get("user-agent"),
                request_id=request.scope.get("state", {}).get("request_id"),
            ),
            transaction=RequestTransaction(
                services.db, principal.organization_id if principal else None
            ),
            request=request,
            # Headers go on HTTP responses; a WebSocket's handshake is long gone.
            response=response if isinstance(response, Response) else None,
            credential=bearer_of(request) if principal is not None else None,
        )


_OUTAGE_CODES = frozenset({"SERVICE_UNAVAILABLE", "OUTCOME_UNKNOWN"})


def _outage(response_data: object) -> bool | None:
    """None: no error says a dependency is down; True: one does and no root field has data
    (the whole answer is that error); False: one does beside some data."""
    if not isinstance(response_data, dict):
        return None
    errors = response_data.get("errors") or []
    if not any((e.get("extensions") or {}).get("code") in _OUTAGE_CODES for e in errors):
        return None
    data = response_data.get("data")
    return not data or all(value is None for value in data.values())


async def _rejected(context: Context, message: str) -> ConnectionRejectionError:
    """A WebSocket's connection_init that does not authenticate: a refusal, charged to the
    source address like an HTTP 401 (RATE_LIMITED once the address cannot pay)."""
    found = await charge_refusal(context.services, bucket_key(context))
    if found is not None and not found.bucket.allowed:
        error = rate_limited(found.charge, found.bucket)
        return ConnectionRejectionError(
            {"message": error.message, "code": "RATE_LIMITED", **(error.extensions or {})}
        )
    return ConnectionRejectionError({"message": message, "code": "UNAUTHENTICATED"})


async def internal_error(request: Request, exc: Exception) -> Response:
    """Whatever escapes RequestGuard (WebSocket handshakes): logged with its stack, answered
    without it; a database that is down is 503 SERVICE_UNAVAILABLE."""
    request_id = request.scope.get("state", {}).get("request_id")
    response = error_answer(exc, request_id)
    if request_id:
        response.headers["x-request-id"] = request_id
    return response


async def download_export(request: Request) -> Response:
    """A personal-data export bundle, for a link signed by ``exportUserData``'s DataExport
    (the link is the credential, like a presigned URL); decrypted on the way out, audited."""
    services: Services = request.app.state.services
    try:
        organization_id = uuid.UUID(request.path_params["organization"])
        export_id = uuid.UUID(request.path_params["export"])
        expires = int(request.query_params.get("expires", ""))
    except ValueError:
        return error_response(404, "NOT_FOUND", "No such export.")
    token = request.query_params.get("token", "")
    if not services.export_links.verify(organization_id, export_id, expires, token):
        return error_response(404, "NOT_FOUND", "No such export, or its link has expired.")
    meta = RequestMeta(
        ip_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        request_id=request.scope.get("state", {}).get("request_id"),
    )
    try:
        body = await personal_export.open_download(
            services.db,
            services.objects,
            services.envelope,
            organization_id=organization_id,
            export_id=export_id,
            meta=meta,
        )
    except ServiceUnavailable as exc:  # the data key cannot be opened now (logged)
        return error_response(503, exc.code, exc.message)
    if body is None:
        return error_response(404, "NOT_FOUND", "No such export, or its link has expired.")
    return StreamingResponse(
        body,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="prism-export-{export_id}.zip"',
            "Cache-Control": "no-store",
        },
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


# /readyz answers within this, whatever the database does (a frozen one never answers).
READY_TIMEOUT_SECONDS = 2.0


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await services.db.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("database not ready", error=type(exc).__name__)
        return JSONResponse(
            {"status": "unavailable", "database": "down"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return JSONResponse({"status": "ok", "database": "up"})


async def render_metrics(services: Services) -> Response:
    for state, value in services.db.pool_status().items():
        DB_POOL.labels(state).set(value)
    deadline = answer_deadline(services.settings.request_timeout_seconds)
    try:
        # Within the deadline: a scraper gets the other metrics while the database is frozen.
        async with answered_within(deadline, "job counts"):
            await observe_jobs(services.db)
    except Exception as exc:  # noqa: BLE001 (logged) the other metrics still answer
        log_failure(log, "job counts unavailable", exc)
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def metrics_gate(settings: Settings) -> MetricsGate:
    token = settings.metrics_token
    return MetricsGate(
        digest=token_digest_of(token.get_secret_value()) if token else None,
        open=not settings.production and settings.metrics_address is None,
    )


def public_metrics(gate: MetricsGate) -> Any:
    """/metrics on the public port, as ``gate`` allows."""

    async def metrics(request: Request) -> Response:
        decision = gate.decide(request.headers.get("authorization"))
        if decision == 404:
            return error_response(404, "NOT_FOUND", "Not found.")
        if decision == 401:
            response = error_response(401, "UNAUTHENTICATED", "/metrics needs its bearer token.")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await render_metrics(request.app.state.services)

    return metrics


def metrics_only_app(services: Services) -> Starlette:
    """The separate listener of PRISM_METRICS_ADDRESS: /metrics and nothing else."""

    async def metrics(request: Request) -> Response:
        return await render_metrics(services)

    return Starlette(routes=[Route("/metrics", metrics)])


@asynccontextmanager
async def metrics_listener(settings: Settings, services: Services) -> AsyncIterator[None]:
    if settings.metrics_address is None:
        yield
        return
    host, port = split_host_port(settings.metrics_address)
    async with serve_alone(metrics_only_app(services), [bind_listener(host, port)]):
        log.info("metrics listener started", address=settings.metrics_address)
        yield


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the request path's back.

    A request allocates tens of thousands of short-lived objects (rows, GraphQL results);
    with the default thresholds the collector runs every 700 allocations and rescans the
    long-lived objects of the process (the schema, the ORM's mappers, modules) each time it
    reaches the older generations. Freezing what exists after start-up takes those out of
    every future scan, and a larger first threshold lets a request's garbage die young
    before a collection starts. Reference counting still frees almost everything at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def create_app(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    with_worker: bool = False,
) -> Starlette:
    """The Prism ASGI app. ``database_url`` skips resolving (and migrating) the database;
    ``with_worker`` runs a job worker inside the server process (one-machine setups)."""
    settings = settings or Settings()
    configure_logging(settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = database_url or await bootstrap.prepare_database(settings)
        services = bootstrap.build_services(settings, url)
        await bootstrap.ensure_audit_partitions(services)
        progress = Notifications(url_for_asyncpg(url), PROGRESS_CHANNEL, key_field="d")
        await progress.start()
        services = replace(services, progress=progress)
        app.state.services = services
        background = await bootstrap.start_worker(services) if with_worker else None
        settle_garbage_collector()
        log.info("prism started", mode=settings.mode.value, worker=with_worker)
        try:
            async with metrics_listener(settings, services):
                yield
        finally:
            if background is not None:
                await background.stop()
            await progress.stop()
            await services.close()

    graphql = PrismGraphQL(
        build_schema(settings),
        graphql_ide="graphiql" if settings.serves_graphiql else None,
        allow_queries_via_get=True,
        multipart_uploads_enabled=True,
        max_upload_bytes=settings.max_upload_bytes,
    )
    return Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", public_metrics(metrics_gate(settings))),
            Route("/exports/{organization}/{export}", download_export),
        ],
        middleware=[
            Middleware(ClientAddressMiddleware, TrustedProxies.parse(settings.trusted_proxies)),
            Middleware(RequestIdMiddleware),
            Middleware(RequestGuard, timeout_seconds=settings.request_timeout_seconds),
            Middleware(
                AuthenticationMiddleware,
                backend=BearerAuthentication(),
                on_error=unauthenticated,
            ),
        ],
        lifespan=lifespan,
        exception_handlers={Exception: internal_error},
    )


def app_from_environment() -> Starlette:
    """For `uvicorn --factory` worker processes: settings and database URL from the
    environment (set by `prism serve`)."""
    settings = Settings()
    url = settings.database_url.get_secret_value() if settings.database_url else None
    with_worker = os.environ.get(bootstrap.WITH_WORKER_ENV) == "1"
    return create_app(settings, database_url=url, with_worker=with_worker)
