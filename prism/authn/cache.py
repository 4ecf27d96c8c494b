"""Verified bearer credentials, remembered for a few seconds so a request need not open a
transaction to learn who it is.

What is remembered: an API token's digest, or a signed-in session (user, session), with the
``Principal`` the database said it is. Nothing is trusted that could have changed since:

- every change that ends or alters a credential (a token revoked, a session signed out or
  revoked by a replayed refresh token, a user deactivated, erased, or given another role,
  clearance or department) notifies ``CHANNEL`` from its own transaction (triggers of
  migration 0017), and each process forgets everything it remembers when it hears it;
- before a remembered answer is used, a round trip on the LISTEN connection that started
  after the request arrived (``SELECT 1``, shared by the requests waiting at the same time)
  has come back: PostgreSQL sends a listener the notifications of every transaction committed
  before that query ran ahead of its answer, so a change committed before the request arrived
  has been heard, in this process and in every other;
- when the LISTEN connection is down (or that round trip fails) nothing remembered is used
  and nothing is remembered: every request asks the database, as without the cache;
- an answer read while a notification arrived is not remembered (it may predate the change);
- the lean path may use a remembered answer first and confirm it afterwards (``Provisional``,
  ``confirm``, decision 0037): its one statement runs on a connection that has listened on
  ``CHANNEL`` since before the answer was verified, so a change committed before the
  statement has been heard when its result comes back, and the answer is thrown away if one
  was; where that cannot be said (no statement ran, or its connection listens since later),
  the round trip above is made before anything is sent, and a round trip that finds the
  answer still held counts as verifying it again (connections opened since confirm it
  without one);
- an entry lives at most ``ttl`` seconds, and never past the token's or the user's access
  expiry; the number of entries is bounded (the oldest go first).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

import structlog

from prism.authz.principal import Principal
from prism.db.notify import Listener

log = structlog.get_logger("prism.authn")
CHANNEL = "prism_credentials"
DEFAULT_SIZE = 10_000
# A LISTEN connection that does not answer within this is not waited for: the request asks
# the database instead (which has its own command timeout), so a frozen server costs a
# request this much more at most.
ROUND_TRIP_SECONDS = 1.0


@dataclass(frozen=True)
class Verified:
    """A credential the database accepted, and until when (epoch seconds) it may be
    remembered at most (its own or its user's expiry)."""

    principal: Principal
    expires: datetime | None = None


@dataclass
class _Entry:
    principal: Principal
    until: float
    # When (monotonic) the database was asked, or a round trip found the entry still held: a
    # change committed after it was notified. Advanced in place (``_still_held``), so the
    # requests that waited on the same round trip still find the entry they were given.
    verified_at: float


@dataclass
class Provisional:
    """A request that confirms a remembered answer after its statement (``confirm``), not
    before using it: set in ``PROVISIONAL`` around its authentication."""

    used: bool = False  # a remembered answer was given out unconfirmed
    generation: int = 0
    verified_at: float = 0.0
    key: bytes = b""


PROVISIONAL: ContextVar[Provisional | None] = ContextVar("prism_provisional", default=None)


def _epoch(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else float("inf")


class CredentialCache:
    """Principals of verified credentials, kept true by ``CHANNEL``'s notifications."""

    def __init__(self, url: str, *, ttl_seconds: float, size: int = DEFAULT_SIZE) -> None:
        self.ttl = ttl_seconds
        self.size = size
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # Bumped by every notification and every (re)connect of the LISTEN connection.
        self.generation = 0
        self.listener = Listener(url, CHANNEL, self._changed, on_connect=self.forget)
        self._queued: asyncio.Future[bool] | None = None
        self._pinging: asyncio.Task[None] | None = None
        self.hits = 0

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        if self._pinging is not None:
            self._pinging.cancel()
        await self.listener.stop()
        self.forget()

    def _changed(self, _payload: str) -> None:
        self.forget()

    def forget(self) -> None:
        """Forget every remembered credential (a change was notified, or notifications may
        have been missed)."""
        self.generation += 1
        self._entries.clear()

    @property
    def trusted(self) -> bool:
        return self.ttl > 0 and self.listener.connected

    async def principal(self, key: bytes, verify: Callable[[], Awaitable[Verified]]) -> Principal:
        """The principal of credential ``key``: remembered if it may be, else ``verify()``
        (the database's answer; Unauthenticated is raised through and never remembered)."""
        if not self.trusted:
            return (await verify()).principal
        entry = self._entries.get(key)
        if entry is not None:
            if entry.until <= time.time():
                self._entries.pop(key, None)
            elif (pending := PROVISIONAL.get()) is not None:
                pending.used = True
                pending.generation = self.generation
                pending.verified_at = entry.verified_at
                pending.key = key
                self.hits += 1
                return entry.principal
            else:
                asked = time.monotonic()
                if await self._heard_up_to_now() and self._entries.get(key) is entry:
                    # Still there after the round trip: no change was notified meanwhile.
                    self._still_held(key, entry, asked)
                    self.hits += 1
                    return entry.principal
        generation = self.generation
        asked = time.monotonic()
        verified = await verify()
        if generation == self.generation and self.trusted:
            until = min(time.time() + self.ttl, _epoch(verified.expires))
            self._entries[key] = _Entry(verified.principal, until, asked)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return verified.principal

    def changed(self, _connection: object, _pid: int, _channel: str, _payload: str) -> None:
        """A notification heard on another connection (asyncpg's listener signature)."""
        self.forget()

    async def confirm(self, pending: Provisional, heard_since: float | None) -> bool:
        """Whether the answer ``pending`` gave out unconfirmed still held when the request's
        statement ran. ``heard_since``: since when (monotonic) the connection that ran the
        statement has listened on ``CHANNEL`` (None: no statement, or not listening).

        A connection listening since before the answer was verified has heard, by the time
        its statement's result arrives, every change committed before the statement (the
        notifications come ahead of the result): nothing heard since the answer was given
        out means nothing changed. Otherwise the round trip of ``principal`` decides."""
        if not pending.used:
            return True
        if self.generation != pending.generation:
            return False
        if heard_since is not None and heard_since < pending.verified_at:
            return True
        asked = time.monotonic()
        if not (await self._heard_up_to_now() and self.generation == pending.generation):
            return False
        entry = self._entries.get(pending.key)
        if entry is not None and entry.verified_at == pending.verified_at:
            self._still_held(pending.key, entry, asked)
        return True

    def _still_held(self, key: bytes, entry: _Entry, asked: float) -> None:
        """``entry`` held when a round trip that started after ``asked`` came back with
        nothing heard: it is as good as verified at ``asked``, so a connection listening
        since before then confirms it without a round trip of its own (else a connection
        opened after the credential was verified would need one per request until the
        entry expires)."""
        if self._entries.get(key) is entry and asked > entry.verified_at:
            entry.verified_at = asked

    async def _heard_up_to_now(self) -> bool:
        """True once a round trip on the LISTEN connection that started after this call has
        come back (so every notification committed before it has been delivered); False
        when there is no such connection or the round trip failed."""
        if self._queued is None:
            self._queued = asyncio.get_running_loop().create_future()
        waiter = self._queued
        if self._pinging is None or self._pinging.done():
            self._pinging = asyncio.create_task(self._ping())
        return await asyncio.shield(waiter)

    async def _ping(self) -> None:
        while self._queued is not None:
            waiter, self._queued = self._queued, None
            ok = await self.listener.round_trip(ROUND_TRIP_SECONDS)
            if not waiter.done():
                waiter.set_result(ok)
