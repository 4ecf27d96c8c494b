"""Engine and transactions. Every transaction of the app runs as the non-owner role
``prism_app`` with ``prism.org_id`` set, so row-level security applies to all of it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from prism.db.faults import (
    RETRY_AFTER_SECONDS,
    DatabaseUnavailable,
    committing_writes,
    unavailable,
)
from prism.db.statements import PING_AFTER_IDLE_SECONDS, StatementPool
from prism.errors import OutcomeUnknown

APP_ROLE = "prism_app"
# A statement given as SQL text with named binds (what the planner makes).
Statement = sa.TextClause
_DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


def async_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs (what people and pgserver hand out)."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def url_for_asyncpg(url: str, database: str | None = None) -> str:
    """The same URL as asyncpg itself takes (no SQLAlchemy driver name), to ``database`` if
    given."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str, database: str | None = None) -> tuple[str, dict[str, str]]:
    """A libpq URL (for pg_dump, pg_restore) without its password, and the environment that
    carries it (a password on a command line is visible to every user of the machine)."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
        parsed = parsed.set(password=None)
    return parsed.render_as_string(hide_password=False), env


def create_engine(
    url: str,
    *,
    role: str | None = APP_ROLE,
    pool_size: int = 10,
    max_overflow: int = 10,
    statement_timeout_ms: int = 15_000,
    application_name: str = "prism",
    pool_timeout_seconds: float = 5.0,
    connect_timeout_seconds: float = 5.0,
    command_timeout_seconds: float = 0.0,
) -> AsyncEngine:
    server_settings = _server_settings(role, statement_timeout_ms, application_name)
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # Recycle before common proxy/firewall idle limits (often 30-60 min).
        pool_recycle=1800,
        # Bound values (password hashes, token digests) never reach logs via error text.
        hide_parameters=True,
        # JSON and JSONB columns read with orjson (the standard library's decoder is a
        # tenth as fast); a document it refuses (a number beyond a double) is read as before.
        json_deserializer=_json_loads,
        # A database that is down, frozen or out of connections answers within bounds: no
        # free connection within pool_timeout, no new one within the connect timeout, no
        # statement (COMMIT included) answered within command_timeout (client-side: the
        # server-side statement_timeout cannot fire in a server that does not run).
        pool_timeout=pool_timeout_seconds,
        connect_args={
            "async_creator_fn": _connect,
            "server_settings": server_settings,
            "timeout": connect_timeout_seconds,
            "command_timeout": command_timeout_seconds or None,
        },
    )
    _ping_when_idle(engine)
    _name_lost_connections(engine)
    return engine


def _server_settings(
    role: str | None, statement_timeout_ms: int, application_name: str
) -> dict[str, str]:
    server_settings = {"application_name": application_name}
    if role is not None:
        # Sent in the startup packet: the session is prism_app from its first statement, and
        # RLS applies even when the login user owns the tables or is a superuser.
        server_settings["role"] = role
    if statement_timeout_ms:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    return server_settings


def create_statement_pool(
    url: str,
    *,
    size: int = 10,
    statement_timeout_ms: int = 15_000,
    application_name: str = "prism",
    pool_timeout_seconds: float = 5.0,
    connect_timeout_seconds: float = 5.0,
    command_timeout_seconds: float = 0.0,
) -> StatementPool:
    """The app role's connections for single planned read statements (``StatementPool``),
    with the engine's settings and bounds."""
    return StatementPool(
        url_for_asyncpg(url),
        size=size,
        connect=_connect,
        server_settings=_server_settings(APP_ROLE, statement_timeout_ms, application_name),
        wait_seconds=pool_timeout_seconds,
        connect_seconds=connect_timeout_seconds,
        command_seconds=command_timeout_seconds or None,
    )


def _json_loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class TerminatingConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection that is dropped, not cancelled, when a command of it timed out
    or was cancelled.

    asyncpg would open a second connection to ask the server to cancel the command, and every
    later command on this one (SQLAlchemy's rollback, the pool's reset on checkin, the ping on
    checkout, a graceful close) would first wait, without limit, for the server to confirm.
    A server that did not answer within the command timeout (frozen, cut off behind a proxy)
    answers the cancel no sooner, so the command timeout bounded one statement and nothing
    after it. Terminated, the connection fails every later command at once ("connection is
    closed", an outage to ``faults.unavailable``), the pool replaces it, and the server ends
    the statement itself (``statement_timeout``, or when it notices the socket is gone)."""

    def _cancel_current_command(self, waiter: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        # Not now: asyncpg's protocol is in the middle of failing the command and still uses
        # its transport; the next turn of the loop comes before the caller sees the error.
        self._loop.call_soon(self._drop)

    def _drop(self) -> None:
        if not self.is_closed():
            self.terminate()


def terminate_driver_connection(dbapi_connection: Any) -> None:
    """Drop the asyncpg connection under SQLAlchemy's adapter at once (no graceful close:
    that waits for a server that is not answering)."""
    raw = getattr(dbapi_connection, "_connection", None)
    if isinstance(raw, asyncpg.Connection) and not raw.is_closed():
        raw.terminate()


async def _connect(*args: Any, **kwargs: Any) -> Any:
    """asyncpg.connect, with a server that is not there (no socket, refused, no answer within
    the connect timeout) said as DatabaseUnavailable: the pool raises connect errors as they
    are, past the engine's error hook. Connections are ``TerminatingConnection``s."""
    kwargs.setdefault("connection_class", TerminatingConnection)
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect to the database ({type(exc).__name__})") from exc


def _name_lost_connections(engine: AsyncEngine) -> None:
    """Socket errors and client-side timeouts leave the driver as they are (OSError,
    TimeoutError, nothing SQLAlchemy wraps): raise them as DatabaseUnavailable, and throw the
    connection away (a timed-out statement may still be running on it)."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _lost(context: Any) -> BaseException | None:
        original = context.original_exception
        if isinstance(original, DatabaseUnavailable):
            return None
        if isinstance(original, OSError | TimeoutError) or (
            context.sqlalchemy_exception is None and unavailable(original)
        ):
            context.is_disconnect = True
            # Terminated before SQLAlchemy invalidates it: its invalidation closes the
            # connection gracefully first, which waits on the server.
            fairy = getattr(context.connection, "_dbapi_connection", None)
            if fairy is not None:
                terminate_driver_connection(getattr(fairy, "dbapi_connection", None))
            error = DatabaseUnavailable(f"database unavailable ({type(original).__name__})")
            error.__cause__ = original
            return error
        return None


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only when it sat idle for a while.

    A database restart or an idle-timeout proxy leaves dead sockets in the pool; pinging
    every checkout (SQLAlchemy's pool_pre_ping) finds them but costs a round trip on every
    request, and a busy server's connections are never idle long enough to have died. A dead
    one is replaced transparently (DisconnectionError makes the pool retry with a new one)."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # Bounded by the command timeout; what did not answer is dropped, not closed.
            terminate_driver_connection(dbapi_connection)
            raise DisconnectionError("pooled connection is gone") from exc


async def set_organization(session: AsyncSession, organization_id: uuid.UUID | None) -> None:
    """Transaction-local: ends with the transaction, so a pooled connection never carries an
    organization into the next request."""
    value = str(organization_id) if organization_id else ""
    await session.execute(sa.select(sa.func.set_config("prism.org_id", value, True)))


async def _lost(connection: AsyncConnection, driver: asyncpg.Connection, exc: Exception) -> None:
    """What the engine's error hook does for a statement sent past SQLAlchemy: a lost
    connection is dropped (not closed: that waits on the server), invalidated in the pool,
    and said as DatabaseUnavailable. Returns for any other error."""
    if not (isinstance(exc, OSError | TimeoutError) or unavailable(exc)):
        return
    if not driver.is_closed():
        driver.terminate()
    with contextlib.suppress(Exception):
        await connection.invalidate(exc)
    raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from exc


class PositionalText(sa.TextClause):
    """A statement written with asyncpg's positional binds (``$1``, ``$2``, ...), the names
    of its values in that order beside it: sent as it is, its text never scanned for binds
    (``sa.text`` scans it when made, its compilation again: two thirds of a plan miss). As a
    TextClause, for a session, its text names its binds ``:name``, made on first use.

    ``$`` followed by digits is a bind wherever it appears: the text holds no other."""

    inherit_cache = True  # its cache key is the TextClause's: the text, the binds

    def __init__(self, driver: str, names: tuple[str, ...]) -> None:
        self.driver = (driver, names)
        self._named: str | None = None
        self._binds: dict[str, sa.BindParameter[Any]] | None = None

    @property
    def text(self) -> str:  # type: ignore[override]
        if self._named is None:
            names = self.driver[1]
            self._named = _POSITIONAL.sub(lambda m: ":" + names[int(m[1]) - 1], self.driver[0])
        return self._named

    @property
    def _bindparams(self) -> dict[str, sa.BindParameter[Any]]:  # type: ignore[override]
        if self._binds is None:
            self._binds = {name: sa.BindParameter(name) for name in self.driver[1]}
        return self._binds


_POSITIONAL = re.compile(r"\$(\d+)")

# SQL text of a statement as asyncpg takes it ($1, $2, ...) and its parameters' names in
# that order, per statement text (planned statements are few and reused).
_DRIVER_TEXT: dict[str, tuple[str, tuple[str, ...]]] = {}
DRIVER_TEXT_CACHE_SIZE = 1024


def driver_text(clause: sa.TextClause) -> tuple[str, tuple[str, ...]]:
    if isinstance(clause, PositionalText):
        return clause.driver
    found = _DRIVER_TEXT.get(clause.text)
    if found is None:
        compiled = clause.compile(dialect=_DIALECT)
        found = (str(compiled), tuple(compiled.positiontup or ()))
        if len(_DRIVER_TEXT) >= DRIVER_TEXT_CACHE_SIZE:
            del _DRIVER_TEXT[next(iter(_DRIVER_TEXT))]
        _DRIVER_TEXT[clause.text] = found
    return found


def forget_driver_texts() -> None:
    """Forget every remembered driver text (what a process that never saw them has)."""
    _DRIVER_TEXT.clear()


async def fetch_row(
    session: AsyncSession, clause: sa.TextClause, values: dict[str, Any]
) -> asyncpg.Record | None:
    """One row of ``clause`` run in ``session``'s transaction on the driver's connection,
    with no ORM in between (the same SQL and prepared statement SQLAlchemy would use)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        raise RuntimeError("the session's transaction has not started")
    text, names = driver_text(clause)
    try:
        row: asyncpg.Record | None = await driver.fetchrow(text, *(values[n] for n in names))
    except Exception as exc:
        await _lost(connection, driver, exc)
        raise
    return row


_SET_ORGANIZATION = "SELECT set_config('prism.org_id', $1, true)"


async def set_organization_in(
    connection: AsyncConnection, organization_id: uuid.UUID | None
) -> None:
    """``set_organization`` on a session's connection, as driver SQL (no ORM statement to
    compile; the connection's transaction begins with it if it had not)."""
    value = str(organization_id) if organization_id else ""
    await connection.exec_driver_sql(_SET_ORGANIZATION, (value,))


_BEGIN = {
    "REPEATABLE READ": "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "READ COMMITTED": "BEGIN ISOLATION LEVEL READ COMMITTED",
}


class Database:
    """The engine and a factory of organization-bound transactions."""

    def __init__(self, engine: AsyncEngine, statements: StatementPool | None = None) -> None:
        self.engine = engine
        # Single planned reads outside a transaction block (the lean path); None: they run
        # in a session's transaction like every other statement.
        self.statements = statements
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

    @asynccontextmanager
    async def transaction(
        self, organization_id: uuid.UUID | None, *, answers_client: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success, rolled back on error.

        ``answers_client``: the transaction writes what a client is waiting for (a sign-in's
        session); losing the connection during its COMMIT raises OutcomeUnknown, since the
        change may have been saved and a blind retry could act twice."""
        async with self.sessionmaker() as session:
            await session.begin()
            try:
                await set_organization(session, organization_id)
                yield session
            except BaseException:
                await session.rollback()
                raise
            if not answers_client:
                await session.commit()
                return
            try:
                async with committing_writes():
                    await session.commit()
            except Exception as exc:
                if unavailable(exc):
                    raise OutcomeUnknown(
                        "The connection to the database was lost while the change was being "
                        "committed: it may or may not have been saved. Check before retrying.",
                        retryAfter=RETRY_AFTER_SECONDS,
                    ) from exc
                raise

    async def ping(self) -> bool:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return True

    def pool_status(self) -> dict[str, Any]:
        pool: Any = self.engine.pool
        return {
            "size": pool.size(),
            "checked_out": pool.checkedout(),
            "overflow": pool.overflow(),
        }

    async def dispose(self) -> None:
        if self.statements is not None:
            await self.statements.close()
        await self.engine.dispose()
