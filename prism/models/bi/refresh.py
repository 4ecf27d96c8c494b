"""The rollups' maintenance SQL: a day slice recomputed from the base tables, the markers
that say which are stale, and the scheduling of refresh jobs (``prism.bi.refresh``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from prism.models.analyses import Analysis
from prism.models.audit import AuditEvent
from prism.models.base import Base
from prism.models.bi.tables import (
    ActivityDailyRollup,
    ActivityHourlyRollup,
    AnalysisRollup,
    DocumentRollup,
    FeedbackRollup,
    Invalidation,
    Kind,
    ReviewerRollup,
    first_columns,
    utc_midnight,
)
from prism.models.documents import Document
from prism.models.enums import (
    Classification,
)
from prism.models.feedback import Feedback


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
                sa.and_(hour >= utc_midnight(d), hour < utc_midnight(d + timedelta(days=1)))
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
            .group_by(*first_columns(5))
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
            .group_by(*first_columns(4))
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
        _rollup_rows(org, days, lambda s, e: by_kind(s, e).group_by(*first_columns(6))),
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
            lambda s, e: by_author(s, e).where(f.user_id.is_not(None)).group_by(*first_columns(3)),
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
                .group_by(*first_columns(len(when) + 4))
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


async def read_uncounted_sealed_analyses(session: AsyncSession, *, limit: int) -> list[Analysis]:
    """Sealed analyses stored before ``finding_count`` existed, locked: waited for, not
    skipped (a row skipped now would stay uncounted once the job has finished)."""
    return list(
        await session.scalars(
            sa.select(Analysis)
            .where(Analysis.sealed.is_not(None), Analysis.finding_count.is_(None))
            .limit(limit)
            .with_for_update()
        )
    )


async def store_finding_count(session: AsyncSession, analysis_id: uuid.UUID, count: int) -> None:
    """The row's update marks its BI day slice stale: the next refresh counts it."""
    await session.execute(
        sa.update(Analysis).where(Analysis.id == analysis_id).values(finding_count=count)
    )
