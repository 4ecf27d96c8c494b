"""The per-request context: who calls, one database transaction, the DataLoaders."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from prism.authn.bearer import authenticate_bearer
from prism.authz.principal import Principal
from prism.cache.store import Bucket, Rate
from prism.db.engine import (
    Database,
    Statement,
    driver_text,
    fetch_row,
    set_organization_in,
)
from prism.db.faults import committing_writes, unavailable
from prism.documents.reads import record_restricted_reads
from prism.errors import RateLimited, ServiceUnavailable, Unauthenticated
from prism.execution.loaders import Loaders
from prism.models.audit import Actor, RequestMeta
from prism.models.enums import Classification
from prism.models.registered_operations import data_version
from prism.models.scope import Scope
from prism.operations.registry import ResolvedOperation
from prism.services import Services

log = structlog.get_logger("prism.audit")
# A token holding `bi:read` and nothing beyond these read scopes is a BI tool's: it runs
# registered operations only (what it may read is still what its other scopes allow).
BI_SCOPES = frozenset({"bi:read", "documents:read", "search:read", "audit:read"})


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
        self._on_commit: list[Callable[[], None]] = []
        self.isolation = "REPEATABLE READ"
        # Set by the request's last ``finish``: a DataLoader batch still scheduled when the
        # request ended (a sibling field failed) must not open a session nobody would close.
        self._finished = False
        # Whether a request whose only statement is a planned read sends it alone, outside
        # a transaction block (``single_statement``), and whether it has.
        self._single = False
        self._single_sent = False
        # Since when the connection of that statement listens for credential changes.
        self.heard_since: float | None = None

    def single_statement(self) -> None:
        """The request's one statement is a planned read (``fetch_row``), sent alone on the
        statement pool's connection with no transaction block: one statement's snapshot is
        the consistent read (the lean path). Any other statement, or a second one, is
        refused (RuntimeError) unless an ORM transaction was opened first."""
        self._single = True

    @property
    def writes(self) -> bool:
        """The transaction is a mutation's."""
        return self.isolation == "READ COMMITTED"

    def for_writes(self) -> None:
        """Run the transaction READ COMMITTED (call before its first statement)."""
        if self._session is not None:
            raise RuntimeError("the transaction has already started")
        self.isolation = "READ COMMITTED"

    def on_rollback(self, undo: Callable[[], Awaitable[None]]) -> None:
        """Undo work outside the database (a stored object) if the transaction does not
        commit."""
        self._on_rollback.append(undo)

    def on_commit(self, then: Callable[[], None]) -> None:
        """Run ``then`` once the transaction has committed (a process-local cache forgets
        what the change made stale; before the commit, a concurrent request could remember
        the state the change replaces)."""
        self._on_commit.append(then)

    async def _open(self) -> AsyncSession:
        if self._finished:
            raise RuntimeError("the request's transaction has ended")
        if self._single_sent:
            raise RuntimeError("the request's one statement has been sent")
        if self._session is None:
            session = self._db.sessionmaker()
            # A query reads one snapshot: a row deleted between two loader batches cannot
            # leave a child without its parent.
            connection = await session.connection(
                execution_options={"isolation_level": self.isolation}
            )
            await set_organization_in(connection, self._organization_id)
            self._session = session
        return self._session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._lock:
            yield await self._open()

    async def fetch_row(
        self, statement: Statement, values: dict[str, Any]
    ) -> asyncpg.Record | None:
        """One row of ``statement``: sent alone on the statement pool when the request was
        made ``single_statement`` and has no ORM transaction, else in the request's
        transaction (opened, with its isolation and organization, if it was not) on the
        driver's connection; no ORM in between either way."""
        async with self._lock:
            pool = self._db.statements
            if (
                self._single
                and self._session is None
                and not self.writes
                and pool is not None
                and self._organization_id is not None
            ):
                if self._single_sent:
                    raise RuntimeError("the request's one statement has been sent")
                self._single_sent = True
                text, names = driver_text(statement)
                row, self.heard_since = await pool.fetch_row(
                    self._organization_id, text, [values[name] for name in names]
                )
                return row
            return await fetch_row(await self._open(), statement, values)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """The session for a mutation (the same transaction; named for the reader)."""
        async with self._lock:
            yield await self._open()

    async def finish(self, *, commit: bool, final: bool = False) -> None:
        """End the transaction; ``final``: the request is over, nothing opens another."""
        self._finished = self._finished or final
        session, self._session = self._session, None
        undo, self._on_rollback = self._on_rollback, []
        then, self._on_commit = self._on_commit, []
        committed = False
        # The connection lost during COMMIT: the writes may have been committed, so nothing
        # they refer to may be undone (an orphaned object beats a row without its file).
        unknown = False
        try:
            if session is not None:
                if commit:
                    try:
                        if self.writes:
                            async with committing_writes():
                                await session.commit()
                        else:
                            await session.commit()
                    except Exception as exc:
                        unknown = self.writes and unavailable(exc)
                        raise
                    committed = True
                else:
                    await session.rollback()
        finally:
            if session is not None:
                await session.close()
            if unknown and undo:
                log.warning("commit outcome unknown; undo steps skipped", steps=len(undo))
            elif not committed:
                for step in undo:
                    await step()
            if committed:
                for call in then:
                    call()


@dataclass
class Context:
    services: Services
    principal: Principal | None
    meta: RequestMeta
    transaction: RequestTransaction
    request: Any = None
    # The HTTP response being prepared (headers set here are sent); None on a WebSocket.
    response: Any = None
    # Root fields the planned statement answered (by response key) when the others are
    # resolved by execution (``prism.execution.planned``); None: execution resolves all.
    planned_roots: dict[str, Any] | None = None
    # graphql-transport-ws: the connection_init payload (where a browser puts its token).
    connection_params: dict[str, Any] | None = None
    # The bearer credential the principal was authenticated from (a JWT or an API token):
    # a long-lived operation or connection checks it again, as a new request would.
    credential: str | None = field(default=None, repr=False)
    # graphql-transport-ws: closes the operation's socket with a code and reason (a stream
    # whose client stopped reading cannot be told otherwise); None over HTTP.
    disconnect: Callable[[int, str], Awaitable[None]] | None = field(default=None, repr=False)
    # Merged into the response's `extensions` (e.g. which search backend answered).
    response_extensions: dict[str, Any] = field(default_factory=dict)

    # Documents whose text this request returned to a RESTRICTED-clearance caller: those
    # that are RESTRICTED are audited at the request's end.
    content_reads: set[uuid.UUID] = field(init=False, default_factory=set)
    # The persisted query the request named, if any; its estimated cost and root fields.
    operation: ResolvedOperation | None = None
    cost: Any = None
    root_fields: list[str] = field(default_factory=list)
    # Whether this request's refusal has been charged to its caller (prism.execution.limits).
    refusal_charged: bool = False
    # Made on first use (a planned request needs none), for the principal and transaction
    # the request has then.
    _loaders: Loaders | None = field(init=False, default=None, repr=False)

    @property
    def loaders(self) -> Loaders:
        """The request's DataLoaders, scoped to its principal, on its transaction."""
        if self._loaders is None:
            self._loaders = Loaders(
                self.transaction,
                self.principal.scope() if self.principal else None,
                self.services.envelope,
            )
        return self._loaders

    def note_content_read(self, document_id: uuid.UUID) -> None:
        """A document's text is being returned. Only RESTRICTED clearance can see RESTRICTED
        documents, so nobody else's reads need a second look (and this stays a set insert on
        the hot path: which documents are RESTRICTED is asked once, at the end)."""
        principal = self.principal
        if principal is not None and principal.clearance is Classification.RESTRICTED:
            self.content_reads.add(document_id)

    async def finish(self, *, commit: bool, final: bool = False) -> None:
        """End the request's transaction (``final``: for good), then record its reads of
        restricted content.

        The reads are recorded in a transaction of their own, whether the request's committed
        or not (what a client was shown has been read). If they cannot be recorded, the
        request fails: restricted content is not handed out unaudited."""
        await self.transaction.finish(commit=commit, final=final)
        reads, self.content_reads = self.content_reads, set()
        if not reads or self.principal is None:
            return
        try:
            async with self.services.db.transaction(self.principal.organization_id) as session:
                await record_restricted_reads(session, self.principal, self.meta, reads)
        except Exception as exc:
            log.error("restricted read not audited", request_id=self.meta.request_id, exc_info=exc)
            raise ServiceUnavailable(
                "The read could not be recorded in the audit log, so its answer is withheld. "
                "Try again."
            ) from exc

    def authenticate(self, principal: Principal, credential: str | None = None) -> None:
        """Adopt a principal (a WebSocket's connection_init, or the same credential checked
        again): a fresh transaction and loaders scoped to it."""
        self.principal = principal
        if credential is not None:
            self.credential = credential
        self.transaction = RequestTransaction(self.services.db, principal.organization_id)
        self._loaders = None

    async def reauthenticate(self) -> Principal:
        """Who the credential is now, by the HTTP requests' path (`authenticate_bearer`): a
        revoked token, a signed-out session or an expired JWT raise Unauthenticated; a
        changed role, clearance or department comes back as it is now."""
        if self.credential is None:
            return self.require_principal()
        return await authenticate_bearer(
            self.services.db,
            self.services.access_tokens,
            self.credential,
            self.services.credentials,
        )

    def for_operation(self, principal: Principal) -> Context:
        """The context of one operation on a long-lived connection: its own principal (just
        authenticated), transaction, loaders and persisted query; nothing of the connection's
        earlier operations carries over."""
        return Context(
            services=self.services,
            principal=principal,
            meta=self.meta,
            transaction=RequestTransaction(self.services.db, principal.organization_id),
            request=self.request,
            connection_params=self.connection_params,
            credential=self.credential,
        )

    async def renew(self) -> None:
        """A fresh transaction and loaders, for the caller as they are now (each event of a
        long subscription reads current rows, under current rights, and holds no connection
        in between). Raises Unauthenticated when the credential no longer holds."""
        await self.finish(commit=False)
        if self.principal is not None:
            self.authenticate(await self.reauthenticate())

    @property
    def registered_only(self) -> bool:
        """Whether this caller may run registered operations only: a BI token always, and
        everyone under PRISM_REGISTERED_OPERATIONS_ONLY."""
        principal = self.principal
        scopes = principal.scopes if principal is not None else None
        bi_only = scopes is not None and "bi:read" in scopes and scopes <= BI_SCOPES
        return bi_only or self.services.settings.registered_operations_only

    async def resolve_operation(
        self, query: str | None, extensions: dict[str, Any] | None
    ) -> ResolvedOperation:
        """The document this request runs: its text, or the persisted query its extensions
        name; a caller held to registered operations gets PERSISTED_QUERY_REQUIRED for
        anything else. Every transport calls this before executing."""
        resolved = await self.services.operations.resolve(
            query,
            extensions,
            registered_only=self.registered_only,
            organization_id=self.principal.organization_id if self.principal else None,
        )
        self.operation = resolved
        return resolved

    async def data_version(self) -> int:
        """The caller's organization's data version, read in the request's transaction: the
        rows the answer then reads are of that same snapshot (a query's transaction is one
        REPEATABLE READ snapshot), so a cached answer is filed under the version it shows."""
        principal = self.require_principal()
        async with self.transaction.read() as session:
            return await data_version(session, principal.organization_id)

    def set_validators(self, etag: str, *, cacheable: bool) -> None:
        """ETag and Cache-Control of an answer to a registered query; 304 when the client's
        copy is current."""
        if self.response is None:
            return
        self.response.headers["ETag"] = etag
        self.response.headers["Cache-Control"] = "private, no-cache"
        self.response.headers["X-Prism-Cache"] = "cacheable" if cacheable else "uncacheable"
        sent = self.request.headers.get("if-none-match") if self.request is not None else None
        if sent is not None and etag in {tag.strip() for tag in sent.split(",")}:
            self.response.status_code = 304

    def rate_limit_headers(self, rate: Rate, bucket: Bucket) -> None:
        if self.response is None:
            return
        self.response.headers["RateLimit-Limit"] = str(rate.capacity)
        self.response.headers["RateLimit-Remaining"] = str(bucket.remaining)
        self.response.headers["RateLimit-Reset"] = str(bucket.reset)
        if not bucket.allowed:
            self.response.headers["Retry-After"] = str(bucket.retry_after)

    @contextmanager
    def retry_after_header(self) -> Iterator[None]:
        """Mirror a RATE_LIMITED error's hint in a `Retry-After` header."""
        try:
            yield
        except RateLimited as exc:
            if self.response is not None:
                self.response.headers["Retry-After"] = str(exc.extensions["retryAfter"])
            raise

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
