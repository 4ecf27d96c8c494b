"""Live event streams: the outbox fanned out to the API process's subscribers.

One LISTEN on ``prism_outbox`` per process (``LiveEvents``); a notification names an
organization whose events were committed. For an organization with subscribers in this process,
one reader (never one per subscriber) reads the new rows under the organization's row-level
security, in sequence order, and hands the same rows to each of its subscribers' buffers. A
subscriber's buffer is bounded: when the next rows do not fit, the reader waits for it to
take what it holds (at most ``pace_seconds``); one that still has no room (its client does
not read) is ended with SUBSCRIBER_TOO_SLOW, so a slow client costs a bounded amount of memory
and delays the others a bounded time, and it resumes with the id of the last event it
received.

A stream (``LiveEvents.stream``) starts after a sequence number: the head (new events only) or a
resume point. It first replays what the outbox holds after it, in batches read by itself, then
joins the organization's readers and reads once more what was committed meanwhile; it drops
what it already delivered. Sequences have no gaps (decision 0026), so a gap means events
were pruned before the stream read them: RESUME_POINT_LOST, never a silent skip. Lost
notifications (LISTEN reconnecting) are covered by reading every organization with
subscribers again after each (re)connect and every ``resync_seconds``.

What a subscriber may see of each event is not decided here (``authz.policy``): this module
hands every event of the organization, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import structlog

from prism.db.engine import Database
from prism.db.faults import log_failure
from prism.db.notify import Listener
from prism.errors import ResumePointLost, ServiceUnavailable, SubscriberTooSlow
from prism.models import outbox as models
from prism.models.outbox import Row

log = structlog.get_logger("prism.events.live")
# Rows read per statement (replay, catch-up and the organizations' readers).
READ_BATCH = 500
RESYNC_SECONDS = 20.0
# How long an organization's reader waits for a subscriber to make room for the next rows
# before that subscriber is ended (its client is not reading): a burst of events does not end
# clients that keep up, and one that does not read delays the others by this at most.
PACE_SECONDS = 1.0


class Subscriber:
    """One stream's bounded buffer of rows handed by its organization's reader."""

    def __init__(self, limit: int, on_overflow: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.on_overflow = on_overflow
        self.rows: deque[Row] = deque()
        self.overflowed = False
        self._ready = asyncio.Event()
        self._taken = asyncio.Event()

    def room(self) -> int:
        return self.limit - len(self.rows)

    async def made_room(self, rows: int, seconds: float) -> None:
        """Wait (at most ``seconds``) until ``rows`` more fit."""
        deadline = time.monotonic() + seconds
        while self.room() < rows and not self.overflowed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._taken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._taken.wait(), left)

    def offer(self, rows: list[Row]) -> None:
        if self.overflowed:
            return
        if len(self.rows) + len(rows) > self.limit:
            # Nothing more is kept for it: it ends with SUBSCRIBER_TOO_SLOW when it next looks.
            self.overflowed = True
            self.rows.clear()
            if self.on_overflow is not None:
                self.on_overflow()
        else:
            self.rows.extend(rows)
        self._ready.set()

    async def take(self) -> list[Row]:
        """Every row buffered (waiting for one); SubscriberTooSlow once it overflowed."""
        while not self.rows and not self.overflowed:
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            raise SubscriberTooSlow(
                f"The event stream fell more than {self.limit} events behind and was ended; "
                "resume with `after` set to the id of the last event received."
            )
        rows = list(self.rows)
        self.rows.clear()
        self._taken.set()
        return rows


class _Organization:
    """An organization's subscribers in this process and its one reader."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.last: int | None = None  # the last sequence handed out (None: not known yet)
        self.ready = asyncio.Event()
        self.failed = False  # its start could not be read (the database is away)
        self.dirty = False
        self.reader: asyncio.Task[None] | None = None


class LiveEvents:
    def __init__(
        self,
        db: Database,
        url: str,
        *,
        buffer: int,
        resync_seconds: float = RESYNC_SECONDS,
        pace_seconds: float = PACE_SECONDS,
    ) -> None:
        self.db = db
        self.buffer = buffer
        self.resync_seconds = resync_seconds
        self.pace_seconds = pace_seconds
        # What the reader reads at once: never more than a subscriber may hold.
        self.read_batch = min(READ_BATCH, buffer)
        self._organizations: dict[uuid.UUID, _Organization] = {}
        self.listener = Listener(url, models.CHANNEL, self._notified, on_connect=self._wake_all)
        self._ticker: asyncio.Task[None] | None = None
        # Rows read by the organizations' readers (what the fan-out costs, for tests).
        self.reads = 0

    async def start(self) -> None:
        await self.listener.start()
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for organization in list(self._organizations.values()):
            if organization.reader is not None:
                organization.reader.cancel()
        await self.listener.stop()

    @property
    def subscribers(self) -> int:
        return sum(len(o.subscribers) for o in self._organizations.values())

    # --- where a stream starts ---------------------------------------------------------------

    async def head(self, organization_id: uuid.UUID) -> int:
        async with self.db.transaction(organization_id) as session:
            return await models.head_sequence(session, organization_id)

    async def resume_point(self, organization_id: uuid.UUID, event_id: uuid.UUID) -> int:
        """The sequence of the organization's event ``event_id``; RESUME_POINT_LOST when the
        outbox does not hold it (pruned after the retention window, or never the
        organization's)."""
        async with self.db.transaction(organization_id) as session:
            found = await models.sequence_of(session, organization_id, event_id)
        if found is None:
            raise _lost()
        return found

    # --- one stream ----------------------------------------------------------------------------

    async def stream(
        self,
        organization_id: uuid.UUID,
        after: int,
        *,
        on_overflow: Callable[[], None] | None = None,
    ) -> AsyncGenerator[list[Row], None]:
        """The organization's events after sequence ``after``, in order, as they come: batches
        of rows, each batch what was read together. ``on_overflow`` is called when the stream
        has fallen too far behind (it raises SubscriberTooSlow when it next looks for rows; a
        stream stuck sending to a client that does not read never looks)."""
        last = after
        async for rows in self._read_from(organization_id, last):
            last = rows[-1].sequence
            yield rows
        async with self._subscribed(organization_id, on_overflow) as subscriber:
            # what was committed between the replay's end and joining the reader
            async for rows in self._read_from(organization_id, last):
                last = rows[-1].sequence
                yield rows
            while True:
                rows = [r for r in await subscriber.take() if r.sequence > last]
                if not rows:
                    continue
                if rows[0].sequence != last + 1:
                    # Not expected (the reader hands everything after where it started), but
                    # the outbox decides: read the gap, or say it is lost.
                    async for filled in self._read_from(organization_id, last, rows[0].sequence):
                        last = filled[-1].sequence
                        yield filled
                    rows = [r for r in rows if r.sequence > last]
                    if rows and rows[0].sequence != last + 1:
                        raise _lost()
                if rows:
                    last = rows[-1].sequence
                    yield rows

    async def _read_from(
        self, organization_id: uuid.UUID, after: int, until: int | None = None
    ) -> AsyncIterator[list[Row]]:
        """Rows after ``after`` (before ``until``), batch by batch, checked to follow on."""
        last = after
        while until is None or last + 1 < until:
            async with self.db.transaction(organization_id) as session:
                rows = await models.read_rows(session, organization_id, last, READ_BATCH)
            if until is not None:
                rows = [r for r in rows if r.sequence < until]
            if not rows:
                return
            if rows[0].sequence != last + 1:
                raise _lost()
            last = rows[-1].sequence
            yield rows
            if len(rows) < READ_BATCH:
                return

    @contextlib.asynccontextmanager
    async def _subscribed(
        self, organization_id: uuid.UUID, on_overflow: Callable[[], None] | None
    ) -> AsyncIterator[Subscriber]:
        subscriber = Subscriber(self.buffer, on_overflow)
        organization = self._organizations.get(organization_id)
        first = organization is None
        if organization is None:
            organization = self._organizations[organization_id] = _Organization()
        organization.subscribers.add(subscriber)
        try:
            if first:
                try:
                    # Where its reader starts: everything committed after this reaches the
                    # subscribers; what came before, each stream reads itself.
                    organization.last = await self.head(organization_id)
                except BaseException:
                    # Whoever waits for this start is refused too; the next stream tries again.
                    organization.failed = True
                    raise
                finally:
                    organization.ready.set()
                if organization.dirty:
                    self._wake(organization_id)
            else:
                await organization.ready.wait()
                if organization.failed:
                    raise ServiceUnavailable("The event stream could not be started; try again.")
            yield subscriber
        finally:
            organization.subscribers.discard(subscriber)
            if (organization.failed or not organization.subscribers) and (
                self._organizations.get(organization_id) is organization
            ):
                del self._organizations[organization_id]
                if organization.reader is not None:
                    organization.reader.cancel()

    # --- the organizations' readers ----------------------------------------------------------

    def _notified(self, payload: str) -> None:
        try:
            organization_id = uuid.UUID(payload)
        except ValueError:
            return
        self._wake(organization_id)

    def _wake_all(self) -> None:
        for organization_id in list(self._organizations):
            self._wake(organization_id)

    def _wake(self, organization_id: uuid.UUID) -> None:
        organization = self._organizations.get(organization_id)
        if organization is None:
            return
        organization.dirty = True
        if not organization.ready.is_set() or organization.failed:
            return  # its reader starts once its start is known
        if organization.reader is None or organization.reader.done():
            organization.reader = asyncio.create_task(self._read(organization_id, organization))

    async def _read(self, organization_id: uuid.UUID, organization: _Organization) -> None:
        try:
            while organization.dirty and organization.subscribers:
                organization.dirty = False
                while organization.subscribers:
                    assert organization.last is not None
                    async with self.db.transaction(organization_id) as session:
                        rows = await models.read_rows(
                            session, organization_id, organization.last, self.read_batch
                        )
                    if not rows:
                        break
                    self.reads += len(rows)
                    organization.last = rows[-1].sequence
                    subscribers = list(organization.subscribers)
                    full = [s for s in subscribers if s.room() < len(rows)]
                    if full:
                        # Clients that keep up make room within the pace; the others end.
                        await asyncio.gather(
                            *(s.made_room(len(rows), self.pace_seconds) for s in full)
                        )
                    for subscriber in subscribers:
                        subscriber.offer(rows)
                    if len(rows) < self.read_batch:
                        break
        except Exception as exc:  # noqa: BLE001 - logged; read again on the next wake or tick
            log_failure(log, "live events read failed", exc)
        finally:
            organization.reader = None

    async def _tick(self) -> None:
        """Read every organization with subscribers again now and then: a notification lost
        without the LISTEN connection's loss being noticed yet delays events by this at most."""
        while True:
            await asyncio.sleep(self.resync_seconds)
            self._wake_all()


def _lost() -> ResumePointLost:
    return ResumePointLost(
        "The events after the resume point are no longer all in the outbox (kept "
        "PRISM_OUTBOX_RETENTION_HOURS); subscribe again without `after` and read the current "
        "state."
    )
