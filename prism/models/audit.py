"""The audit log: one append-only event per change, chained per organization by sha256.

The table is range-partitioned by month (``prism_ensure_audit_partitions`` creates months
ahead; a default partition catches anything else), and the app role may only INSERT and
SELECT it. Each event stores the previous event's hash and its own hash over a canonical
form, so an edit or a deletion made behind Prism's back breaks the chain visibly.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import INET, JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, among, enum_column, org_fk, utcnow
from prism.models.enums import Classification
from prism.models.organizations import Organization
from prism.models.outbox import Draft, advance_head_with_event
from prism.models.pagination import Page, PageRequest, keyset_page
from prism.models.scope import Scope, within_clearance


class AuditEvent(Base):
    __tablename__ = "audit_logs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), primary_key=True, default=utcnow
    )
    organization_id: Mapped[uuid.UUID] = org_fk()
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    api_token_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    category: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    description: Mapped[str] = mapped_column(sa.Text, nullable=False)
    resource_type: Mapped[str | None] = mapped_column(sa.String(50))
    resource_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    ip_address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(sa.String(512))
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    # The sensitivity of what the event is about: readers below it do not see the event.
    classification: Mapped[Classification | None] = enum_column(Classification)
    department: Mapped[str | None] = mapped_column(sa.String(100))
    prev_hash: Mapped[str | None] = mapped_column(sa.CHAR(64))
    hash: Mapped[str] = mapped_column(sa.CHAR(64), nullable=False)

    __table_args__ = (
        sa.Index("ix_audit_logs_organization_id_created_at", "organization_id", "created_at", "id"),
        sa.Index("ix_audit_logs_resource_id", "resource_id"),
        sa.Index("ix_audit_logs_id", "id"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )


class AuditChainHead(Base):
    """The newest hash of each organization's chain; its row lock orders concurrent writers."""

    __tablename__ = "audit_chain_heads"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    )
    last_hash: Mapped[str | None] = mapped_column(sa.CHAR(64))
    last_event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    events: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    # The hash of the newest event retention purged: the oldest remaining event links to it.
    purged_hash: Mapped[str | None] = mapped_column(sa.CHAR(64))
    # The number of the organization's newest outbox event (prism.models.outbox): the same
    # row lock orders both streams.
    outbox_sequence: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)


@dataclass(frozen=True)
class RequestMeta:
    """Where a change came from, copied onto its audit event."""

    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Actor:
    user_id: uuid.UUID | None = None
    api_token_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Subject:
    """The classification of what an event concerns (a document, its feedback, ...)."""

    classification: Classification | None = None
    department: str | None = None


@dataclass(frozen=True)
class AuditFilter:
    event_type: Sequence[str] | None = None
    resource_id: uuid.UUID | None = None
    actor_id: uuid.UUID | None = None
    after: datetime | None = None
    before: datetime | None = None


def canonical_form(event: AuditEvent) -> bytes:
    """The bytes an event's hash covers: every field but the hash itself, keys sorted."""
    fields = {
        "id": str(event.id),
        "created_at": event.created_at.isoformat(),
        "organization_id": str(event.organization_id),
        "actor_id": str(event.actor_id) if event.actor_id else None,
        "api_token_id": str(event.api_token_id) if event.api_token_id else None,
        "event_type": event.event_type,
        "category": event.category,
        "description": event.description,
        "resource_type": event.resource_type,
        "resource_id": str(event.resource_id) if event.resource_id else None,
        "before": event.before,
        "after": event.after,
        "ip_address": str(event.ip_address) if event.ip_address else None,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "classification": event.classification.value if event.classification else None,
        "department": event.department,
        "prev_hash": event.prev_hash,
    }
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def event_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_form(event)).hexdigest()


async def record_event(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    actor: Actor,
    event_type: str,
    category: str,
    description: str,
    resource_type: str | None = None,
    resource_id: uuid.UUID | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    meta: RequestMeta | None = None,
    subject: Subject | None = None,
    outbox: Callable[[AuditEvent], Draft] | None = None,
) -> AuditEvent:
    """Append an event to the organization's chain, in the caller's transaction; with
    ``outbox``, also the outbox event it makes of the audit event, numbered by the same
    update of the head row."""
    meta = meta or RequestMeta()
    # Locks are taken in one order by every writer: the organization's row, then its chain
    # head. Every write of the organization's data takes the row (the data-version triggers
    # update it), and so does the event itself; a writer that took the head first and the
    # row second (changes still unflushed, or none before the event) deadlocked with one
    # that wrote first and recorded its event second, e.g. a worker's `document.analyzed`
    # against a sign-in. So: pending changes are flushed first, and the head is locked by a
    # statement that locks the organization's row before it.
    await session.flush()
    organization = (
        sa.select(Organization.id)
        .where(Organization.id == organization_id)
        .with_for_update(key_share=True)
        .cte("organization")
    )
    lock_head = (
        insert(AuditChainHead)
        .from_select(
            ["organization_id", "events"],
            sa.select(organization.c.id, sa.literal(0, sa.BigInteger)),
        )
        .on_conflict_do_update(
            index_elements=[AuditChainHead.organization_id],
            set_={"events": AuditChainHead.events},
        )
        .returning(AuditChainHead.last_hash)
    )
    prev_hash = (await session.execute(lock_head)).scalar_one()

    event = AuditEvent(
        id=uuid.uuid4(),
        created_at=utcnow(),
        organization_id=organization_id,
        actor_id=actor.user_id,
        api_token_id=actor.api_token_id,
        event_type=event_type,
        category=category,
        description=description,
        resource_type=resource_type,
        resource_id=resource_id,
        before=_jsonable(before),
        after=_jsonable(after),
        ip_address=normalize_ip(meta.ip_address),
        user_agent=(meta.user_agent or None) and meta.user_agent[:512],
        request_id=meta.request_id,
        classification=subject.classification if subject else None,
        department=subject.department if subject else None,
        prev_hash=prev_hash,
    )
    event.hash = event_hash(event)
    session.add(event)
    await session.flush()
    if outbox is not None:
        await advance_head_with_event(
            session, last_hash=event.hash, last_event_id=event.id, draft=outbox(event)
        )
        return event
    await session.execute(
        sa.update(AuditChainHead)
        .where(AuditChainHead.organization_id == organization_id)
        .values(
            last_hash=event.hash,
            last_event_id=event.id,
            events=AuditChainHead.events + 1,
        )
    )
    return event


def normalize_ip(value: str | None) -> str | None:
    """The form PostgreSQL's inet gives back (so the hash verifies after a read); anything
    that is not an address is not recorded as one."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _jsonable(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Round-trip through JSON so what is hashed is exactly what JSONB will give back."""
    if value is None:
        return None
    result: dict[str, Any] = orjson.loads(
        orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS)
    )
    return result


def _visible(scope: Scope) -> sa.Select[tuple[AuditEvent]]:
    return sa.select(AuditEvent).where(
        AuditEvent.organization_id == scope.organization_id,
        within_clearance(
            scope, AuditEvent.classification, AuditEvent.department, unclassified_visible=True
        ),
    )


async def read_audit_events(
    session: AsyncSession, scope: Scope, *, flt: AuditFilter | None, page: PageRequest
) -> Page[AuditEvent]:
    query = _visible(scope)
    if flt is not None:
        if flt.event_type:
            query = query.where(AuditEvent.event_type.in_(flt.event_type))
        if flt.resource_id is not None:
            query = query.where(AuditEvent.resource_id == flt.resource_id)
        if flt.actor_id is not None:
            query = query.where(AuditEvent.actor_id == flt.actor_id)
        if flt.after is not None:
            query = query.where(AuditEvent.created_at >= flt.after)
        if flt.before is not None:
            query = query.where(AuditEvent.created_at < flt.before)
    return await keyset_page(session, query, (AuditEvent.created_at, AuditEvent.id), page)


async def read_audit_events_by_ids(
    session: AsyncSession, scope: Scope, ids: Sequence[uuid.UUID]
) -> list[AuditEvent]:
    if not ids:
        return []
    return list(await session.scalars(_visible(scope).where(among(AuditEvent.id, ids))))


@dataclass(frozen=True)
class ChainReport:
    checked: int
    valid: bool
    first_broken_id: uuid.UUID | None


async def verify_chain(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    after: datetime | None = None,
    before: datetime | None = None,
) -> ChainReport:
    """Recompute every event's hash and check each links to the one before it; a row edited,
    deleted or inserted behind Prism's back breaks the chain at the first event after it.
    Without ``before`` the newest event must also be the chain head's (a deleted tail)."""
    query = sa.select(AuditEvent).where(AuditEvent.organization_id == organization_id)
    head = await session.get(AuditChainHead, organization_id)
    # Events purged by retention leave their last hash behind as the chain's anchor.
    previous_hash: str | None = head.purged_hash if head else None
    if after is not None:
        query = query.where(AuditEvent.created_at >= after)
        earlier = await session.scalar(
            sa.select(AuditEvent.hash)
            .where(AuditEvent.organization_id == organization_id, AuditEvent.created_at < after)
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            .limit(1)
        )
        previous_hash = earlier if earlier is not None else previous_hash
    if before is not None:
        query = query.where(AuditEvent.created_at < before)
    query = query.order_by(AuditEvent.created_at, AuditEvent.id).execution_options(yield_per=500)
    checked = 0
    async for event in await session.stream_scalars(query):
        checked += 1
        if event.hash != event_hash(event) or event.prev_hash != previous_hash:
            return ChainReport(checked=checked, valid=False, first_broken_id=event.id)
        previous_hash = event.hash
    if before is None:
        head_hash = head.last_hash if head else None
        if head_hash != previous_hash:
            return ChainReport(
                checked=checked, valid=False, first_broken_id=head.last_event_id if head else None
            )
    return ChainReport(checked=checked, valid=True, first_broken_id=None)


async def ensure_audit_partitions(session: AsyncSession, *, months_ahead: int) -> None:
    """Create the audit log's monthly partitions up to ``months_ahead`` months from now (the
    SECURITY DEFINER function does it; existing months are left as they are)."""
    await session.execute(sa.select(sa.func.prism_ensure_audit_partitions(months_ahead)))
