"""BI rollups: daily (and hourly) aggregates of documents, analyses, feedback and user activity,
kept per organization *and per visibility bucket*, read by the BI fields instead of the base
tables.

A bucket is (classification, department), the department only for RESTRICTED rows ('' for
every other level, and for a RESTRICTED row without department): exactly the attributes the
read rule looks at. A caller's numbers are the sum of the buckets ``within_clearance`` lets it
see, so clearance and the RESTRICTED department rule hold for aggregates as they do for rows.

Maintenance (docs/decisions/0009-bi-rollups.md): statement-level triggers on the base tables
append (organization, kind, day) markers to ``bi_invalidations`` in the writer's transaction;
a ``bi.refresh`` job recomputes the marked day slices from the base tables. Recomputing a
slice replaces it, so folding is idempotent and indifferent to the order of changes (inserts,
reclassifications, soft and hard deletes, cascades alike).

Text dimensions use '' for "none" (they are part of primary keys).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.analyses import Analysis
from prism.models.audit import AuditEvent
from prism.models.base import Base, enum_column
from prism.models.documents import Document
from prism.models.enums import (
    Classification,
    DocumentType,
    FeedbackAction,
    ProcessingStatus,
    RiskLevel,
    WorkflowStatus,
)
from prism.models.feedback import Feedback
from prism.models.jobs import Job
from prism.models.scope import Scope, within_clearance

REFRESH_JOB = "bi.refresh"


class Kind(StrEnum):
    """What a marker invalidates: one kind per base table, each feeding its rollups."""

    DOCUMENTS = "documents"
    ANALYSES = "analyses"
    FEEDBACK = "feedback"
    ACTIVITY = "activity"


def _org_key() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True),
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    )


def _day_key() -> Mapped[date]:
    return mapped_column(sa.Date, primary_key=True)


def _user_key() -> Mapped[uuid.UUID]:
    # No foreign key: a deleted user's past activity still counts (as it does in the audit log).
    return mapped_column(UUID(as_uuid=True), primary_key=True)


def _text_key(length: int) -> Mapped[str]:
    return mapped_column(sa.String(length), primary_key=True)


def _count() -> Mapped[int]:
    return mapped_column(sa.BigInteger, nullable=False)


class DocumentRollup(Base):
    """Live (not deleted) documents by the UTC day they were uploaded."""

    __tablename__ = "bi_document_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    document_type: Mapped[DocumentType] = enum_column(DocumentType, primary_key=True)
    processing_status: Mapped[ProcessingStatus] = enum_column(ProcessingStatus, primary_key=True)
    risk_level: Mapped[str] = _text_key(16)
    documents: Mapped[int] = _count()


class AnalysisRollup(Base):
    """Analyses of live documents by the UTC day they completed."""

    __tablename__ = "bi_analysis_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    document_type: Mapped[DocumentType] = enum_column(DocumentType, primary_key=True)
    model: Mapped[str] = _text_key(200)
    analyses: Mapped[int] = _count()
    duration_seconds: Mapped[float] = mapped_column(sa.Float, nullable=False)
    cost_usd: Mapped[Decimal] = mapped_column(sa.Numeric(20, 6), nullable=False)
    tokens_used: Mapped[int] = _count()
    confidence_sum: Mapped[float] = mapped_column(sa.Float, nullable=False)
    confidences: Mapped[int] = _count()
    feedback_items: Mapped[int] = _count()


class FeedbackRollup(Base):
    """Reviewer feedback on live documents by the UTC day it was given."""

    __tablename__ = "bi_feedback_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    category: Mapped[str] = _text_key(100)
    model: Mapped[str] = _text_key(200)
    action: Mapped[FeedbackAction] = enum_column(FeedbackAction, primary_key=True)
    workflow_status: Mapped[WorkflowStatus] = enum_column(WorkflowStatus, primary_key=True)
    feedback: Mapped[int] = _count()
    rated: Mapped[int] = _count()
    rating_sum: Mapped[int] = _count()
    satisfied: Mapped[int] = _count()


class ReviewerRollup(Base):
    """Feedback per author and day: distinct reviewers do not add up across buckets, so the
    author is a key here."""

    __tablename__ = "bi_reviewer_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    user_id: Mapped[uuid.UUID] = _user_key()
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    feedback: Mapped[int] = _count()
    satisfied: Mapped[int] = _count()


class ActivityHourlyRollup(Base):
    """Audit events made by users, per user, hour and event category (the hourly
    user-activity table). Events about nothing classified count as PUBLIC: visible to all."""

    __tablename__ = "bi_activity_hourly"

    organization_id: Mapped[uuid.UUID] = _org_key()
    hour: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = _user_key()
    category: Mapped[str] = _text_key(50)
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    events: Mapped[int] = _count()


class ActivityDailyRollup(Base):
    """The same events per day: distinct users over weeks read this, not 24× the rows."""

    __tablename__ = "bi_activity_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    user_id: Mapped[uuid.UUID] = _user_key()
    category: Mapped[str] = _text_key(50)
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    events: Mapped[int] = _count()


class Invalidation(Base):
    """A day slice of one kind whose rollups are stale, appended by triggers in the writer's
    transaction. Append-only for writers, so concurrent writers never wait on each other.

    No foreign key to organizations: deleting an organization cascades into its base tables,
    whose triggers then mark slices of an organization that no longer exists, and a foreign
    key check would fail the deletion. The scheduler drops such markers."""

    __tablename__ = "bi_invalidations"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    day: Mapped[date] = mapped_column(sa.Date, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )

    __table_args__ = (
        sa.Index("ix_bi_invalidations_organization_id_kind_day", "organization_id", "kind", "day"),
    )


# Indexes on other aggregates' tables that only the rollups need: the refresh reads a day of
# feedback of one organization, and the scheduler looks for an open refresh job.
sa.Index(
    "ix_user_feedback_organization_id_created_at", Feedback.organization_id, Feedback.created_at
)
sa.Index(
    "ix_jobs_bi_refresh",
    Job.organization_id,
    postgresql_where=sa.text("kind = 'bi.refresh' AND state IN ('QUEUED', 'RUNNING', 'FAILED')"),
)

ROLLUPS: tuple[type[Base], ...] = (
    DocumentRollup,
    AnalysisRollup,
    FeedbackRollup,
    ReviewerRollup,
    ActivityHourlyRollup,
    ActivityDailyRollup,
)


# --- maintenance -------------------------------------------------------------------------------


def department_bucket(classification: Any, department: Any) -> sa.ColumnElement[str]:
    """The department as far as visibility cares: only RESTRICTED rows keep theirs."""
    return sa.case(
        (classification == Classification.RESTRICTED.value, sa.func.coalesce(department, "")),
        else_="",
    )


def utc_day(timestamp: Any) -> sa.ColumnElement[date]:
    """The UTC calendar day of a timestamptz (the triggers use the same expression)."""
    return sa.cast(sa.func.timezone("UTC", timestamp), sa.Date)


def utc_hour(timestamp: Any) -> sa.ColumnElement[datetime]:
    return sa.func.timezone("UTC", sa.func.date_trunc("hour", sa.func.timezone("UTC", timestamp)))


def _per_day(days: Sequence[date], groups: Callable[[Any, Any], sa.Select[Any]]) -> tuple[Any, Any]:
    """The days as a relation, and ``groups(start, end)`` (one day's aggregate) joined to each
    as a LATERAL subquery. Aggregating inside keeps PostgreSQL from flattening it: each day is
    one index range scan of (organization_id, timestamp), whatever the row estimates (the
    planner cannot see through the array and would otherwise join the organization's every
    row, then filter by day)."""
    slices = (
        sa.func.unnest(sa.literal(list(days), ARRAY(sa.Date)))
        .table_valued("day")
        .render_derived(name="d")
    )
    start = sa.func.timezone("UTC", sa.cast(slices.c.day, sa.DateTime))
    end = sa.func.timezone("UTC", sa.cast(slices.c.day, sa.DateTime) + timedelta(days=1))
    return slices, groups(start, end).lateral("r")


def _rollup_rows(
    org: uuid.UUID, days: Sequence[date], groups: Callable[[Any, Any], sa.Select[Any]]
) -> sa.Select[Any]:
    """(organization, day, every column of the day's groups), for INSERT ... SELECT."""
    slices, r = _per_day(days, groups)
    return sa.select(sa.literal(org, UUID(as_uuid=True)), slices.c.day, *r.c).select_from(
        slices.join(r, sa.true())
    )


def _first_columns(n: int) -> list[sa.ColumnElement[Any]]:
    """GROUP BY 1, ..., n: the key expressions carry bound parameters, and written out twice
    they would not be recognised as the SELECT's own."""
    return [sa.literal_column(str(i)) for i in range(1, n + 1)]


async def _replace(
    session: AsyncSession,
    rollup: type[Base],
    organization_id: uuid.UUID,
    days: Sequence[date],
    query: sa.Select[Any],
    *,
    time_column: str = "day",
) -> None:
    table = rollup.__table__
    assert isinstance(table, sa.Table)
    stale: sa.ColumnElement[bool]
    if time_column == "day":
        stale = table.c.day.in_(days)
    else:  # the hours of those days, as index ranges
        hour = table.c[time_column]
        stale = sa.or_(
            *[
                sa.and_(hour >= _utc_midnight(d), hour < _utc_midnight(d + timedelta(days=1)))
                for d in days
            ]
        )
    await session.execute(sa.delete(table).where(table.c.organization_id == organization_id, stale))
    columns = [c.name for c in table.columns]
    await session.execute(sa.insert(table).from_select(columns, query))


def _bucket(classification: Any, department: Any) -> list[sa.ColumnElement[Any]]:
    return [
        classification.label("classification"),
        department_bucket(classification, department).label("department"),
    ]


async def _refresh_documents(session: AsyncSession, org: uuid.UUID, days: Sequence[date]) -> None:
    d = Document

    def groups(start: Any, end: Any) -> sa.Select[Any]:
        return (
            sa.select(
                *_bucket(d.classification, d.department),
                d.document_type,
                d.processing_status,
                sa.func.coalesce(sa.cast(d.risk_level, sa.String), ""),
                sa.func.count(),
            )
            .where(
                d.organization_id == org,
                d.created_at >= start,
                d.created_at < end,
                d.deleted_at.is_(None),
            )
            .group_by(*_first_columns(5))
        )

    await _replace(session, DocumentRollup, org, days, _rollup_rows(org, days, groups))


async def _refresh_analyses(session: AsyncSession, org: uuid.UUID, days: Sequence[date]) -> None:
    a, d = Analysis, Document

    def groups(start: Any, end: Any) -> sa.Select[Any]:
        return (
            sa.select(
                *_bucket(d.classification, d.department),
                d.document_type,
                a.model,
                sa.func.count(),
                sa.func.sum(a.duration_seconds),
                sa.func.sum(a.cost_usd),
                sa.func.sum(a.tokens_used),
                sa.func.coalesce(sa.func.sum(a.confidence), 0.0),
                sa.func.count(a.confidence),
                # The stored count, never the JSON: sealed (RESTRICTED) rows hold [] there.
                sa.func.coalesce(sa.func.sum(a.finding_count), 0),
            )
            .join(d, d.id == a.document_id)
            .where(
                a.organization_id == org,
                a.completed_at >= start,
                a.completed_at < end,
                d.deleted_at.is_(None),
            )
            .group_by(*_first_columns(4))
        )

    await _replace(session, AnalysisRollup, org, days, _rollup_rows(org, days, groups))


async def _refresh_feedback(session: AsyncSession, org: uuid.UUID, days: Sequence[date]) -> None:
    f, d, a = Feedback, Document, Analysis
    satisfied = sa.func.count().filter(f.rating >= 4)

    def feedback(*columns: Any) -> Callable[[Any, Any], sa.Select[Any]]:
        def groups(start: Any, end: Any) -> sa.Select[Any]:
            return (
                sa.select(*columns)
                .join(d, d.id == f.document_id)
                .outerjoin(a, a.id == f.analysis_id)
                .where(
                    f.organization_id == org,
                    f.created_at >= start,
                    f.created_at < end,
                    d.deleted_at.is_(None),
                )
            )

        return groups

    bucket = _bucket(d.classification, d.department)
    by_kind = feedback(
        *bucket,
        sa.func.coalesce(f.category, ""),
        sa.func.coalesce(a.model, ""),
        f.action,
        f.workflow_status,
        sa.func.count(),
        sa.func.count(f.rating),
        sa.func.coalesce(sa.func.sum(f.rating), 0),
        satisfied,
    )
    await _replace(
        session,
        FeedbackRollup,
        org,
        days,
        _rollup_rows(org, days, lambda s, e: by_kind(s, e).group_by(*_first_columns(6))),
    )
    by_author = feedback(f.user_id, *bucket, sa.func.count(), satisfied)
    await _replace(
        session,
        ReviewerRollup,
        org,
        days,
        _rollup_rows(
            org,
            days,
            lambda s, e: by_author(s, e).where(f.user_id.is_not(None)).group_by(*_first_columns(3)),
        ),
    )


async def _refresh_activity(session: AsyncSession, org: uuid.UUID, days: Sequence[date]) -> None:
    e = AuditEvent
    classification = sa.func.coalesce(e.classification, Classification.PUBLIC.value)

    def events(*when: Any) -> Callable[[Any, Any], sa.Select[Any]]:
        def groups(start: Any, end: Any) -> sa.Select[Any]:
            return (
                sa.select(
                    *when,
                    e.actor_id,
                    e.category,
                    *_bucket(classification, e.department),
                    sa.func.count(),
                )
                .where(
                    e.organization_id == org,
                    e.created_at >= start,
                    e.created_at < end,
                    e.actor_id.is_not(None),
                )
                .group_by(*_first_columns(len(when) + 4))
            )

        return groups

    hourly = _rollup_rows(org, days, events(utc_hour(e.created_at)))
    # (organization, day, hour, ...): the hourly table has no day column
    hourly = hourly.with_only_columns(*[c for i, c in enumerate(hourly.selected_columns) if i != 1])
    await _replace(session, ActivityHourlyRollup, org, days, hourly, time_column="hour")
    await _replace(session, ActivityDailyRollup, org, days, _rollup_rows(org, days, events()))


_REFRESH = {
    Kind.DOCUMENTS: _refresh_documents,
    Kind.ANALYSES: _refresh_analyses,
    Kind.FEEDBACK: _refresh_feedback,
    Kind.ACTIVITY: _refresh_activity,
}


async def refresh_rollups(session: AsyncSession, organization_id: uuid.UUID, *, limit: int) -> int:
    """Recompute up to ``limit`` marked day slices of one organization; the number done (0:
    nothing was stale). Run READ COMMITTED: markers are taken before the slices are read, so
    every change whose marker is taken is in what is read; one that commits in between keeps
    its marker and is read again next time (recomputing is idempotent)."""
    # One refresh per organization at a time: two would replace the same rollup rows.
    lock_key = sa.func.hashtextextended(f"prism.bi:{organization_id}", 0)
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key)))
    i = Invalidation
    picked = (
        await session.execute(
            sa.select(i.kind, i.day)
            .where(i.organization_id == organization_id)
            .distinct()
            .order_by(i.kind, i.day)
            .limit(limit)
        )
    ).all()
    if not picked:
        return 0
    await session.execute(
        sa.delete(i).where(
            i.organization_id == organization_id,
            sa.tuple_(i.kind, i.day).in_([(k, d) for k, d in picked]),
        )
    )
    by_kind: dict[Kind, list[date]] = {}
    for kind, day in picked:
        by_kind.setdefault(Kind(kind), []).append(day)
    for kind, days in by_kind.items():
        await _REFRESH[kind](session, organization_id, days)
    return len(picked)


async def pending_slices(session: AsyncSession, organization_id: uuid.UUID) -> int:
    i = Invalidation
    query = sa.select(sa.func.count(sa.distinct(sa.tuple_(i.kind, i.day)))).where(
        i.organization_id == organization_id
    )
    return int(await session.scalar(query) or 0)


async def schedule_refreshes(session: AsyncSession, *, max_attempts: int) -> int:
    """Queue a refresh job for every organization with stale slices and no refresh queued or
    running (any organization: a narrow SECURITY DEFINER function, as for claiming jobs)."""
    made = await session.scalar(sa.select(sa.func.prism_bi_schedule_refreshes(max_attempts)))
    return int(made or 0)


# --- reading -----------------------------------------------------------------------------------


def _visible(scope: Scope, rollup: Any) -> sa.ColumnElement[bool]:
    return sa.and_(
        rollup.organization_id == scope.organization_id,
        within_clearance(scope, rollup.classification, rollup.department),
    )


def _in_days(rollup: Any, start: date, end: date) -> sa.ColumnElement[bool]:
    return sa.and_(rollup.day >= start, rollup.day <= end)


def _int(value: Any) -> int:
    return int(value or 0)


def _float(value: Any) -> float:
    return float(value or 0.0)


def _money(value: Any) -> Decimal:
    return Decimal(value or 0)


@dataclass(frozen=True)
class ExecutiveFigures:
    start: date
    end: date
    documents_processed: int
    high_risk_documents: int
    active_users: int
    analyses: int
    duration_seconds: float
    feedback_items: int
    cost_usd: Decimal
    rated: int
    rating_sum: int

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def average_processing_seconds(self) -> float:
        return self.duration_seconds / self.analyses if self.analyses else 0.0

    @property
    def average_rating(self) -> float | None:
        return self.rating_sum / self.rated if self.rated else None

    @property
    def documents_per_day(self) -> float:
        return self.documents_processed / self.days

    @property
    def cost_per_document(self) -> Decimal:
        if not self.documents_processed:
            return Decimal("0.000000")
        return (self.cost_usd / self.documents_processed).quantize(Decimal("0.000001"))

    @property
    def high_risk_percentage(self) -> float:
        if not self.documents_processed:
            return 0.0
        return 100.0 * self.high_risk_documents / self.documents_processed

    @property
    def documents_per_active_user(self) -> float:
        return self.documents_processed / self.active_users if self.active_users else 0.0


async def read_executive_figures(
    session: AsyncSession, scope: Scope, *, start: date, end: date
) -> ExecutiveFigures:
    dr, ar, fr, ud = DocumentRollup, AnalysisRollup, FeedbackRollup, ActivityDailyRollup
    completed = dr.processing_status == ProcessingStatus.COMPLETED
    documents = (
        sa.select(
            sa.func.sum(dr.documents).filter(completed),
            sa.func.sum(dr.documents).filter(completed, dr.risk_level == RiskLevel.HIGH.value),
        )
        .where(_visible(scope, dr), _in_days(dr, start, end))
        .subquery()
    )
    analyses = (
        sa.select(
            sa.func.sum(ar.analyses),
            sa.func.sum(ar.duration_seconds),
            sa.func.sum(ar.feedback_items),
            sa.func.sum(ar.cost_usd),
        )
        .where(_visible(scope, ar), _in_days(ar, start, end))
        .subquery()
    )
    ratings = (
        sa.select(sa.func.sum(fr.rated), sa.func.sum(fr.rating_sum))
        .where(_visible(scope, fr), _in_days(fr, start, end))
        .subquery()
    )
    users = (
        sa.select(sa.func.count(sa.distinct(ud.user_id)))
        .where(_visible(scope, ud), _in_days(ud, start, end))
        .subquery()
    )
    # Four one-row aggregates side by side: one round trip.
    joined = documents.join(analyses, sa.true()).join(ratings, sa.true()).join(users, sa.true())
    query = sa.select(documents, analyses, ratings, users).select_from(joined)
    row = (await session.execute(query)).one()
    processed, high, analysed, duration, items, cost, rated, rating_sum, active = row
    return ExecutiveFigures(
        start=start,
        end=end,
        documents_processed=_int(processed),
        high_risk_documents=_int(high),
        active_users=_int(active),
        analyses=_int(analysed),
        duration_seconds=_float(duration),
        feedback_items=_int(items),
        cost_usd=_money(cost),
        rated=_int(rated),
        rating_sum=_int(rating_sum),
    )


@dataclass(frozen=True)
class DailyFigures:
    day: date
    analyses: int = 0
    duration_seconds: float = 0.0
    cost_usd: Decimal = Decimal("0")
    confidence_sum: float = 0.0
    confidences: int = 0
    feedback_items: int = 0
    satisfied_users: int = 0

    @property
    def average_processing_seconds(self) -> float:
        return self.duration_seconds / self.analyses if self.analyses else 0.0

    @property
    def average_confidence(self) -> float | None:
        return self.confidence_sum / self.confidences if self.confidences else None


async def read_daily_figures(
    session: AsyncSession, scope: Scope, *, start: date, end: date
) -> list[DailyFigures]:
    """One entry per day of [start, end], days without activity included (as zeros)."""
    ar, rr = AnalysisRollup, ReviewerRollup
    analyses = (
        sa.select(
            ar.day,
            sa.func.sum(ar.analyses),
            sa.func.sum(ar.duration_seconds),
            sa.func.sum(ar.cost_usd),
            sa.func.sum(ar.confidence_sum),
            sa.func.sum(ar.confidences),
            sa.func.sum(ar.feedback_items),
        )
        .where(_visible(scope, ar), _in_days(ar, start, end))
        .group_by(ar.day)
    )
    satisfied = (
        sa.select(rr.day, sa.func.count(sa.distinct(rr.user_id)))
        .where(_visible(scope, rr), _in_days(rr, start, end), rr.satisfied > 0)
        .group_by(rr.day)
    )
    by_day: dict[date, dict[str, Any]] = {}
    for day, count, duration, cost, confidence, confidences, items in await session.execute(
        analyses
    ):
        by_day[day] = {
            "analyses": _int(count),
            "duration_seconds": _float(duration),
            "cost_usd": _money(cost),
            "confidence_sum": _float(confidence),
            "confidences": _int(confidences),
            "feedback_items": _int(items),
        }
    for day, users in await session.execute(satisfied):
        by_day.setdefault(day, {})["satisfied_users"] = _int(users)
    return [
        DailyFigures(day=start + timedelta(days=i), **by_day.get(start + timedelta(days=i), {}))
        for i in range((end - start).days + 1)
    ]


class Interval(StrEnum):
    """How the grouped aggregates cut time: calendar days, ISO weeks (from Monday), calendar
    months, or the whole range as one period."""

    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    TOTAL = "TOTAL"


def _period(interval: Interval, day: Any, start: date) -> sa.ColumnElement[date]:
    if interval is Interval.TOTAL:
        return sa.cast(sa.literal(start), sa.Date)
    if interval is Interval.DAY:
        return sa.cast(day, sa.Date)
    return sa.cast(sa.func.date_trunc(interval.value.lower(), day), sa.Date)


class UsageDimension(StrEnum):
    MODEL = "MODEL"
    DOCUMENT_TYPE = "DOCUMENT_TYPE"
    CLASSIFICATION = "CLASSIFICATION"


@dataclass(frozen=True)
class UsageRow:
    period_start: date
    model: str | None
    document_type: DocumentType | None
    classification: Classification | None
    analyses: int
    tokens_used: int
    cost_usd: Decimal
    duration_seconds: float
    confidence_sum: float
    confidences: int
    feedback_items: int


async def read_ai_usage(
    session: AsyncSession,
    scope: Scope,
    *,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[UsageDimension],
) -> list[UsageRow]:
    ar = AnalysisRollup
    dimensions = {
        UsageDimension.MODEL: ar.model,
        UsageDimension.DOCUMENT_TYPE: ar.document_type,
        UsageDimension.CLASSIFICATION: ar.classification,
    }
    keys: list[Any] = [_period(interval, ar.day, start).label("period_start")]
    keys += [dimensions[d].label(d.value) for d in UsageDimension if d in group_by]
    query = (
        sa.select(
            *keys,
            sa.func.sum(ar.analyses).label("analyses"),
            sa.func.sum(ar.tokens_used).label("tokens_used"),
            sa.func.sum(ar.cost_usd).label("cost_usd"),
            sa.func.sum(ar.duration_seconds).label("duration_seconds"),
            sa.func.sum(ar.confidence_sum).label("confidence_sum"),
            sa.func.sum(ar.confidences).label("confidences"),
            sa.func.sum(ar.feedback_items).label("feedback_items"),
        )
        .where(_visible(scope, ar), _in_days(ar, start, end))
        .group_by(*_first_columns(len(keys)))
        .order_by(*_first_columns(len(keys)))
    )
    rows = (await session.execute(query)).mappings()
    return [
        UsageRow(
            period_start=r["period_start"],
            model=r.get(UsageDimension.MODEL.value),
            document_type=r.get(UsageDimension.DOCUMENT_TYPE.value),
            classification=r.get(UsageDimension.CLASSIFICATION.value),
            analyses=_int(r["analyses"]),
            tokens_used=_int(r["tokens_used"]),
            cost_usd=_money(r["cost_usd"]),
            duration_seconds=_float(r["duration_seconds"]),
            confidence_sum=_float(r["confidence_sum"]),
            confidences=_int(r["confidences"]),
            feedback_items=_int(r["feedback_items"]),
        )
        for r in rows
    ]


class DocumentDimension(StrEnum):
    DOCUMENT_TYPE = "DOCUMENT_TYPE"
    CLASSIFICATION = "CLASSIFICATION"


@dataclass(frozen=True)
class RiskRow:
    period_start: date
    document_type: DocumentType | None
    classification: Classification | None
    risk_level: RiskLevel | None
    documents: int


async def read_risk_distribution(
    session: AsyncSession,
    scope: Scope,
    *,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[DocumentDimension],
) -> list[RiskRow]:
    """Live documents uploaded in the range by risk level (none: not analysed yet)."""
    dr = DocumentRollup
    dimensions = {
        DocumentDimension.DOCUMENT_TYPE: dr.document_type,
        DocumentDimension.CLASSIFICATION: dr.classification,
    }
    keys: list[Any] = [_period(interval, dr.day, start).label("period_start")]
    keys += [dimensions[d].label(d.value) for d in DocumentDimension if d in group_by]
    keys.append(dr.risk_level.label("risk_level"))
    query = (
        sa.select(*keys, sa.func.sum(dr.documents).label("documents"))
        .where(_visible(scope, dr), _in_days(dr, start, end))
        .group_by(*_first_columns(len(keys)))
        .order_by(*_first_columns(len(keys)))
    )
    rows = (await session.execute(query)).mappings()
    return [
        RiskRow(
            period_start=r["period_start"],
            document_type=r.get(DocumentDimension.DOCUMENT_TYPE.value),
            classification=r.get(DocumentDimension.CLASSIFICATION.value),
            risk_level=RiskLevel(r["risk_level"]) if r["risk_level"] else None,
            documents=_int(r["documents"]),
        )
        for r in rows
    ]


class FeedbackDimension(StrEnum):
    CATEGORY = "CATEGORY"
    MODEL = "MODEL"


@dataclass(frozen=True)
class FeedbackRow:
    period_start: date
    category: str | None
    model: str | None
    feedback: int
    accepted: int
    rejected: int
    modified: int
    custom: int
    review_approved: int
    review_rejected: int
    rated: int
    rating_sum: int

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.feedback if self.feedback else 0.0

    @property
    def average_rating(self) -> float | None:
        return self.rating_sum / self.rated if self.rated else None


async def read_feedback_acceptance(
    session: AsyncSession,
    scope: Scope,
    *,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[FeedbackDimension],
) -> list[FeedbackRow]:
    fr = FeedbackRollup
    dimensions = {FeedbackDimension.CATEGORY: fr.category, FeedbackDimension.MODEL: fr.model}
    keys: list[Any] = [_period(interval, fr.day, start).label("period_start")]
    keys += [dimensions[d].label(d.value) for d in FeedbackDimension if d in group_by]

    def with_action(action: FeedbackAction) -> Any:
        return sa.func.sum(fr.feedback).filter(fr.action == action)

    def reviewed(status: WorkflowStatus) -> Any:
        return sa.func.sum(fr.feedback).filter(fr.workflow_status == status)

    query = (
        sa.select(
            *keys,
            sa.func.sum(fr.feedback).label("feedback"),
            with_action(FeedbackAction.ACCEPTED).label("accepted"),
            with_action(FeedbackAction.REJECTED).label("rejected"),
            with_action(FeedbackAction.MODIFIED).label("modified"),
            with_action(FeedbackAction.CUSTOM).label("custom"),
            reviewed(WorkflowStatus.APPROVED).label("review_approved"),
            reviewed(WorkflowStatus.REJECTED).label("review_rejected"),
            sa.func.sum(fr.rated).label("rated"),
            sa.func.sum(fr.rating_sum).label("rating_sum"),
        )
        .where(_visible(scope, fr), _in_days(fr, start, end))
        .group_by(*_first_columns(len(keys)))
        .order_by(*_first_columns(len(keys)))
    )
    rows = (await session.execute(query)).mappings()
    return [
        FeedbackRow(
            period_start=r["period_start"],
            category=r.get(FeedbackDimension.CATEGORY.value) or None,
            model=r.get(FeedbackDimension.MODEL.value) or None,
            **{
                name: _int(r[name])
                for name in (
                    "feedback",
                    "accepted",
                    "rejected",
                    "modified",
                    "custom",
                    "review_approved",
                    "review_rejected",
                    "rated",
                    "rating_sum",
                )
            },
        )
        for r in rows
    ]


class ActivityInterval(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


@dataclass(frozen=True)
class ActivityRow:
    period_start: datetime
    events: int
    active_users: int


async def read_user_activity(
    session: AsyncSession,
    scope: Scope,
    *,
    start: date,
    end: date,
    interval: ActivityInterval,
    categories: Sequence[str] | None,
) -> list[ActivityRow]:
    """Events made by users and distinct active users per period (periods start at UTC
    midnight, or at the hour for HOUR)."""
    if interval is ActivityInterval.HOUR:
        hr = ActivityHourlyRollup
        visible = [
            _visible(scope, hr),
            hr.hour >= _utc_midnight(start),
            hr.hour < _utc_midnight(end + timedelta(days=1)),
        ]
        period: Any = hr.hour
        table: Any = hr
    else:
        dr = ActivityDailyRollup
        visible = [_visible(scope, dr), _in_days(dr, start, end)]
        period = sa.func.timezone(
            "UTC", sa.cast(_period(Interval(interval.value), dr.day, start), sa.DateTime)
        )
        table = dr
    if categories:
        visible.append(table.category.in_(list(categories)))
    query = (
        sa.select(
            period.label("period_start"),
            sa.func.sum(table.events),
            sa.func.count(sa.distinct(table.user_id)),
        )
        .where(*visible)
        .group_by(*_first_columns(1))
        .order_by(*_first_columns(1))
    )
    return [
        ActivityRow(period_start=when, events=_int(events), active_users=_int(users))
        for when, events, users in await session.execute(query)
    ]


@dataclass(frozen=True)
class HourOfDayRow:
    hour_of_day: int
    events: int
    active_users: int


async def read_activity_by_hour_of_day(
    session: AsyncSession,
    scope: Scope,
    *,
    start: date,
    end: date,
    categories: Sequence[str] | None,
) -> list[HourOfDayRow]:
    """The day's profile: events and distinct users per UTC hour of day (0-23) over the
    range; all 24 hours, quiet ones as zeros."""
    hr = ActivityHourlyRollup
    hour_of_day = sa.cast(sa.extract("hour", sa.func.timezone("UTC", hr.hour)), sa.Integer)
    conditions = [
        _visible(scope, hr),
        hr.hour >= _utc_midnight(start),
        hr.hour < _utc_midnight(end + timedelta(days=1)),
    ]
    if categories:
        conditions.append(hr.category.in_(list(categories)))
    query = (
        sa.select(hour_of_day, sa.func.sum(hr.events), sa.func.count(sa.distinct(hr.user_id)))
        .where(*conditions)
        .group_by(*_first_columns(1))
    )
    found = {hour: (events, users) for hour, events, users in await session.execute(query)}
    return [
        HourOfDayRow(
            hour_of_day=h,
            events=_int(found.get(h, (0, 0))[0]),
            active_users=_int(found.get(h, (0, 0))[1]),
        )
        for h in range(24)
    ]


def _utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
