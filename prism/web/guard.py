"""What every HTTP request gets, whatever fails under it: an answer within the request's
deadline, with a code, on a connection that stays open.

Errors that escape a route (authentication's database lookup before GraphQL, a download, a
GraphQL transport failure) are answered here instead of by Starlette's last-resort handler,
which re-raises them to the server: uvicorn then logs a second traceback and closes the
keep-alive connection."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prism.db.faults import (
    COMMIT_WATCH,
    RETRY_AFTER_SECONDS,
    CommitWatch,
    unavailable,
)

log = structlog.get_logger("prism.http")


def coded_response(status: int, code: str, message: str, **extensions: Any) -> JSONResponse:
    response = JSONResponse(
        {
            "data": None,
            "errors": [{"message": message, "extensions": {"code": code, **extensions}}],
        },
        status_code=status,
    )
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """A coded error answer as it is (unlike ``coded_response``, no Retry-After on a 503)."""
    return JSONResponse(
        {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
    )


def unavailable_response() -> JSONResponse:
    return coded_response(
        503,
        "SERVICE_UNAVAILABLE",
        "The database is unavailable; try again shortly.",
        retryAfter=RETRY_AFTER_SECONDS,
    )


def error_answer(exc: BaseException, request_id: str | None) -> JSONResponse:
    """A dependency that is down: 503, one line in the log. Anything else: 500 INTERNAL,
    logged once with its stack."""
    if unavailable(exc):
        log.warning("database unavailable", request_id=request_id, error=type(exc).__name__)
        return unavailable_response()
    log.error("unhandled error", request_id=request_id, exc_info=exc)
    return coded_response(500, "INTERNAL", "Unexpected error.", requestId=request_id)


class RequestGuard:
    """Runs each HTTP request under ``timeout_seconds`` (0: no deadline) and answers what
    escapes it. Past the deadline the client gets 503 SERVICE_UNAVAILABLE at once, or
    OUTCOME_UNKNOWN when its mutation was caught committing, and the request is cancelled
    behind the answer (its transaction rolls back, its connection is discarded)."""

    def __init__(self, app: ASGIApp, timeout_seconds: float = 0) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds
        self._abandoned: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        answered = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the deadline's answer went out; the late one is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        request_id = scope.get("state", {}).get("request_id")
        watch = CommitWatch()
        # The request's task starts with a copy of this context: it reports its commits.
        token = COMMIT_WATCH.set(watch)
        try:
            task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        finally:
            COMMIT_WATCH.reset(token)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout_seconds or None)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done and started:
            # A response is already streaming (a download): it can no longer be replaced.
            done = {task}
            await asyncio.wait(done)
        if done:
            if task.cancelled():
                raise asyncio.CancelledError
            exc = task.exception()
            if exc is None:
                return
            if started:
                log.error("error after the response started", request_id=request_id, exc_info=exc)
                return
            await error_answer(exc, request_id)(scope, receive, send)
            return
        answered = True
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)
        if watch.pending:
            code = "OUTCOME_UNKNOWN"
            message = (
                "The request ran out of time while its change was being committed: it may or "
                "may not have been saved. Check before retrying."
            )
        else:
            code = "SERVICE_UNAVAILABLE"
            message = "The request did not finish in time; try again shortly."
        log.warning(
            "request deadline exceeded",
            request_id=request_id,
            path=scope.get("path"),
            code=code,
            timeout_seconds=self.timeout_seconds,
        )
        response = coded_response(503, code, message, retryAfter=RETRY_AFTER_SECONDS)
        await response(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket whose authentication (the Authorization header, or connection_init)
        finds the database down: refused with 503 and Retry-After during the handshake
        where the server can send a response, else closed with 1013 (try again later)."""
        state = "connecting"

        async def tracked_send(message: Message) -> None:
            nonlocal state
            if message["type"] == "websocket.accept":
                state = "open"
            elif message["type"] in ("websocket.close", "websocket.http.response.start"):
                state = "closed"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if not unavailable(exc) or state == "closed":
                raise
            request_id = scope.get("state", {}).get("request_id")
            log.warning("database unavailable", request_id=request_id, error=type(exc).__name__)
            if state == "connecting" and "websocket.http.response" in scope.get("extensions", {}):
                response = unavailable_response()
                await send(
                    {
                        "type": "websocket.http.response.start",
                        "status": response.status_code,
                        "headers": response.raw_headers,
                    }
                )
                await send({"type": "websocket.http.response.body", "body": response.body})
            else:
                await send({"type": "websocket.close", "code": 1013, "reason": "Try again later"})

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("abandoned request failed", error=type(task.exception()).__name__)
