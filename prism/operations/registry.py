"""Which document a request runs: its text, or a persisted query named by its sha256.

Two kinds of persisted query: *registered* operations (the safelist, pushed by operators and
kept in PostgreSQL) and *automatic* ones (Apollo's APQ protocol: a client sends the hash, and
the text once when the server says PERSISTED_QUERY_NOT_FOUND; kept in the cache store)."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from prism.cache.store import Store
from prism.db.engine import Database
from prism.errors import BadUserInput, PersistedQueryNotFound, PersistedQueryRequired
from prism.models.registered_operations import find_operation, operation_hash

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# How long "this hash is not registered" is remembered: an operation pushed while a server
# runs is accepted by it at most this much later, if a client had asked for it before.
NEGATIVE_TTL_SECONDS = 30.0


@dataclass(frozen=True)
class ResolvedOperation:
    query: str | None
    sha256: str | None = None
    # One of the registered operations (the safelist): may be cached and run by BI tokens.
    registered: bool = False
    # An automatic persisted query sent with its text: stored (``remember``) only once the
    # request is accepted (valid, within the limits and the caller's rate limit), so a
    # refused or rate-limited caller writes nothing.
    unstored: bool = False


class OperationRegistry:
    def __init__(self, db: Database, store: Store, *, apq_ttl_seconds: int) -> None:
        self._db = db
        self._store = store
        self._apq_ttl = apq_ttl_seconds
        self._known: OrderedDict[str, str | None] = OrderedDict()
        self._unknown_since: dict[str, float] = {}

    async def registered(self, sha256: str) -> str | None:
        """The registered operation with this hash (cached in process; texts never change)."""
        if sha256 in self._known:
            self._known.move_to_end(sha256)
            return self._known[sha256]
        missed = self._unknown_since.get(sha256)
        if missed is not None and time.monotonic() - missed < NEGATIVE_TTL_SECONDS:
            return None
        async with self._db.transaction(None) as session:
            row = await find_operation(session, sha256)
        if row is None:
            if len(self._unknown_since) > 10_000:
                self._unknown_since.clear()
            self._unknown_since[sha256] = time.monotonic()
            return None
        self._unknown_since.pop(sha256, None)
        self._known[sha256] = row.document
        while len(self._known) > 10_000:
            self._known.popitem(last=False)
        return row.document

    async def resolve(
        self, query: str | None, extensions: dict[str, Any] | None, *, registered_only: bool
    ) -> ResolvedOperation:
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if registered_only:
                raise PersistedQueryRequired(
                    "Only registered operations are accepted here: send "
                    "`extensions.persistedQuery.sha256Hash` of one (see `prism operations`)."
                )
            return ResolvedOperation(query)
        digest = _hash_of(persisted)
        text = await self.registered(digest)
        if text is not None:
            if query is not None and operation_hash(query) != digest:
                raise _mismatch()
            return ResolvedOperation(text, digest, registered=True)
        if registered_only:
            raise PersistedQueryRequired(
                "This operation is not registered, and only registered operations are "
                "accepted here."
            )
        if query is not None:
            if operation_hash(query) != digest:
                raise _mismatch()
            return ResolvedOperation(query, digest, unstored=True)
        stored = await self._store.get(f"apq:{digest}")
        if stored is None:
            # Apollo clients look for this exact message, then resend with the query.
            raise PersistedQueryNotFound("PersistedQueryNotFound")
        return ResolvedOperation(stored.decode(), digest)

    async def remember(self, resolved: ResolvedOperation | None) -> None:
        """Store an automatic persisted query whose request was accepted."""
        if resolved is None or not resolved.unstored or resolved.query is None:
            return
        assert resolved.sha256 is not None
        await self._store.set(f"apq:{resolved.sha256}", resolved.query.encode(), self._apq_ttl)


def _hash_of(persisted: object) -> str:
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise BadUserInput("`extensions.persistedQuery` needs `version: 1` and `sha256Hash`.")
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise BadUserInput("`persistedQuery.sha256Hash` is 64 lowercase hexadecimal digits.")
    return digest


def _mismatch() -> BadUserInput:
    return BadUserInput("`persistedQuery.sha256Hash` is not the sha256 of the query sent.")
