"""The per-request context: who calls, one database transaction, the DataLoaders."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from prism.authz.principal import Principal
from prism.authz.secrets import AccessTokens, Passwords
from prism.config import Settings
from prism.errors import Unauthenticated
from prism.jobs.runtime import Pipeline
from prism.models.audit import Actor, RequestMeta, record_event
from prism.models.db import Database, set_organization
from prism.models.notify import Notifications
from prism.models.scope import Scope
from prism.resolvers.loaders import Loaders
from prism.search import Search


@dataclass(frozen=True)
class Services:
    """Process-wide clients, built once in the server's lifespan."""

    settings: Settings
    db: Database
    passwords: Passwords
    access_tokens: AccessTokens
    pipeline: Pipeline
    # Document progress events; None until the server's lifespan starts listening.
    progress: Notifications | None = None

    @property
    def search(self) -> Search:
        return self.pipeline.search

    @property
    def refresh_ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.refresh_token_ttl_seconds)


class RequestTransaction:
    """One connection and one transaction for the whole request, opened on first use.

    Top-level fields and DataLoader batches run concurrently; they take turns on the session
    through a lock, so a request holds at most one pooled connection. A query reads one
    consistent snapshot (REPEATABLE READ); a mutation runs READ COMMITTED and locks the rows
    it changes, so concurrent writers of one organization wait for each other instead of
    failing (a snapshot older than a row's last update cannot update it). The transaction
    commits at the end of the request only if every root field succeeded: a request of
    several mutations is all or nothing, like the `data: null` its client sees when one of
    them fails."""

    def __init__(self, db: Database, organization_id: uuid.UUID | None) -> None:
        self._db = db
        self._organization_id = organization_id
        self._lock = asyncio.Lock()
        self._session: AsyncSession | None = None
        self._on_rollback: list[Callable[[], Awaitable[None]]] = []
        self.isolation = "REPEATABLE READ"

    def for_writes(self) -> None:
        """Run the transaction READ COMMITTED (call before its first statement)."""
        if self._session is not None:
            raise RuntimeError("the transaction has already started")
        self.isolation = "READ COMMITTED"

    def on_rollback(self, undo: Callable[[], Awaitable[None]]) -> None:
        """Undo work outside the database (a stored object) if the transaction does not
        commit."""
        self._on_rollback.append(undo)

    async def _open(self) -> AsyncSession:
        if self._session is None:
            session = self._db.sessionmaker()
            # A query reads one snapshot: a row deleted between two loader batches cannot
            # leave a child without its parent.
            await session.connection(execution_options={"isolation_level": self.isolation})
            await set_organization(session, self._organization_id)
            self._session = session
        return self._session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._lock:
            yield await self._open()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """The session for a mutation (the same transaction; named for the reader)."""
        async with self._lock:
            yield await self._open()

    async def finish(self, *, commit: bool) -> None:
        session, self._session = self._session, None
        undo, self._on_rollback = self._on_rollback, []
        committed = False
        try:
            if session is not None:
                if commit:
                    await session.commit()
                    committed = True
                else:
                    await session.rollback()
        finally:
            if session is not None:
                await session.close()
            if not committed:
                for step in undo:
                    await step()


@dataclass
class Context:
    services: Services
    principal: Principal | None
    meta: RequestMeta
    transaction: RequestTransaction
    loaders: Loaders = field(init=False)
    request: Any = None
    # graphql-transport-ws: the connection_init payload (where a browser puts its token).
    connection_params: dict[str, Any] | None = None
    # Merged into the response's `extensions` (e.g. which search backend answered).
    response_extensions: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.transaction, self.principal.scope() if self.principal else None)

    def authenticate(self, principal: Principal) -> None:
        """Adopt the principal of a WebSocket's connection_init."""
        self.principal = principal
        self.transaction = RequestTransaction(self.services.db, principal.organization_id)
        self.loaders = Loaders(self.transaction, principal.scope())

    async def renew(self) -> None:
        """A fresh transaction and loaders (each event of a long subscription reads current
        rows and holds no connection in between)."""
        await self.transaction.finish(commit=False)
        if self.principal is not None:
            self.authenticate(self.principal)

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Unauthenticated("Sign in or send an API token.")
        return self.principal

    @property
    def scope(self) -> Scope:
        return self.require_principal().scope()

    @property
    def actor(self) -> Actor:
        p = self.principal
        return Actor(user_id=p.user_id, api_token_id=p.api_token_id) if p else Actor()

    async def audit(self, session: AsyncSession, **event: Any) -> None:
        """Record an audit event for the caller, in the mutation's transaction."""
        principal = self.require_principal()
        await record_event(
            session,
            organization_id=principal.organization_id,
            actor=self.actor,
            meta=self.meta,
            **event,
        )
