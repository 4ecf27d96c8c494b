"""Connections for single read statements: a planned read (the lean path) sent as one
statement, with no transaction block around it (decision 0037).

A planned read is one SELECT that builds the whole answer, so one statement's snapshot is
the consistent read a REPEATABLE READ transaction would give it, and BEGIN and COMMIT are two
round trips that add nothing. What the transaction carried, the organization setting, is
carried by the connection instead: each connection of this pool holds ``prism.org_id`` as a
session setting, changed only when a statement for another organization takes it. The
connections are this pool's alone (never SQLAlchemy's, so no other code runs on a connection
carrying an organization it did not set) and read only (``default_transaction_read_only``):
a statement that tried to write would fail, not write outside a transaction.

An idle connection whose organization is the statement's is preferred, so a fleet of
organizations costs one extra round trip only when the pool's connections move between them.
A connection that fails at the socket or times out is terminated and dropped (never reused),
and the failure raised as DatabaseUnavailable, as every statement's loss is; a statement that
fails otherwise (an error from PostgreSQL) leaves its connection usable, since no transaction
was open. A connection idle longer than ``PING_AFTER_IDLE_SECONDS`` may have died with a
database restart: its failure is retried once on a new connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from prism import tracing
from prism.db.faults import DatabaseUnavailable, unavailable

# A connection back in use within this many seconds is trusted without a retry on failure
# (the engine's pool pings after the same idle time).
PING_AFTER_IDLE_SECONDS = 5.0
# Replaced after this long, as the engine's pool recycles its connections.
RECYCLE_SECONDS = 1800.0


class _Held:
    __slots__ = ("born", "connection", "idle_since", "listening_since", "organization")

    def __init__(self, connection: asyncpg.Connection, listening_since: float | None) -> None:
        self.connection = connection
        self.organization: uuid.UUID | None = None
        now = time.monotonic()
        self.born = now
        self.idle_since = now
        self.listening_since = listening_since


class StatementPool:
    """At most ``size`` connections of the app's role, each running one statement at a time,
    outside any transaction block, with its organization as a session setting."""

    def __init__(
        self,
        url: str,
        *,
        size: int,
        connect: Any,
        server_settings: dict[str, str],
        wait_seconds: float,
        connect_seconds: float,
        command_seconds: float | None,
    ) -> None:
        self.url = url
        self.size = max(1, size)
        self._connect_fn = connect
        self._server_settings = {**server_settings, "default_transaction_read_only": "on"}
        self._wait_seconds = wait_seconds
        self._connect_seconds = connect_seconds
        self._command_seconds = command_seconds
        self._idle: dict[uuid.UUID | None, list[_Held]] = {}
        self._idle_count = 0
        self._open = 0  # connections held or idle, and those being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._listen: tuple[str, Callable[..., None]] | None = None
        self._traced = _span_attributes(url)

    def listen(self, channel: str, callback: Callable[..., None]) -> None:
        """Every connection opened from now on LISTENs on ``channel`` before its first
        statement (``callback`` is asyncpg's listener); ``fetch_row`` says since when."""
        self._listen = (channel, callback)

    async def fetch_row(
        self, organization_id: uuid.UUID, text: str, args: Sequence[Any]
    ) -> tuple[asyncpg.Record | None, float | None]:
        """The one row of ``text`` with ``args``, read under ``organization_id``'s row-level
        security in one statement's snapshot, and since when (monotonic) the connection that
        read it has listened on the ``listen`` channel (None: it does not). Notifications of
        that channel that came before the row have been handed to the callback."""
        if not isinstance(organization_id, uuid.UUID):
            raise TypeError("an organization is a UUID")
        held = await self._take(organization_id)
        retried = False
        while True:
            stale = time.monotonic() - held.idle_since > PING_AFTER_IDLE_SECONDS
            try:
                if held.organization != organization_id:
                    held.organization = None  # unknown until the setting has been answered
                    # The organization is a UUID, written as its canonical text: nothing else
                    # can be written there. Session-wide: it stays with this connection.
                    await held.connection.execute(
                        f"SELECT set_config('prism.org_id', '{organization_id}', false)"
                    )
                    held.organization = organization_id
                guarded = _guarded(text, len(args))
                if tracing.ENABLED:
                    row = await self._traced_fetchrow(held, guarded, args, organization_id)
                else:
                    row = await held.connection.fetchrow(guarded, *args, str(organization_id))
                if row is None or row[0] is None:
                    # The session does not hold the organization it was given: not a server
                    # session of its own (a pooler in transaction mode), or altered behind
                    # Prism's back. Nothing it answered is used; the connection is dropped.
                    raise _NotItsOrganization()
            except BaseException as exc:
                lost = not isinstance(exc, Exception) or _lost(exc)
                if not lost and not held.connection.is_closed():
                    self._give_back(held)
                    raise
                self._drop(held)
                if isinstance(exc, Exception) and stale and not retried and not self._closed:
                    # An idle connection that died with a restart: once more, on a new one.
                    retried = True
                    held = await self._take(organization_id)
                    continue
                if isinstance(exc, Exception):
                    raise DatabaseUnavailable(
                        f"database unavailable ({type(exc).__name__})"
                    ) from exc
                raise
            self._give_back(held)
            return row, held.listening_since

    async def _traced_fetchrow(
        self, held: _Held, guarded: str, args: Sequence[Any], organization_id: uuid.UUID
    ) -> asyncpg.Record | None:
        """The statement in a client span of its own (in a traced request), by asyncpg's own
        method rather than its instrumentation's wrapper (decision 0038)."""
        with tracing.client_call("SELECT", {**self._traced, "db.query.text": guarded}):
            fetchrow = tracing.untraced(held.connection.fetchrow)
            row: asyncpg.Record | None = await fetchrow(guarded, *args, str(organization_id))
        return row

    async def _take(self, organization_id: uuid.UUID) -> _Held:
        deadline = time.monotonic() + self._wait_seconds
        while True:
            if self._closed:
                raise DatabaseUnavailable("the statement pool is closed")
            held = self._idle_one(organization_id)
            if held is not None:
                return held
            if self._open < self.size:
                self._open += 1
                try:
                    return await self._new_connection()
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable("no database connection free in time")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                raise DatabaseUnavailable("no database connection free in time") from None
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _idle_one(self, organization_id: uuid.UUID) -> _Held | None:
        if not self._idle_count:
            return None
        group = self._idle.get(organization_id)
        if not group:
            group = next(group for group in self._idle.values() if group)
        self._idle_count -= 1
        return group.pop()

    async def _new_connection(self) -> _Held:
        # ``connect`` says a server that is not there as DatabaseUnavailable.
        connection: asyncpg.Connection = await self._connect_fn(
            self.url,
            server_settings=self._server_settings,
            timeout=self._connect_seconds,
            command_timeout=self._command_seconds,
        )
        listening_since = None
        if self._listen is not None:
            try:
                await connection.add_listener(*self._listen)
            except BaseException as exc:
                connection.terminate()
                if isinstance(exc, Exception) and _lost(exc):
                    raise DatabaseUnavailable(
                        f"database unavailable ({type(exc).__name__})"
                    ) from exc
                raise
            listening_since = time.monotonic()
        return _Held(connection, listening_since)

    def _give_back(self, held: _Held) -> None:
        now = time.monotonic()
        if self._closed or now - held.born > RECYCLE_SECONDS or held.connection.is_closed():
            self._drop(held)
            return
        held.idle_since = now
        self._idle.setdefault(held.organization, []).append(held)
        self._idle_count += 1
        self._wake()

    def _drop(self, held: _Held) -> None:
        if not held.connection.is_closed():
            held.connection.terminate()
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def status(self) -> dict[str, int]:
        return {"size": self.size, "open": self._open, "idle": self._idle_count}

    async def close(self) -> None:
        """Close every idle connection; those in use are closed when they come back."""
        self._closed = True
        idle = [held for group in self._idle.values() for held in group]
        self._idle.clear()
        self._idle_count = 0
        for held in idle:
            self._open -= 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(held.connection.close(), 2.0)
            if not held.connection.is_closed():
                held.connection.terminate()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class _NotItsOrganization(Exception):
    """The statement ran in a session whose organization setting is not the one set."""


_GUARDED: dict[tuple[str, int], str] = {}


def _span_attributes(url: str) -> dict[str, Any]:
    """What a statement's client span says of the server (the stable database semantic
    conventions), from the pool's URL: the statement's span is made here, not by asyncpg's
    instrumentation, which splits the whole statement text to name its span (decision 0038)."""
    parts = urlsplit(url)
    attributes: dict[str, Any] = {"db.system.name": "postgresql", "db.operation.name": "SELECT"}
    if parts.path.strip("/"):
        attributes["db.namespace"] = parts.path.strip("/")
    if parts.hostname:
        attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port or 5432
    return attributes


def _guarded(text: str, count: int) -> str:
    """``text`` (``SELECT <expression>``) answering only in a session whose organization
    setting is the one bound last (``$count+1``), NULL anywhere else: the statement checks
    what row-level security reads, in its own snapshot and session."""
    found = _GUARDED.get((text, count))
    if found is None:
        if not text.startswith("SELECT "):
            raise ValueError("a planned read is one SELECT of one expression")
        found = (
            f"SELECT CASE WHEN current_setting('prism.org_id', true) = ${count + 1} "
            f"THEN {text[len('SELECT ') :]} END"
        )
        if len(_GUARDED) >= 1024:
            del _GUARDED[next(iter(_GUARDED))]
        _GUARDED[(text, count)] = found
    return found


def _lost(exc: Exception) -> bool:
    return isinstance(exc, _NotItsOrganization | OSError | TimeoutError) or unavailable(exc)
