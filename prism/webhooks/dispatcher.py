"""The webhook dispatcher: fans the outbox out to endpoints, and sends each delivery.

It is a consumer of the outbox (``webhooks``) with a cursor per organization that has (had) an
endpoint, woken by the outbox's NOTIFY. A fan-out is one transaction per organization: lock
its cursor ``FOR UPDATE SKIP LOCKED`` (another dispatcher holding it owns the stream now), read
the next events, write one PENDING delivery per event and enabled endpoint that subscribes to
its type, was created before it and may carry it (``clearance``), move the cursor, commit.
Sending is apart: a dispatcher leases due attempts of every organization
(``prism_webhook_claim``: ``FOR UPDATE SKIP LOCKED``, one lease each), and for each opens the
secret, checks the URL again (``guard``), signs (``signing``) and POSTs the event with no
transaction open, then records the outcome where the lease still holds it. A failed attempt
is retried with exponential backoff and jitter until PRISM_WEBHOOK_RETRY_HOURS after the
first; an endpoint whose attempts all failed for PRISM_WEBHOOK_DISABLE_AFTER_HOURS is disabled,
and the ``prism.webhook.disabled`` event tells its organization. A dispatcher killed mid-send
loses nothing: the lease runs out and the attempt is made again (receivers deduplicate on
``webhook-id``, the event's id).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import structlog

from prism import audit
from prism.config import Settings
from prism.db.engine import url_for_asyncpg
from prism.db.notify import Listener
from prism.models import outbox
from prism.models import webhooks as models
from prism.models.enums import WebhookDeliveryStatus
from prism.models.webhooks import Claimed, WebhookDelivery
from prism.observability import WEBHOOK_DELIVERIES, WEBHOOK_DELIVERY_SECONDS
from prism.services import Services
from prism.webhooks import clearance, guard, signing
from prism.webhooks.endpoints import delivery, open_secrets, subscribes

log = structlog.get_logger("prism.webhooks")
STREAMS_PER_PASS = 200
CONCURRENCY = 8
CLAIM_BATCH = 32
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
PRUNE_EVERY_SECONDS = 300.0
PRUNE_BATCH = 10_000


def backoff(first: float, ceiling: float, attempt: int) -> timedelta:
    """Exponential, jittered: uniform in [d/2, d] with d = first · 2^(attempt-1), at most
    ``ceiling``."""
    longest = min(ceiling, first * 2 ** max(attempt - 1, 0))
    return timedelta(seconds=random.uniform(longest / 2, longest))  # noqa: S311 - not crypto


def next_attempt(
    settings: Settings, now: datetime, window_start: datetime, attempt: int
) -> datetime | None:
    """When a failed attempt is retried: after a backoff, and once more at the end of the
    retry window when the backoff would pass it (so retries span the whole window); None
    once the window is over."""
    end = window_start + timedelta(hours=settings.webhook_retry_hours)
    candidate = now + backoff(
        settings.webhook_retry_first_seconds, settings.webhook_retry_max_interval_seconds, attempt
    )
    if candidate <= end:
        return candidate
    return end if now < end else None


# Attributes of an event for Prism's own consumers (its trace context), not for partners.
INTERNAL_ATTRIBUTES = ("traceparent", "tracestate")


def external(event: bytes) -> str:
    """The event as a partner receives it: without Prism's internal attributes."""
    value = orjson.loads(event)
    if not any(name in value for name in INTERNAL_ATTRIBUTES):
        return event.decode()
    for name in INTERNAL_ATTRIBUTES:
        value.pop(name, None)
    return orjson.dumps(value).decode()


class Dispatcher:
    def __init__(
        self, services: Services, *, concurrency: int = CONCURRENCY, batch_size: int | None = None
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.db = services.db
        self.concurrency = concurrency
        self.batch_size = batch_size or self.settings.events_batch_size
        self.sent = 0
        self._wake = asyncio.Event()
        self._pruned_at = 0.0

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set (attempts in flight finish)."""
        url = url_for_asyncpg(self.db.engine.url.render_as_string(hide_password=False))
        listeners = [
            Listener(url, channel, lambda _payload: self._wake.set(), on_connect=self._wake.set)
            for channel in (outbox.CHANNEL, models.CHANNEL)
        ]
        for listener in listeners:
            await listener.start()
        log.info("webhook dispatcher started")
        delay = BACKOFF_FIRST_SECONDS
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    moved = await self.fan_out()
                    sent = await self.send_due()
                    await self.maintain()
                    delay = BACKOFF_FIRST_SECONDS
                except Exception as exc:  # noqa: BLE001 - logged; retried with backoff
                    log.warning(
                        "webhook dispatch failed; retrying",
                        error=type(exc).__name__,
                        detail=str(exc)[:200],
                        retry_in=round(delay, 2),
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(delay * 2, BACKOFF_MAX_SECONDS) * random.uniform(0.8, 1.2)  # noqa: S311
                    continue
                if moved == 0 and sent == 0:
                    await _wait_any(stop, self._wake, self.settings.events_poll_seconds)
        finally:
            for listener in listeners:
                await listener.stop()
            log.info("webhook dispatcher stopped", sent=self.sent)

    async def drain(self) -> int:
        """Fan out and send until nothing is pending or due (tests, `--once`); attempts sent."""
        total = 0
        while True:
            moved = await self.fan_out()
            sent = await self.send_due()
            total += sent
            if moved == 0 and sent == 0:
                return total

    # --- fan-out -------------------------------------------------------------------------------

    async def fan_out(self) -> int:
        """One batch of each organization's new events into deliveries; events read."""
        async with self.db.transaction(None) as session:
            streams = await models.pending_streams(session, STREAMS_PER_PASS)
        total = 0
        for stream in streams:
            total += await self.fan_out_organization(stream.organization_id)
        return total

    async def fan_out_organization(self, organization_id: uuid.UUID) -> int:
        async with self.db.transaction(organization_id) as session:
            last = await outbox.claim_stream(session, models.CONSUMER, organization_id)
            if last is None:
                return 0
            batch = await outbox.read_after(session, organization_id, last, self.batch_size)
            if not batch:
                return 0
            endpoints = await models.enabled_endpoints(session)
            now = datetime.now(UTC)
            rows: list[WebhookDelivery] = []
            for stored in batch if endpoints else ():
                event = orjson.loads(stored.event)
                for endpoint in endpoints:
                    if (
                        stored.sequence > endpoint.since_sequence
                        and subscribes(endpoint, stored.type)
                        and clearance.may_send(endpoint.clearance, endpoint.scopes, event)
                    ):
                        rows.append(
                            delivery(
                                endpoint,
                                event_id=stored.id,
                                event_type=stored.type,
                                body=external(stored.event),
                                attempt=1,
                                due=now,
                            )
                        )
            if rows:
                await models.add_deliveries(session, rows)
            await outbox.advance_cursor(
                session, models.CONSUMER, organization_id, batch[-1].sequence
            )
        return len(batch)

    # --- sending -------------------------------------------------------------------------------

    async def send_due(self) -> int:
        """Lease the attempts that are due and make them; how many were made."""
        lease = self.settings.webhook_timeout_seconds + 30
        async with self.db.transaction(None) as session:
            claimed = await models.claim_due(session, CLAIM_BATCH, lease)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item: Claimed) -> None:
            async with gate:
                await self.attempt(item)

        outcomes = await asyncio.gather(*(one(c) for c in claimed), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                log.warning("webhook attempt not recorded", error=type(outcome).__name__)
        return len(claimed)

    async def attempt(self, claimed: Claimed) -> guard.Outcome | None:
        """Make one leased attempt and record it; its outcome (None: no longer ours)."""
        now = datetime.now(UTC)
        async with self.db.transaction(claimed.organization_id) as session:
            row = await models.read_delivery(session, claimed.id)
            if row is None or row.leased_until != claimed.leased_until:
                return None
            endpoint = await models.read_endpoint(session, row.endpoint_id)
            if endpoint is None or not endpoint.enabled:
                # Disabled since it was claimed: nothing is sent (its attempts wait for it to
                # be enabled again).
                return None
            body = row.body.encode()
            allowed = clearance.may_send(endpoint.clearance, endpoint.scopes, orjson.loads(body))
            secrets = await open_secrets(session, self.services, endpoint, now) if allowed else []
            url, attempt, window_start = endpoint.url, row.attempt, row.window_start
            event_id = str(row.event_id)
        final = not allowed
        refused = not allowed
        if not allowed:
            outcome = guard.Outcome(None, 0, "Above the webhook's clearance: not sent.")
        else:
            try:
                target = await guard.resolve(url, self.settings)
            except guard.Refused as exc:
                refused = True
                outcome = guard.Outcome(None, 0, str(exc))
            else:
                signed = signing.headers(event_id, int(time.time()), body, secrets)
                outcome = await guard.send(target, signed, body, self.settings)
                WEBHOOK_DELIVERY_SECONDS.observe(outcome.latency_ms / 1000)
        recorded = await self.record(claimed, attempt, window_start, outcome, final=final)
        if recorded is not None:
            WEBHOOK_DELIVERIES.labels(
                "delivered"
                if outcome.ok
                else "refused"
                if refused
                else "failed"
                if recorded
                else "dead"
            ).inc()
        return outcome if recorded is not None else None

    async def record(
        self,
        claimed: Claimed,
        attempt: int,
        window_start: datetime,
        outcome: guard.Outcome,
        *,
        final: bool,
    ) -> bool | None:
        """Record the attempt (None: it is no longer ours); whether another is due."""
        settings = self.settings
        async with self.db.transaction(claimed.organization_id) as session:
            row = await models.read_delivery(session, claimed.id)
            if row is None:
                return None
            endpoint = await models.read_endpoint(session, row.endpoint_id, lock=True)
            now = datetime.now(UTC)
            retry_at: datetime | None = None
            if not outcome.ok and not final and endpoint is not None and endpoint.enabled:
                retry_at = next_attempt(settings, now, window_start, attempt)
            done = await models.finish_attempt(
                session,
                claimed.id,
                claimed.leased_until,
                {
                    "status": WebhookDeliveryStatus.SUCCEEDED
                    if outcome.ok
                    else WebhookDeliveryStatus.FAILED,
                    "response_code": outcome.status,
                    "latency_ms": outcome.latency_ms,
                    "error": None if outcome.error is None else outcome.error[:500],
                    "attempted_at": now,
                    "next_attempt_at": retry_at,
                },
            )
            if done is None:
                return None
            self.sent += 1
            if retry_at is not None and endpoint is not None:
                again = delivery(
                    endpoint,
                    event_id=done.event_id,
                    event_type=done.event_type,
                    body=done.body,
                    attempt=attempt + 1,
                    due=retry_at,
                )
                again.window_start = window_start
                await models.add_deliveries(session, [again])
            if endpoint is None or final:
                return retry_at is not None
            if outcome.ok:
                endpoint.failing_since = None
            elif endpoint.failing_since is None:
                endpoint.failing_since = now
            elif endpoint.enabled and now - endpoint.failing_since >= timedelta(
                hours=settings.webhook_disable_after_hours
            ):
                endpoint.enabled = False
                endpoint.disabled_at = now
                endpoint.disabled_reason = (
                    f"Every attempt failed since {endpoint.failing_since.isoformat()}."
                )
                await audit.record(
                    session,
                    None,
                    None,
                    organization_id=claimed.organization_id,
                    event_type="webhook.disable",
                    category="configuration",
                    description="Disabled a webhook whose deliveries kept failing",
                    resource_type="Webhook",
                    resource_id=endpoint.id,
                    after={
                        "enabled": False,
                        "automatic": True,
                        "failingSince": endpoint.failing_since.isoformat(),
                    },
                )
                log.warning("webhook disabled after failing", webhook=str(endpoint.id))
            await session.flush()
        return retry_at is not None

    # --- upkeep --------------------------------------------------------------------------------

    async def maintain(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = time.monotonic()
        await self.prune()

    async def prune(self) -> int:
        before = datetime.now(UTC) - timedelta(days=self.settings.webhook_delivery_retention_days)
        total = 0
        while True:
            async with self.db.transaction(None) as session:
                pruned = await models.prune_deliveries(session, before, PRUNE_BATCH)
            total += pruned
            if pruned < PRUNE_BATCH:
                return total


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
