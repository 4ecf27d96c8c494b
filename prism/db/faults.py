"""What a database failure means: the database is unreachable (answer SERVICE_UNAVAILABLE and
let the client come back), or two transactions collided (the server retries its own writes).

One place decides, for every path that meets a driver error: GraphQL execution, the commit at
a request's end, authentication before GraphQL, /readyz, downloads and the worker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = structlog.get_logger("prism.db")
T = TypeVar("T")

# How long a client is told to wait before trying again while the database is away.
RETRY_AFTER_SECONDS = 2

# SQLSTATEs that say the server cannot serve now: connection exceptions (class 08), too many
# connections, a shutdown or start-up in progress, a statement cancelled by its timeout.
_UNAVAILABLE_STATES = frozenset({"53300", "57P01", "57P02", "57P03", "57014"})
# serialization_failure, deadlock_detected: nothing was changed, and a retry can succeed.
COLLISION_STATES = frozenset({"40001", "40P01"})

_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.QueryCanceledError,
    # Refused, reset or broken connections.
    ConnectionError,
    # asyncpg's connect and command timeouts (asyncio.TimeoutError is TimeoutError).
    TimeoutError,
    # No pooled connection within pool_timeout; a pooled connection that died.
    PoolTimeout,
    DisconnectionError,
)


class DatabaseUnavailable(Exception):
    """The driver could not reach the server or lost it mid-statement (what the engine's
    error hook makes of a socket error or a client-side timeout; see ``prism.db.engine``)."""


_UNAVAILABLE_TYPES = (DatabaseUnavailable, *_UNAVAILABLE_TYPES)


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what it wraps (SQLAlchemy keeps the driver's error in ``orig``)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or getattr(current, "orig", None)
    return seen


def sqlstate(error: BaseException) -> str:
    """PostgreSQL's SQLSTATE of a driver error, wherever in the chain the driver put it."""
    for link in _chain(error):
        state = getattr(link, "sqlstate", None)
        if isinstance(state, str):
            return state
    return ""


def unavailable(error: BaseException) -> bool:
    """True when ``error`` says the database cannot be reached or cannot serve right now
    (down, restarting, frozen, out of connections), not that the request was wrong."""
    for link in _chain(error):
        if isinstance(link, DBAPIError) and link.connection_invalidated:
            return True
        if isinstance(link, _UNAVAILABLE_TYPES):
            return True
        state = getattr(link, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in _UNAVAILABLE_STATES):
            return True
        if isinstance(link, asyncpg.InterfaceError) and "connection is closed" in str(link):
            return True
    return False


def collided(error: BaseException) -> bool:
    """A serialization failure or a deadlock: the transaction changed nothing."""
    return sqlstate(error) in COLLISION_STATES


async def retry_collisions(
    operation: Callable[[], Awaitable[T]], *, attempts: int = 3, what: str = "write"
) -> T:
    """Run ``operation`` (a whole transaction of the server's own bookkeeping) again when it
    collided with a concurrent one, up to ``attempts`` times with a short jittered pause.
    A collision rolled everything back, so running the transaction again is safe."""
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except DBAPIError as exc:
            if attempt == attempts or not collided(exc):
                raise
            log.info("transaction collided; retrying", what=what, attempt=attempt)
            await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)  # noqa: S311 - not crypto
    raise AssertionError("unreachable")


@dataclass
class CommitWatch:
    """How many COMMITs of writes are in flight for one request (its deadline asks)."""

    pending: int = 0


# Set by the request's deadline (prism.web.guard) for the request's task and what it runs.
COMMIT_WATCH: ContextVar[CommitWatch | None] = ContextVar("prism_commit_watch", default=None)


@asynccontextmanager
async def committing_writes() -> AsyncIterator[None]:
    """Around a COMMIT of writes: a request whose deadline passes meanwhile is told its
    change may or may not have been saved (OUTCOME_UNKNOWN), not that nothing happened."""
    watch = COMMIT_WATCH.get()
    if watch is None:
        yield
        return
    watch.pending += 1
    try:
        yield
    finally:
        watch.pending -= 1


# The deadline of what answers someone outside RequestGuard (a WebSocket's connection_init,
# a subscription's re-read, a metrics scrape) when PRISM_REQUEST_TIMEOUT_SECONDS is 0.
FALLBACK_ANSWER_SECONDS = 30.0


def answer_deadline(request_timeout_seconds: float) -> float:
    """The request deadline, or FALLBACK_ANSWER_SECONDS when requests have none: a path
    that answers a client or a scraper always has one."""
    return request_timeout_seconds if request_timeout_seconds > 0 else FALLBACK_ANSWER_SECONDS


@asynccontextmanager
async def answered_within(seconds: float, what: str) -> AsyncIterator[None]:
    """Cancel the block after ``seconds`` and raise DatabaseUnavailable (an outage: 503, a
    WebSocket closed 1013, one log line): for the paths that answer someone without
    RequestGuard's deadline."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise DatabaseUnavailable(f"{what} not answered within {seconds:g} s") from exc


def log_failure(logger: Any, message: str, exc: BaseException, **fields: object) -> None:
    """One log line for a failure: without its stack when the database is away (an outage
    would otherwise log a stack for every request, re-check or job until it ends), with it
    when it is a bug."""
    if unavailable(exc):
        logger.warning(message, error=type(exc).__name__, database="unavailable", **fields)
    else:
        logger.warning(message, exc_info=exc, **fields)
