"""The outbox relay: publishes every organization's events to Kafka, in order, at least once.

A pass asks which organizations have events past the relay's cursor, and for each one (a few
at a time) runs one transaction: lock the organization's cursor ``FOR UPDATE SKIP LOCKED``
(another relay holding it means that relay owns the stream now: skip it), read the next batch
in sequence order, publish it and wait for the brokers' acknowledgement of all of it, move the
cursor past it, commit. A relay killed mid-batch never moved the cursor: the next owner sends
that batch again (the only duplicates), and nothing is lost. Brokers away: the batch fails, the
transaction rolls back, and the relay retries with backoff while the outbox grows; the API
never waits on Kafka. The relay also prunes what every consumer has passed, and writes each
active organization's metrics snapshot to system-metrics every interval (one relay of all
that run wins each interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from prism.config import Settings
from prism.db.engine import Database, url_for_asyncpg
from prism.db.notify import Listener
from prism.events import catalog
from prism.models import outbox as models
from prism.models.outbox import Stored
from prism.observability import (
    OUTBOX_BATCH_SECONDS,
    OUTBOX_BATCHES,
    OUTBOX_LAG_EVENTS,
    OUTBOX_LAG_SECONDS,
    OUTBOX_PRUNED,
    OUTBOX_PUBLISHED,
)

log = structlog.get_logger("prism.events")
CONSUMER = "kafka"
# Organizations looked at per pass, and published at once.
PENDING_PER_PASS = 200
CONCURRENCY = 4
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
PRUNE_EVERY_SECONDS = 60.0
# Lag gauges and the snapshot's turn are looked at this often, not after every batch.
MAINTAIN_EVERY_SECONDS = 1.0
PRUNE_BATCH = 10_000


class Publisher(Protocol):
    async def publish(self, events: Sequence[Stored]) -> None: ...

    async def close(self) -> None: ...


async def observe_lag(db: Database, consumer: str = CONSUMER) -> models.Lag:
    """Set the lag gauges from the database (cheap: one row per organization's head)."""
    async with db.transaction(None) as session:
        lag = await models.lag(session, consumer)
    OUTBOX_LAG_EVENTS.set(lag.events)
    age = (datetime.now(UTC) - lag.oldest).total_seconds() if lag.oldest else 0.0
    OUTBOX_LAG_SECONDS.set(max(age, 0.0))
    return lag


def snapshot_draft(activity: models.Activity, window_seconds: float, now: datetime) -> models.Draft:
    """The system-metrics event of one organization's figures over the window."""
    data = {
        "organizationId": str(activity.organization_id),
        "windowSeconds": window_seconds,
        "jobs": catalog.safe_value(activity.jobs),
        "analyses": activity.analyses,
        "documentsAnalyzed": activity.documents_analyzed,
        "analysisSecondsAvg": activity.analysis_seconds_avg,
        "analysisSecondsP95": activity.analysis_seconds_p95,
        "tokensUsed": activity.tokens,
        "costUsd": activity.cost_usd,
    }
    return catalog.envelope(
        event_id=uuid.uuid4(),
        organization_id=activity.organization_id,
        type=catalog.METRICS_SNAPSHOT,
        topic=catalog.SYSTEM_METRICS,
        time=now,
        subject=None,
        classification=None,
        department=None,
        data=data,
    )


class Relay:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        publisher: Publisher,
        *,
        consumer: str = CONSUMER,
        batch_size: int | None = None,
        concurrency: int = CONCURRENCY,
        max_backoff_seconds: float = BACKOFF_MAX_SECONDS,
    ) -> None:
        self.db = db
        self.settings = settings
        self.publisher = publisher
        self.consumer = consumer
        self.batch_size = batch_size or settings.events_batch_size
        self.concurrency = concurrency
        self.max_backoff = max_backoff_seconds
        self.published = 0
        self._wake = asyncio.Event()
        self._pruned_at = 0.0
        self._maintained_at = 0.0

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set (the batch in flight finishes or is rolled back)."""
        listener = Listener(
            url_for_asyncpg(self.db.engine.url.render_as_string(hide_password=False)),
            models.CHANNEL,
            lambda _payload: self._wake.set(),
            on_connect=self._wake.set,
        )
        await listener.start()
        log.info("outbox relay started", consumer=self.consumer, batch=self.batch_size)
        delay = BACKOFF_FIRST_SECONDS
        registered = False
        try:
            while not stop.is_set():
                try:
                    if not registered:
                        await self.register()
                        registered = True
                    moved = await self.pass_once()
                    await self.maintain()
                    delay = BACKOFF_FIRST_SECONDS
                except Exception as exc:  # noqa: BLE001 - logged; retried with backoff
                    OUTBOX_BATCHES.labels("failed").inc()
                    log.warning(
                        "outbox relay pass failed; retrying",
                        error=type(exc).__name__,
                        detail=str(exc)[:200],
                        retry_in=round(delay, 2),
                    )
                    await _wait(stop, delay)
                    delay = min(delay * 2, self.max_backoff) * random.uniform(0.8, 1.2)  # noqa: S311
                    continue
                if moved == 0:
                    self._wake.clear()
                    await _wait_any(stop, self._wake, self.settings.events_poll_seconds)
        finally:
            await listener.stop()
            await self.publisher.close()
            log.info("outbox relay stopped", consumer=self.consumer, published=self.published)

    async def register(self) -> None:
        async with self.db.transaction(None) as session:
            await models.register_consumer(session, self.consumer)

    async def pass_once(self) -> int:
        """One batch of each organization with events pending (a few at a time); how many
        events were published."""
        async with self.db.transaction(None) as session:
            pending = await models.pending_organizations(session, self.consumer, PENDING_PER_PASS)
        if not pending:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def one(organization_id: uuid.UUID) -> int:
            async with gate:
                return await self.publish_organization(organization_id)

        # Every batch of the pass ends (acknowledged, or failed and rolled back) before the pass
        # does: a failed one closed the producer the others shared, and nothing sent by it may
        # still be on its way when the next pass sends again.
        outcomes = await asyncio.gather(
            *(one(p.organization_id) for p in pending), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(o for o in outcomes if isinstance(o, int))

    async def publish_organization(self, organization_id: uuid.UUID) -> int:
        """Publish the organization's next batch if no other relay holds its stream."""
        started = time.perf_counter()
        async with self.db.transaction(organization_id) as session:
            last = await models.claim_stream(session, self.consumer, organization_id)
            if last is None:
                return 0
            batch = await models.read_after(session, organization_id, last, self.batch_size)
            if not batch:
                return 0
            await self.publisher.publish(batch)
            await models.advance_cursor(session, self.consumer, organization_id, batch[-1].sequence)
        OUTBOX_BATCH_SECONDS.observe(time.perf_counter() - started)
        OUTBOX_BATCHES.labels("published").inc()
        for topic, count in Counter(e.topic for e in batch).items():
            OUTBOX_PUBLISHED.labels(topic).inc(count)
        self.published += len(batch)
        return len(batch)

    async def drain(self) -> int:
        """Publish until nothing is pending (tests, `prism events relay --once`)."""
        total = 0
        while moved := await self.pass_once():
            total += moved
        return total

    # --- upkeep --------------------------------------------------------------------------------

    async def maintain(self) -> None:
        if time.monotonic() - self._maintained_at < MAINTAIN_EVERY_SECONDS:
            return
        self._maintained_at = time.monotonic()
        await observe_lag(self.db, self.consumer)
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            await self.prune()
        if self.settings.events_snapshot_seconds > 0:
            await self.snapshot()

    async def prune(self) -> int:
        before = datetime.now(UTC) - timedelta(hours=self.settings.outbox_retention_hours)
        total = 0
        while True:
            async with self.db.transaction(None) as session:
                pruned = await models.prune(session, before, PRUNE_BATCH)
            total += pruned
            OUTBOX_PRUNED.inc(pruned)
            if pruned < PRUNE_BATCH:
                return total

    async def snapshot(self, *, force: bool = False) -> int:
        """Each active organization's metrics snapshot, when this relay wins the interval;
        how many were written."""
        window = self.settings.events_snapshot_seconds or 60.0
        async with self.db.transaction(None) as session:
            if not (await models.snapshot_due(session, self.consumer, window) or force):
                return 0
            now = datetime.now(UTC)
            figures = await models.activity(session, now - timedelta(seconds=window))
        for activity in figures:
            async with self.db.transaction(activity.organization_id) as session:
                await models.append_event(session, snapshot_draft(activity, window, now))
        return len(figures)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
