"""Partners' webhook endpoints and the log of their deliveries (one row per attempt).

An endpoint belongs to an organization (row-level security like every tenant table): its
URL, the event types it wants, the clearance of the ADMIN who registered it (it is never sent
an event about anything above it), its signing secret sealed with the organization's data key
(and the previous one during a rotation's grace period), whether it is enabled, and since when
it has been failing. It receives the organization's outbox events numbered after
``since_sequence`` (its creation), read by the dispatcher's cursor (consumer ``webhooks``).

A delivery row is one attempt to send one event to one endpoint: PENDING until it is sent
(claimed by one dispatcher at a time with a lease, ``prism_webhook_claim``), then SUCCEEDED
or FAILED with the response code, latency and error; a failed attempt that will be retried
names the time of the next one, which is its own row. Finished rows are pruned after the
retention window (``prism_webhook_prune``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, created_at, enum_column, org_fk, pk, updated_at
from prism.models.enums import Classification, WebhookDeliveryStatus
from prism.models.pagination import Page, PageRequest, keyset_page

# The outbox consumer that fans events out to endpoints; its cursor of an organization is
# made when the organization's first endpoint is (and holds back pruning of that
# organization's events only).
CONSUMER = "webhooks"
# Notified (at commit) when a delivery is due now: a test ping, a redelivery.
CHANNEL = "prism_webhooks"


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    url: Mapped[str] = mapped_column(sa.String(2048), nullable=False)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(sa.String(100)), nullable=False)
    description: Mapped[str] = mapped_column(sa.String(500), nullable=False, default="")
    # The clearance of the ADMIN who registered it: the most it is ever sent about.
    clearance: Mapped[Classification] = enum_column(Classification, nullable=False)
    # The scopes of the API token it was registered (or last changed) with, narrowed by every
    # change; NULL: by a signed-in ADMIN (every scope). An event whose read needs a scope not
    # in it is never sent.
    scopes: Mapped[list[str] | None] = mapped_column(ARRAY(sa.String(64)))
    # ``whsec_`` secrets, sealed with the organization's data key (bound to the endpoint).
    secret_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary, nullable=False)
    previous_secret_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    previous_secret_until: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # The organization's last outbox sequence when it was created: it gets the events after.
    since_sequence: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(200))
    disabled_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # When its current run of failed attempts began (None: its last attempt succeeded).
    failing_since: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    )
    # The CloudEvent's id: the ``webhook-id`` header, the same for every attempt.
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    event_type: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    # The CloudEvent's JSON as sent (signed afresh at each attempt).
    body: Mapped[str] = mapped_column(sa.Text, nullable=False)
    attempt: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    status: Mapped[WebhookDeliveryStatus] = enum_column(WebhookDeliveryStatus, nullable=False)
    response_code: Mapped[int | None] = mapped_column(sa.Integer)
    latency_ms: Mapped[int | None] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.String(500))
    # PENDING: when it is due; FAILED: when it is retried (None: it is not).
    next_attempt_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # When the first attempt of this run was made: retries stop after the retry window.
    window_start: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    leased_until: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    attempted_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at()


sa.Index(
    "ix_webhook_deliveries_endpoint_id_created_at_id",
    WebhookDelivery.endpoint_id,
    WebhookDelivery.created_at,
    WebhookDelivery.id,
)
sa.Index("ix_webhook_deliveries_created_at", WebhookDelivery.created_at)
sa.Index(
    "ix_webhook_deliveries_due",
    WebhookDelivery.next_attempt_at,
    postgresql_where=sa.text("status = 'PENDING'"),
)
sa.Index("ix_webhook_endpoints_organization_id", WebhookEndpoint.organization_id)


# --- endpoints ---------------------------------------------------------------------------------


async def head_sequence(session: AsyncSession, organization_id: uuid.UUID) -> int:
    """The organization's newest outbox sequence (0: none yet)."""
    found = await session.scalar(
        sa.text(
            "SELECT outbox_sequence FROM audit_chain_heads "
            "WHERE organization_id = CAST(:org AS uuid)"
        ),
        {"org": str(organization_id)},
    )
    return int(found or 0)


async def follow_stream(session: AsyncSession, organization_id: uuid.UUID, after: int) -> None:
    """Start the dispatcher's cursor of the organization at ``after`` (if it has none)."""
    await session.execute(
        sa.text(
            "INSERT INTO outbox_cursors (consumer, organization_id, last_sequence) "
            "VALUES (:consumer, CAST(:org AS uuid), :after) ON CONFLICT DO NOTHING"
        ),
        {"consumer": CONSUMER, "org": str(organization_id), "after": after},
    )


async def count_endpoints(session: AsyncSession) -> int:
    return int(await session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) or 0)


async def list_endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    """The organization's endpoints (the transaction's), oldest first."""
    query = sa.select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    return list(await session.scalars(query))


async def enabled_endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    query = (
        sa.select(WebhookEndpoint)
        .where(WebhookEndpoint.enabled.is_(True))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return list(await session.scalars(query))


async def read_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, *, lock: bool = False
) -> WebhookEndpoint | None:
    query = sa.select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if lock:
        query = query.with_for_update()
    found: WebhookEndpoint | None = await session.scalar(query)
    return found


async def delete_endpoint(session: AsyncSession, endpoint: WebhookEndpoint) -> None:
    await session.delete(endpoint)
    await session.flush()


# --- deliveries --------------------------------------------------------------------------------


async def notify_due(session: AsyncSession) -> None:
    """Wake the dispatchers when the transaction commits (a delivery due now)."""
    await session.execute(sa.select(sa.func.pg_notify(CHANNEL, "")))


async def add_deliveries(session: AsyncSession, rows: Sequence[WebhookDelivery]) -> None:
    session.add_all(rows)
    await session.flush()


async def read_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    return await session.get(WebhookDelivery, delivery_id)


async def last_attempt(session: AsyncSession, endpoint_id: uuid.UUID, event_id: uuid.UUID) -> int:
    found = await session.scalar(
        sa.select(sa.func.max(WebhookDelivery.attempt)).where(
            WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.event_id == event_id
        )
    )
    return int(found or 0)


DELIVERY_KEY = (WebhookDelivery.created_at, WebhookDelivery.id)


async def page_deliveries(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    page: PageRequest,
    *,
    status: WebhookDeliveryStatus | None = None,
) -> Page[WebhookDelivery]:
    """An endpoint's attempts, newest first."""
    query = sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return await keyset_page(session, query, DELIVERY_KEY, page)


@dataclass(frozen=True)
class Claimed:
    organization_id: uuid.UUID
    id: uuid.UUID
    leased_until: datetime


async def claim_due(session: AsyncSession, limit: int, lease_seconds: float) -> list[Claimed]:
    """Lease up to ``limit`` due PENDING attempts of enabled endpoints, of every organization
    (a SECURITY DEFINER function: ids only), each to one caller until the lease ends."""
    rows = await session.execute(
        sa.text("SELECT organization_id, id, leased_until FROM prism_webhook_claim(:n, :secs)"),
        {"n": limit, "secs": lease_seconds},
    )
    return [Claimed(r[0], r[1], r[2]) for r in rows]


async def finish_attempt(
    session: AsyncSession, delivery_id: uuid.UUID, leased_until: datetime, values: dict[str, Any]
) -> WebhookDelivery | None:
    """Record an attempt's outcome if the caller's lease still holds it; the row, or None."""
    result = await session.execute(
        sa.update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == WebhookDeliveryStatus.PENDING,
            WebhookDelivery.leased_until == leased_until,
        )
        .values(leased_until=None, **values)
        .returning(WebhookDelivery.id)
    )
    if result.first() is None:
        return None
    return await session.get(WebhookDelivery, delivery_id, populate_existing=True)


@dataclass(frozen=True)
class Stream:
    organization_id: uuid.UUID
    last_sequence: int
    head_sequence: int


async def pending_streams(session: AsyncSession, limit: int) -> list[Stream]:
    """Organizations with endpoints whose outbox has events past the dispatcher's cursor."""
    rows = await session.execute(
        sa.text(
            "SELECT organization_id, last_sequence, head_sequence FROM prism_webhook_pending(:n)"
        ),
        {"n": limit},
    )
    return [Stream(r[0], int(r[1]), int(r[2])) for r in rows]


async def prune_deliveries(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` finished attempts made before ``before``; how many."""
    result = await session.execute(sa.select(sa.func.prism_webhook_prune(before, limit)))
    return int(result.scalar_one())
