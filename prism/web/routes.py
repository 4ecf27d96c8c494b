"""The routes beside GraphQL: liveness and readiness, metrics (on the public port as the
settings allow, or on a listener of their own), and personal-data export downloads."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from prism.config import Settings
from prism.db.faults import (
    RETRY_AFTER_SECONDS,
    answer_deadline,
    answered_within,
    log_failure,
)
from prism.errors import ServiceUnavailable
from prism.events.relay import observe_lag
from prism.jobs.watch import observe_jobs
from prism.models.audit import RequestMeta
from prism.observability import DB_POOL, exposition
from prism.privacy import export as personal_export
from prism.services import Services
from prism.web.edge import (
    MetricsGate,
    bind_listener,
    serve_alone,
    split_host_port,
    token_digest_of,
)
from prism.web.guard import error_response

log = structlog.get_logger("prism.http")


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


def observe_pool(services: Services) -> None:
    for state, value in services.db.pool_status().items():
        DB_POOL.labels(state).set(value)


# How often each process writes its pool figures (in multiprocess mode another process may
# answer the scrape, and sums what each last wrote).
POOL_EVERY_SECONDS = 5.0


async def keep_pool_observed(services: Services) -> None:
    """Until cancelled: this process's pool gauge, every POOL_EVERY_SECONDS."""
    while True:
        observe_pool(services)
        await asyncio.sleep(POOL_EVERY_SECONDS)


async def render_metrics(services: Services) -> Response:
    observe_pool(services)
    deadline = answer_deadline(services.settings.request_timeout_seconds)
    try:
        # Within the deadline: a scraper gets the other metrics while the database is frozen.
        async with answered_within(deadline, "job counts"):
            await observe_jobs(services.db)
            await observe_lag(services.db)
    except Exception as exc:  # noqa: BLE001 (logged) the other metrics still answer
        log_failure(log, "job counts unavailable", exc)
    return PlainTextResponse(exposition(), media_type=CONTENT_TYPE_LATEST)


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
async def metrics_listener(services: Services, address: str | None) -> AsyncIterator[None]:
    """The process's pool gauge kept current, and, when ``address`` is set
    (PRISM_METRICS_ADDRESS of an API process, PRISM_WORKER_METRICS_ADDRESS of a worker), a
    listener of its own serving /metrics alone."""
    pool = asyncio.create_task(keep_pool_observed(services))
    try:
        if address is None:
            yield
            return
        host, port = split_host_port(address)
        async with serve_alone(metrics_only_app(services), [bind_listener(host, port)]):
            log.info("metrics listener started", address=address)
            yield
    finally:
        pool.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pool
