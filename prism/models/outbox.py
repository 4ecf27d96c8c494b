"""The outbox: the events of each organization's changes, written in the change's transaction,
read by consumers (the Kafka relay; later webhooks and live subscriptions) in order.

Each organization's events are numbered 1, 2, 3, … by ``audit_chain_heads.outbox_sequence``:
the same head row that orders the audit chain, locked by every writer until it commits, so
numbers are given in commit order and a rolled-back change leaves no gap. A consumer keeps a
cursor per organization (``outbox_cursors``: the last sequence it handled); the row of the
cursor, locked ``FOR UPDATE SKIP LOCKED``, is what makes one consumer process at a time own
an organization's stream. Inserted events are notified on ``prism_outbox`` (payload: the
organization id) at commit. Events every registered consumer has passed are pruned after the
retention window (``prune``); one that some consumer has not reached is never pruned.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, enum_column, org_fk, utcnow
from prism.models.enums import Classification

CHANNEL = "prism_outbox"


@dataclass(frozen=True)
class Draft:
    """An event before its organization's sequence number is given (at insert)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    topic: str
    type: str
    classification: str | None
    department: str | None
    time: datetime
    event: dict[str, Any]


class OutboxEvent(Base):
    __tablename__ = "outbox_events"

    organization_id: Mapped[uuid.UUID] = org_fk()
    sequence: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    # The CloudEvents id: unique, what consumers deduplicate on.
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False, unique=True)
    topic: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    type: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    classification: Mapped[Classification | None] = enum_column(Classification)
    department: Mapped[str | None] = mapped_column(sa.String(100))
    # The CloudEvents document (structured mode), ``sequence`` included.
    event: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), nullable=False, default=utcnow, server_default=sa.func.now()
    )

    __table_args__ = (
        sa.PrimaryKeyConstraint("organization_id", "sequence"),
        sa.Index("ix_outbox_events_created_at", "created_at"),
    )


class OutboxCursor(Base):
    """How far one consumer got in one organization's stream."""

    __tablename__ = "outbox_cursors"

    consumer: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    )
    last_sequence: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), nullable=False, default=utcnow, server_default=sa.func.now()
    )


class OutboxConsumer(Base):
    """A consumer of every organization's stream: while it is registered, nothing it has not
    passed is pruned. ``snapshot_at`` is when it last took a metrics snapshot."""

    __tablename__ = "outbox_consumers"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    registered_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), nullable=False, default=utcnow, server_default=sa.func.now()
    )
    snapshot_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


# The insert of one event numbered from the head row ``head`` (a CTE returning
# outbox_sequence) defines; ``sequence`` is added to the stored CloudEvent.
_INSERT_FROM_HEAD = """
INSERT INTO outbox_events
    (organization_id, sequence, id, topic, type, classification, department, event, created_at)
SELECT CAST(:organization_id AS uuid), head.outbox_sequence, CAST(:id AS uuid), :topic, :type,
       CAST(:classification AS varchar), :department,
       CAST(CAST(:event AS text) AS jsonb)
           || jsonb_build_object('sequence', head.outbox_sequence::text),
       :created_at
FROM head
RETURNING sequence"""

# A change with no audit event: the organization's row (as every writer takes it first), then
# its head row, the next number.
_APPEND_HEAD = """
WITH organization AS (
    SELECT id FROM organizations WHERE id = CAST(:organization_id AS uuid) FOR KEY SHARE
), head AS (
    INSERT INTO audit_chain_heads (organization_id, events, outbox_sequence)
    SELECT id, 0, 1 FROM organization
    ON CONFLICT (organization_id)
    DO UPDATE SET outbox_sequence = audit_chain_heads.outbox_sequence + 1
    RETURNING outbox_sequence
)"""
APPEND = sa.text(_APPEND_HEAD + _INSERT_FROM_HEAD)

# An audited change: the audit event's own update of the head row (already locked by the
# audit writer) numbers the event too, in the same statement.
_ADVANCE_HEAD = """
WITH head AS (
    UPDATE audit_chain_heads
    SET last_hash = :last_hash, last_event_id = CAST(:last_event_id AS uuid),
        events = events + 1, outbox_sequence = outbox_sequence + 1
    WHERE organization_id = CAST(:organization_id AS uuid)
    RETURNING outbox_sequence
)"""
ADVANCE_HEAD_WITH_EVENT = sa.text(_ADVANCE_HEAD + _INSERT_FROM_HEAD)


def draft_values(draft: Draft) -> dict[str, Any]:
    return {
        "organization_id": str(draft.organization_id),
        "id": str(draft.id),
        "topic": draft.topic,
        "type": draft.type,
        "classification": draft.classification,
        "department": draft.department,
        "event": orjson.dumps(draft.event).decode(),
        "created_at": draft.time,
    }


async def append_event(session: AsyncSession, draft: Draft) -> int:
    """Write ``draft`` in the session's transaction; its sequence number."""
    await session.flush()
    sequence: int = (await session.execute(APPEND, draft_values(draft))).scalar_one()
    return sequence


async def advance_head_with_event(
    session: AsyncSession, *, last_hash: str, last_event_id: uuid.UUID, draft: Draft
) -> int:
    values = draft_values(draft)
    values.update(last_hash=last_hash, last_event_id=str(last_event_id))
    sequence: int = (await session.execute(ADVANCE_HEAD_WITH_EVENT, values)).scalar_one()
    return sequence


# --- live subscribers (read under the organization's row-level security) -------------------------


@dataclass(frozen=True)
class Row:
    """One event as a live subscriber reads it: where it is in its organization's stream, what
    its visibility depends on, and the CloudEvent itself (JSON text)."""

    organization_id: uuid.UUID
    sequence: int
    id: uuid.UUID
    type: str
    classification: Classification | None
    department: str | None
    event: str


async def read_rows(
    session: AsyncSession, organization_id: uuid.UUID, after: int, limit: int
) -> list[Row]:
    """The organization's events after sequence ``after``, in order (at most ``limit``)."""
    rows = await session.execute(
        sa.text(
            "SELECT sequence, id, type, classification, department, event::text "
            "FROM outbox_events WHERE organization_id = CAST(:org AS uuid) AND sequence > :after "
            "ORDER BY sequence LIMIT :limit"
        ),
        {"org": str(organization_id), "after": after, "limit": limit},
    )
    return [
        Row(
            organization_id,
            int(r[0]),
            r[1],
            r[2],
            None if r[3] is None else Classification(r[3]),
            r[4],
            r[5],
        )
        for r in rows.all()
    ]


async def sequence_of(
    session: AsyncSession, organization_id: uuid.UUID, event_id: uuid.UUID
) -> int | None:
    """The sequence of the organization's event ``event_id``; None when there is none (never
    written, another organization's, or pruned)."""
    found = await session.scalar(
        sa.select(OutboxEvent.sequence).where(
            OutboxEvent.organization_id == organization_id, OutboxEvent.id == event_id
        )
    )
    return None if found is None else int(found)


async def head_sequence(session: AsyncSession, organization_id: uuid.UUID) -> int:
    """The sequence of the organization's last committed event (0: none yet)."""
    found = await session.scalar(
        sa.text(
            "SELECT outbox_sequence FROM audit_chain_heads "
            "WHERE organization_id = CAST(:org AS uuid)"
        ),
        {"org": str(organization_id)},
    )
    return int(found or 0)


# --- consumers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    organization_id: uuid.UUID
    last_sequence: int
    head_sequence: int


@dataclass(frozen=True)
class Stored:
    organization_id: uuid.UUID
    sequence: int
    id: uuid.UUID
    topic: str
    type: str
    event: bytes
    # The trace of the change that wrote it (the CloudEvent's ``traceparent``), if traced.
    traceparent: str | None = None


async def register_consumer(session: AsyncSession, consumer: str) -> None:
    await session.execute(
        sa.text("INSERT INTO outbox_consumers (name) VALUES (:name) ON CONFLICT (name) DO NOTHING"),
        {"name": consumer},
    )


async def unregister_consumer(session: AsyncSession, consumer: str) -> bool:
    """Forget a consumer (its cursors go too): what it has not read may then be pruned."""
    result = await session.execute(sa.select(sa.func.prism_outbox_forget(consumer)))
    return bool(result.scalar_one())


async def pending_organizations(session: AsyncSession, consumer: str, limit: int) -> list[Pending]:
    """Organizations with events past ``consumer``'s cursor, least recently served first (a SECURITY
    DEFINER function: it reads every organization's head, no event)."""
    rows = await session.execute(
        sa.text(
            "SELECT organization_id, last_sequence, head_sequence "
            "FROM prism_outbox_pending(:consumer, :limit)"
        ),
        {"consumer": consumer, "limit": limit},
    )
    return [Pending(r[0], int(r[1]), int(r[2])) for r in rows]


async def claim_stream(
    session: AsyncSession, consumer: str, organization_id: uuid.UUID
) -> int | None:
    """Lock ``consumer``'s cursor of the organization (the transaction's organization) until the
    transaction ends; its last sequence, or None when another process holds it."""
    values = {"consumer": consumer, "org": str(organization_id)}
    row = (
        await session.execute(
            sa.text(
                "SELECT last_sequence FROM outbox_cursors "
                "WHERE consumer = :consumer AND organization_id = CAST(:org AS uuid) "
                "FOR UPDATE SKIP LOCKED"
            ),
            values,
        )
    ).first()
    if row is not None:
        return int(row[0])
    # Held by another process, or not made yet: the first claim makes it (and holds it).
    made = (
        await session.execute(
            sa.text(
                "INSERT INTO outbox_cursors (consumer, organization_id) "
                "VALUES (:consumer, CAST(:org AS uuid)) ON CONFLICT DO NOTHING "
                "RETURNING last_sequence"
            ),
            values,
        )
    ).first()
    return None if made is None else int(made[0])


async def read_after(
    session: AsyncSession, organization_id: uuid.UUID, after: int, limit: int
) -> list[Stored]:
    """The organization's events after sequence ``after``, in order; each event as JSON bytes."""
    rows = await session.execute(
        sa.text(
            "SELECT sequence, id, topic, type, event::text, event->>'traceparent' "
            "FROM outbox_events "
            "WHERE organization_id = CAST(:org AS uuid) AND sequence > :after "
            "ORDER BY sequence LIMIT :limit"
        ),
        {"org": str(organization_id), "after": after, "limit": limit},
    )
    return [
        Stored(organization_id, int(r[0]), r[1], r[2], r[3], r[4].encode(), r[5])
        for r in rows.all()
    ]


async def advance_cursor(
    session: AsyncSession, consumer: str, organization_id: uuid.UUID, sequence: int
) -> None:
    await session.execute(
        sa.text(
            "UPDATE outbox_cursors SET last_sequence = :sequence, updated_at = now() "
            "WHERE consumer = :consumer AND organization_id = CAST(:org AS uuid)"
        ),
        {"consumer": consumer, "org": str(organization_id), "sequence": sequence},
    )


async def read_cursor(session: AsyncSession, consumer: str, organization_id: uuid.UUID) -> int:
    """The last sequence ``consumer`` handled of the organization (0: none)."""
    found = await session.scalar(
        sa.select(OutboxCursor.last_sequence).where(
            OutboxCursor.consumer == consumer, OutboxCursor.organization_id == organization_id
        )
    )
    return int(found or 0)


@dataclass(frozen=True)
class Lag:
    events: int
    oldest: datetime | None


async def lag(session: AsyncSession, consumer: str) -> Lag:
    """Events ``consumer`` has not handled, over every organization, and the oldest one's time."""
    row = (
        await session.execute(
            sa.text("SELECT events, oldest FROM prism_outbox_lag(:consumer)"),
            {"consumer": consumer},
        )
    ).one()
    return Lag(int(row[0] or 0), row[1])


async def prune(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` events older than ``before`` that every registered consumer has
    passed; how many."""
    result = await session.execute(
        sa.select(sa.func.prism_outbox_prune(before, limit)),
    )
    return int(result.scalar_one())


async def snapshot_due(session: AsyncSession, consumer: str, interval_seconds: float) -> bool:
    """Whether this process takes the next metrics snapshot: at most one process of all that
    run ``consumer`` wins each interval."""
    row = (
        await session.execute(
            sa.text(
                "UPDATE outbox_consumers SET snapshot_at = now() WHERE name = :consumer "
                "AND (snapshot_at IS NULL "
                "OR snapshot_at <= now() - make_interval(secs => :seconds)) RETURNING name"
            ),
            {"consumer": consumer, "seconds": interval_seconds},
        )
    ).first()
    return row is not None


@dataclass(frozen=True)
class Activity:
    """One organization's figures for a metrics snapshot."""

    organization_id: uuid.UUID
    jobs: dict[str, dict[str, int]]
    analyses: int
    documents_analyzed: int
    analysis_seconds_avg: float | None
    analysis_seconds_p95: float | None
    tokens: int
    cost_usd: float


async def activity(session: AsyncSession, since: datetime) -> list[Activity]:
    """Organizations with jobs not succeeded or analyses since ``since``: their queue by kind
    and state, analyses made, their durations and cost (a SECURITY DEFINER aggregate)."""
    rows = await session.execute(
        sa.text(
            "SELECT organization_id, jobs, analyses, documents, seconds_avg, seconds_p95, "
            "tokens, cost_usd FROM prism_outbox_activity(:since)"
        ),
        {"since": since},
    )
    return [
        Activity(
            organization_id=r[0],
            jobs=r[1] or {},
            analyses=int(r[2]),
            documents_analyzed=int(r[3]),
            analysis_seconds_avg=None if r[4] is None else float(r[4]),
            analysis_seconds_p95=None if r[5] is None else float(r[5]),
            tokens=int(r[6]),
            cost_usd=float(r[7]),
        )
        for r in rows
    ]
