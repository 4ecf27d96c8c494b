"""Which document a request runs: its text, or a persisted query named by its sha256.

Two kinds of persisted query: *registered* operations (the safelist, kept in PostgreSQL: an
operator's global ones, and each organization's own, registered by its ADMIN) and *automatic*
ones (Apollo's APQ protocol: a client sends the hash, and the text once when the server says
PERSISTED_QUERY_NOT_FOUND; kept in the cache store). A caller held to registered operations
(a BI token) may also send the text of one: it runs as that operation when its normalized
text (whitespace, commas and comments aside) is one its organization may run."""

from __future__ import annotations

import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from prism.cache.store import Store
from prism.db.engine import Database
from prism.errors import BadUserInput, PersistedQueryNotFound, PersistedQueryRequired
from prism.models.registered_operations import (
    find_by_normalized_hash,
    find_operation,
    find_organization_operation,
    normalized_hash,
    operation_hash,
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# How long "this hash is not registered" is remembered: an operation pushed while a server
# runs is accepted by it at most this much later, if a client had asked for it before.
NEGATIVE_TTL_SECONDS = 30.0
# How long a process remembers an organization's operation (found or matched by its text): an
# operation retired elsewhere stops running here at most this much later (at once here).
ORGANIZATION_TTL_SECONDS = 30.0


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
        # (organization, "h" + sha256 or "n" + normalized sha256) -> (text, sha256) or None,
        # and when it was looked up.
        self._organization: OrderedDict[
            tuple[uuid.UUID, str], tuple[float, tuple[str, str] | None]
        ] = OrderedDict()

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

    async def _of_organization(
        self, organization_id: uuid.UUID, key: str
    ) -> tuple[str, str] | None:
        """The organization's operation (or, for a normalized text, any it may run) under
        ``key``: remembered for ORGANIZATION_TTL_SECONDS, found or not."""
        now = time.monotonic()
        remembered = self._organization.get((organization_id, key))
        if remembered is not None and now - remembered[0] < ORGANIZATION_TTL_SECONDS:
            return remembered[1]
        async with self._db.transaction(organization_id) as session:
            if key.startswith("n"):
                found = await find_by_normalized_hash(session, key[1:])
            else:
                text = await find_organization_operation(session, key[1:])
                found = (text, key[1:]) if text is not None else None
        self._organization[(organization_id, key)] = (now, found)
        self._organization.move_to_end((organization_id, key))
        while len(self._organization) > 10_000:
            self._organization.popitem(last=False)
        return found

    def forget(self, organization_id: uuid.UUID) -> None:
        """An organization's operations changed (registered or retired here): look again."""
        for key in [k for k in self._organization if k[0] == organization_id]:
            del self._organization[key]

    async def resolve(
        self,
        query: str | None,
        extensions: dict[str, Any] | None,
        *,
        registered_only: bool,
        organization_id: uuid.UUID | None = None,
    ) -> ResolvedOperation:
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if registered_only:
                matched = await self._matching(query, organization_id)
                if matched is not None:
                    return matched
                raise PersistedQueryRequired(
                    "Only registered operations are accepted here: send "
                    "`extensions.persistedQuery.sha256Hash` of one, or the text of one "
                    "(see `registeredOperations`)."
                )
            return ResolvedOperation(query)
        digest = _hash_of(persisted)
        text = await self.registered(digest)
        if text is None and organization_id is not None:
            own = await self._of_organization(organization_id, "h" + digest)
            text = own[0] if own is not None else None
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

    async def _matching(
        self, query: str | None, organization_id: uuid.UUID | None
    ) -> ResolvedOperation | None:
        """The registered operation whose normalized text is ``query``'s, if the caller's
        organization may run one."""
        if query is None or organization_id is None:
            return None
        normalized = normalized_hash(query)
        if normalized is None:
            return None
        found = await self._of_organization(organization_id, "n" + normalized)
        if found is None:
            return None
        text, digest = found
        return ResolvedOperation(text, digest, registered=True)

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
