"""Reading the rollups within a caller's scope: the figures and breakdowns the BI fields
answer with (``prism.bi.reports``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from prism.models.bi.tables import (
    ActivityDailyRollup,
    ActivityHourlyRollup,
    AnalysisRollup,
    DocumentRollup,
    FeedbackRollup,
    ReviewerRollup,
    first_columns,
    utc_midnight,
)
from prism.models.enums import (
    Classification,
    DocumentType,
    FeedbackAction,
    ProcessingStatus,
    RiskLevel,
    WorkflowStatus,
)
from prism.models.scope import Scope, within_clearance

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
        .group_by(*first_columns(len(keys)))
        .order_by(*first_columns(len(keys)))
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
        .group_by(*first_columns(len(keys)))
        .order_by(*first_columns(len(keys)))
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
        .group_by(*first_columns(len(keys)))
        .order_by(*first_columns(len(keys)))
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
            hr.hour >= utc_midnight(start),
            hr.hour < utc_midnight(end + timedelta(days=1)),
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
        .group_by(*first_columns(1))
        .order_by(*first_columns(1))
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
        hr.hour >= utc_midnight(start),
        hr.hour < utc_midnight(end + timedelta(days=1)),
    ]
    if categories:
        conditions.append(hr.category.in_(list(categories)))
    query = (
        sa.select(hour_of_day, sa.func.sum(hr.events), sa.func.count(sa.distinct(hr.user_id)))
        .where(*conditions)
        .group_by(*first_columns(1))
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
