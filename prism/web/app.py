"""The ASGI app: routes, middleware, lifespan, assembled from the modules of ``prism.web``
(``auth`` who is calling, ``graphql`` the GraphQL view, ``routes`` the others), Starlette-style.
Also here: the request id and access log every request gets, and the last-resort handler."""

from __future__ import annotations

import gc
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prism import bootstrap, tracing
from prism.authn.cache import CHANNEL as CREDENTIALS_CHANNEL
from prism.authn.cache import CredentialCache
from prism.config import Settings
from prism.db.engine import url_for_asyncpg
from prism.db.notify import Notifications
from prism.documents.processing import PROGRESS_CHANNEL
from prism.events.live import LiveEvents
from prism.observability import HTTP_REQUESTS, configure_logging
from prism.schema import build_schema
from prism.web.assets import ROUTE as ASSET_ROUTE
from prism.web.assets import Assets
from prism.web.auth import Authentication, BearerAuthentication, unauthenticated
from prism.web.dashboard import ROUTE as DASHBOARD_ROUTE
from prism.web.dashboard import Dashboard
from prism.web.edge import ClientAddressMiddleware, TrustedProxies
from prism.web.graphql import CSRF_HEADERS, PrismGraphQL
from prism.web.guard import RequestGuard, error_answer
from prism.web.lean import LeanGraphQL
from prism.web.originals import download_original, page_preview
from prism.web.routes import (
    download_export,
    healthz,
    metrics_gate,
    metrics_listener,
    public_metrics,
    readyz,
)

log = structlog.get_logger("prism.http")
ROUTES = frozenset({"/graphql", "/healthz", "/readyz", "/metrics", "/dashboard"})
# Routes with ids in their paths, counted in metrics by their templates.
_TEMPLATES = (
    (re.compile(r"^/documents/[^/]+/original$"), "/documents/{id}/original"),
    (re.compile(r"^/documents/[^/]+/pages/\d+/preview$"), "/documents/{id}/pages/{n}/preview"),
    (re.compile(r"^/exports/[^/]+/[^/]+$"), "/exports/{organization}/{id}"),
)


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    for pattern, template in _TEMPLATES:
        if pattern.match(path):
            return template
    return "other"


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Give every request an id (the client's X-Request-ID if sane), return it in a header,
    bind it to logs, and log one access line with the duration; when tracing is on, run it
    in its HTTP server span (``tracing.enter_request``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next(
            (v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"x-request-id"),
            "",
        )
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        path = scope.get("path", "")
        route = "/assets" if path.startswith("/assets/") else route_label(path)
        # The HTTP span (when tracing is on): every log line of the request is inside it.
        entered = tracing.enter_request(scope, route, request_id) if tracing.ENABLED else None
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
                if entered is not None:
                    entered.answered(status)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            if entered is not None:
                entered.failed(exc)
            raise
        finally:
            if scope["type"] == "http":
                HTTP_REQUESTS.labels(scope.get("method", ""), route, str(status)).inc()
                log.info(
                    "request",
                    method=scope.get("method"),
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            if entered is not None:
                entered.close()
            structlog.contextvars.unbind_contextvars("request_id")


async def internal_error(request: Request, exc: Exception) -> Response:
    """Whatever escapes RequestGuard (WebSocket handshakes): logged with its stack, answered
    without it; a database that is down is 503 SERVICE_UNAVAILABLE."""
    request_id = request.scope.get("state", {}).get("request_id")
    response = error_answer(exc, request_id)
    if request_id:
        response.headers["x-request-id"] = request_id
    return response


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
    tracing.configure("prism-api")
    configure_logging(
        settings.log_level, json=settings.log_json, processors=tracing.log_processors()
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = database_url or await bootstrap.prepare_database(settings)
        services = bootstrap.build_services(settings, url)
        await bootstrap.ensure_audit_partitions(services)
        await dashboard.register(services)
        progress = Notifications(url_for_asyncpg(url), PROGRESS_CHANNEL, key_field="d")
        await progress.start()
        live_events = LiveEvents(
            services.db, url_for_asyncpg(url), buffer=settings.events_subscription_buffer
        )
        await live_events.start()
        credentials = CredentialCache(url_for_asyncpg(url), ttl_seconds=settings.auth_cache_seconds)
        if settings.auth_cache_seconds > 0:
            await credentials.start()
            if services.db.statements is not None:
                services.db.statements.listen(CREDENTIALS_CHANNEL, credentials.changed)
        services = replace(
            services, progress=progress, live_events=live_events, credentials=credentials
        )
        app.state.services = services
        background = await bootstrap.start_worker(services) if with_worker else None
        settle_garbage_collector()
        log.info(
            "prism started", mode=settings.mode.value, worker=with_worker, tracing=tracing.ENABLED
        )
        try:
            async with metrics_listener(services, settings.metrics_address):
                yield
        finally:
            if background is not None:
                await background.stop()
            await progress.stop()
            await live_events.stop()
            await credentials.stop()
            await services.close()

    assets = Assets()
    schema = build_schema(settings)
    dashboard = Dashboard(schema._schema, assets)
    graphql = PrismGraphQL(
        schema,
        assets=assets,
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
            Route(DASHBOARD_ROUTE, dashboard.serve, methods=["GET"]),
            Route(ASSET_ROUTE, assets.serve, methods=["GET"]),
            Route("/documents/{document}/original", download_original, methods=["GET"]),
            Route("/documents/{document}/pages/{page}/preview", page_preview, methods=["GET"]),
        ],
        middleware=[
            Middleware(ClientAddressMiddleware, TrustedProxies.parse(settings.trusted_proxies)),
            Middleware(RequestIdMiddleware),
            *cors(settings),
            Middleware(RequestGuard, timeout_seconds=settings.request_timeout_seconds),
            # A planned read query is answered here; anything else goes on (decision 0025).
            Middleware(LeanGraphQL, view=graphql, enabled=settings.lean_path),
            Middleware(
                Authentication,
                backend=BearerAuthentication(),
                on_error=unauthenticated,
            ),
        ],
        lifespan=lifespan,
        exception_handlers={Exception: internal_error},
    )


# What a browser page on an allowed origin may send beside the CORS-safelisted headers: the
# bearer token, JSON, the multipart CSRF headers, the request id, a conditional request.
CORS_REQUEST_HEADERS = (
    "authorization",
    "content-type",
    *CSRF_HEADERS,
    "x-request-id",
    "if-none-match",
)
# What its script may read of an answer: the rate limit, the cache validator, when to retry;
# of an original's download, its file name and digest.
CORS_RESPONSE_HEADERS = (
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
    "etag",
    "x-request-id",
    "content-disposition",
    "repr-digest",
)


def cors(settings: Settings) -> list[Middleware]:
    """CORS for the configured origins (none: no middleware, browsers keep pages on other
    origins out). Preflights are answered before authentication and limits, and every answer
    to an allowed origin (errors included) says so, so a page can read its error codes.
    Never with credentials: Prism reads bearer tokens, not cookies."""
    origins = settings.allowed_origins
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_RESPONSE_HEADERS),
            allow_credentials=False,
            max_age=settings.cors_max_age_seconds,
        )
    ]


def app_from_environment() -> Starlette:
    """For `uvicorn --factory` worker processes: settings and database URL from the
    environment (set by `prism serve`)."""
    settings = Settings()
    url = settings.database_url.get_secret_value() if settings.database_url else None
    with_worker = os.environ.get(bootstrap.WITH_WORKER_ENV) == "1"
    return create_app(settings, database_url=url, with_worker=with_worker)
