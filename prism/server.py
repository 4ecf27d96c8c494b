"""The ASGI app: routes, middleware, lifespan. Assembled from lists, Starlette-style."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import structlog
from cross_web import HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET

from prism import bootstrap
from prism.authz import identity
from prism.authz.principal import Principal
from prism.config import Settings
from prism.errors import Unauthenticated
from prism.jobs.pipeline import PROGRESS_CHANNEL
from prism.models.audit import RequestMeta
from prism.models.db import url_for_asyncpg
from prism.models.notify import Notifications
from prism.observability import DB_POOL, HTTP_REQUESTS, configure_logging
from prism.resolvers.context import Context, RequestTransaction, Services
from prism.schema import build_schema

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
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("Use `Authorization: Bearer <token>`.")
        services: Services = conn.app.state.services
        try:
            principal = await identity.authenticate_bearer(
                services.db, services.access_tokens, value.strip()
            )
        except Unauthenticated as exc:
            raise AuthenticationError(exc.message) from exc
        return AuthCredentials(sorted(principal.granted_scopes)), PrincipalUser(principal)


def unauthenticated(conn: HTTPConnection, exc: Exception) -> Response:
    return JSONResponse(
        {
            "data": None,
            "errors": [{"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}],
        },
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


_HTTP_CODES = {404: "NOT_FOUND", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}
# Headers a browser cannot send cross-site without a CORS preflight: their presence proves a
# multipart request is not a forged HTML form post.
CSRF_HEADERS = ("apollo-require-preflight", "x-prism-csrf")
MULTIPART_OVERHEAD = 1024 * 1024
# A GraphQL document with its variables: anything bigger is not a query but a flood.
MAX_JSON_BODY = 1024 * 1024


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
    )


class BodyTooLarge(Exception):
    pass


class PrismGraphQL(GraphQL[Context, None]):
    def __init__(self, *args: Any, max_upload_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_body = max_upload_bytes + MULTIPART_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        multipart = (
            dict(scope.get("headers") or [])
            .get(b"content-type", b"")
            .startswith(b"multipart/form-data")
        )
        limit = self.max_body if multipart else MAX_JSON_BODY
        request = Request(scope=scope, receive=self._limited(receive, limit))
        refusal = self._refuse(request)
        if refusal is not None:
            await refusal(scope, receive, send)
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
        except UnicodeDecodeError:
            response = error_response(400, "BAD_USER_INPUT", "The request body is not UTF-8.")
        except BodyTooLarge:
            response = error_response(
                413, "PAYLOAD_TOO_LARGE", f"The request body exceeds {limit} bytes."
            )
        await response(scope, receive, send)

    def _refuse(self, request: Request) -> Response | None:
        content_type = request.headers.get("content-type", "")
        length = request.headers.get("content-length")
        if request.method != "POST":
            return None
        if not content_type.startswith("multipart/form-data"):
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

    async def on_ws_connect(self, context: Context) -> Any:
        """Subscriptions authenticate in connection_init (browsers cannot set headers on a
        WebSocket): `{"authorization": "Bearer …"}`."""
        if context.principal is not None:
            return UNSET
        params = context.connection_params or {}
        raw = params.get("authorization") or params.get("Authorization") or ""
        bearer = str(raw).removeprefix("Bearer ").strip()
        if not bearer:
            raise ConnectionRejectionError(
                {"message": "Authentication required.", "code": "UNAUTHENTICATED"}
            )
        services = context.services
        try:
            principal = await identity.authenticate_bearer(
                services.db, services.access_tokens, bearer
            )
        except Unauthenticated as exc:
            raise ConnectionRejectionError(
                {"message": exc.message, "code": "UNAUTHENTICATED"}
            ) from exc
        context.authenticate(principal)
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
        )


async def internal_error(request: Request, exc: Exception) -> Response:
    """Whatever escapes: logged with its stack, answered without it."""
    request_id = request.scope.get("state", {}).get("request_id")
    log.error("unhandled error", request_id=request_id, exc_info=exc)
    response = error_response(500, "INTERNAL", "Unexpected error.")
    if request_id:
        response.headers["x-request-id"] = request_id
    return response


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        await services.db.ping()
    except Exception:
        log.warning("database not ready", exc_info=True)
        return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "up"})


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    for state, value in services.db.pool_status().items():
        DB_POOL.labels(state).set(value)
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


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
        log.info("prism started", mode=settings.mode.value, worker=with_worker)
        try:
            yield
        finally:
            if background is not None:
                await background.stop()
            await progress.stop()
            await services.search.close()
            await services.db.dispose()

    graphql = PrismGraphQL(
        build_schema(production=settings.production),
        graphql_ide=None if settings.production else "graphiql",
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
            Route("/metrics", metrics),
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
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
