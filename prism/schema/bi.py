"""BI aggregates: the executive and daily summaries of the contract, and usage, risk, feedback
and activity breakdowns. Every number is of the caller's organization and only of what its
clearance lets it see (the RESTRICTED department rule included); days are UTC days."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, NewType

import strawberry

from prism.models.bi import reads as bi_models
from prism.resolvers import bi as bi_resolvers
from prism.schema.base import Info
from prism.schema.enums import Classification, DocumentType, RiskLevel

for _enum, _name, _description in (
    (
        bi_models.Interval,
        "TimeInterval",
        "How a range is cut: UTC days, ISO weeks (from Monday), calendar months, or TOTAL (the "
        "whole range as one period, starting at `from`). The first and last week or month may "
        "be partial: only days inside the range count.",
    ),
    (
        bi_models.ActivityInterval,
        "ActivityInterval",
        "How user activity is cut: UTC hours, days, ISO weeks or calendar months.",
    ),
    (bi_models.UsageDimension, "UsageDimension", "What AI usage can be grouped by."),
    (bi_models.DocumentDimension, "DocumentDimension", "What documents can be grouped by."),
    (bi_models.FeedbackDimension, "FeedbackDimension", "What feedback can be grouped by."),
):
    strawberry.enum(_enum, name=_name, description=_description)

Interval = bi_models.Interval
ActivityInterval = bi_models.ActivityInterval
UsageDimension = bi_models.UsageDimension
DocumentDimension = bi_models.DocumentDimension
FeedbackDimension = bi_models.FeedbackDimension

Long = NewType("Long", int)
# Registered through the schema's scalar_map (prism.schema.build_schema).
SCALARS: dict[object, Any] = {
    Long: strawberry.scalar(
        name="Long",
        description="An integer that may exceed 32 bits (token counts), as a JSON number.",
        serialize=int,
        parse_value=int,
    )
}

From = Annotated[dt.date, strawberry.argument(name="from", description="First day (UTC).")]
To = Annotated[dt.date, strawberry.argument(description="Last day (UTC), included.")]
Categories = Annotated[
    list[str] | None,
    strawberry.argument(
        description="Only audit events of these categories (e.g. review, data_change, "
        "authentication); at most 20. Default: all."
    ),
]


def _field(description: str) -> Any:
    return strawberry.field(description=description)


@strawberry.type(
    description="Headline numbers of the last `periodDays` UTC days (today included), for the "
    "caller's organization and within its clearance."
)
class ExecutiveSummary:
    period_days: int = _field("Days in the period.")
    period_start: dt.date = _field("First day of the period (UTC).")
    period_end: dt.date = _field("Last day of the period (UTC): today.")
    total_documents_processed: int = _field(
        "Documents uploaded in the period whose processing has completed (deleted ones are "
        "not counted)."
    )
    total_active_users: int = _field(
        "Distinct users with at least one audited action in the period."
    )
    average_processing_time_seconds: float = _field(
        "Mean duration of the AI analyses (one per section) completed in the period; 0 when "
        "there were none."
    )
    total_ai_feedback_items: int = _field(
        "AI feedback items of the analyses completed in the period."
    )
    average_user_satisfaction: float | None = _field(
        "Mean reviewer rating (1-5) of feedback given in the period; null when none was rated."
    )
    total_processing_cost_usd: Decimal = _field("AI cost of the analyses completed in the period.")
    high_risk_documents_count: int = _field("Of the processed documents, those whose risk is HIGH.")
    documents_per_day: float = _field("Processed documents per day of the period.")
    cost_per_document: Decimal = _field(
        "AI cost of the period per processed document; 0 when none was processed."
    )
    high_risk_percentage: float = _field("Share of processed documents with HIGH risk, in percent.")
    user_productivity_score: float = _field(
        "Processed documents per active user; 0 when nobody was active."
    )

    @classmethod
    def from_figures(cls, f: bi_models.ExecutiveFigures) -> ExecutiveSummary:
        return cls(
            period_days=f.days,
            period_start=f.start,
            period_end=f.end,
            total_documents_processed=f.documents_processed,
            total_active_users=f.active_users,
            average_processing_time_seconds=f.average_processing_seconds,
            total_ai_feedback_items=f.feedback_items,
            average_user_satisfaction=f.average_rating,
            total_processing_cost_usd=f.cost_usd,
            high_risk_documents_count=f.high_risk_documents,
            documents_per_day=f.documents_per_day,
            cost_per_document=f.cost_per_document,
            high_risk_percentage=f.high_risk_percentage,
            user_productivity_score=f.documents_per_active_user,
        )


@strawberry.type(description="One UTC day of AI analysis and review.")
class DailySummary:
    date: dt.date = _field("The day (UTC).")
    total_analyses: int = _field("AI analyses (one per section) completed that day.")
    avg_processing_time_seconds: float = _field("Their mean duration; 0 when there were none.")
    total_cost_usd: Decimal = _field("Their AI cost.")
    avg_confidence: float | None = _field("Their mean confidence; null when none reported one.")
    total_feedback_items: int = _field("AI feedback items they produced.")
    satisfied_users_count: int = _field("Distinct reviewers who rated feedback 4 or 5 that day.")

    @classmethod
    def from_figures(cls, f: bi_models.DailyFigures) -> DailySummary:
        return cls(
            date=f.day,
            total_analyses=f.analyses,
            avg_processing_time_seconds=f.average_processing_seconds,
            total_cost_usd=f.cost_usd,
            avg_confidence=f.average_confidence,
            total_feedback_items=f.feedback_items,
            satisfied_users_count=f.satisfied_users,
        )


@strawberry.type(description="AI usage of a period, by the dimensions asked for.")
class AiUsage:
    period_start: dt.date = _field("First day of the period.")
    model: str | None = _field("The model; null unless grouped by MODEL.")
    document_type: DocumentType | None = _field(
        "Type of the analysed documents; null unless grouped by DOCUMENT_TYPE."
    )
    classification: Classification | None = _field(
        "Classification of the analysed documents; null unless grouped by CLASSIFICATION."
    )
    analyses: int = _field("AI analyses completed.")
    tokens_used: Long = _field("Tokens they used.")
    cost_usd: Decimal = _field("Their AI cost.")
    average_duration_seconds: float = _field("Their mean duration.")
    average_confidence: float | None = _field("Their mean confidence; null when none reported one.")
    feedback_items: int = _field("AI feedback items they produced.")

    @classmethod
    def from_row(cls, r: bi_models.UsageRow) -> AiUsage:
        return cls(
            period_start=r.period_start,
            model=r.model,
            document_type=r.document_type,
            classification=r.classification,
            analyses=r.analyses,
            tokens_used=Long(r.tokens_used),
            cost_usd=r.cost_usd,
            average_duration_seconds=r.duration_seconds / r.analyses if r.analyses else 0.0,
            average_confidence=r.confidence_sum / r.confidences if r.confidences else None,
            feedback_items=r.feedback_items,
        )


@strawberry.type(description="Documents of a period with one risk level.")
class DocumentRisk:
    period_start: dt.date = _field("First day of the period.")
    document_type: DocumentType | None = _field(
        "The documents' type; null unless grouped by DOCUMENT_TYPE."
    )
    classification: Classification | None = _field(
        "The documents' classification; null unless grouped by CLASSIFICATION."
    )
    risk_level: RiskLevel | None = _field("Their risk; null for documents not analysed (yet).")
    documents: int = _field("Documents uploaded in the period (deleted ones not counted).")

    @classmethod
    def from_row(cls, r: bi_models.RiskRow) -> DocumentRisk:
        return cls(
            period_start=r.period_start,
            document_type=r.document_type,
            classification=r.classification,
            risk_level=r.risk_level,
            documents=r.documents,
        )


@strawberry.type(description="How reviewers answered the AI in a period.")
class FeedbackAcceptance:
    period_start: dt.date = _field("First day of the period.")
    category: str | None = _field(
        "Category of the AI feedback item; null unless grouped by CATEGORY, or for feedback "
        "on no particular item."
    )
    model: str | None = _field(
        "Model of the analysis the feedback is about; null unless grouped by MODEL."
    )
    feedback: int = _field("Feedback given.")
    accepted: int = _field("Of which ACCEPTED.")
    rejected: int = _field("Of which REJECTED.")
    modified: int = _field("Of which MODIFIED.")
    custom: int = _field("Of which CUSTOM.")
    approved_in_review: int = _field("Feedback an approver approved.")
    rejected_in_review: int = _field("Feedback an approver rejected.")
    acceptance_rate: float = _field(
        "accepted / feedback: how often reviewers accept the AI as it is (0 when no feedback)."
    )
    average_rating: float | None = _field("Mean rating (1-5); null when none was rated.")

    @classmethod
    def from_row(cls, r: bi_models.FeedbackRow) -> FeedbackAcceptance:
        return cls(
            period_start=r.period_start,
            category=r.category,
            model=r.model,
            feedback=r.feedback,
            accepted=r.accepted,
            rejected=r.rejected,
            modified=r.modified,
            custom=r.custom,
            approved_in_review=r.review_approved,
            rejected_in_review=r.review_rejected,
            acceptance_rate=r.acceptance_rate,
            average_rating=r.average_rating,
        )


@strawberry.type(description="User activity (audited actions) of a period.")
class ActivityPeriod:
    period_start: dt.datetime = _field("Start of the hour, day, week or month (UTC).")
    events: int = _field("Audited actions users made.")
    active_users: int = _field("Distinct users who made them.")


@strawberry.type(description="User activity at one hour of the day, over a range of days.")
class HourOfDayActivity:
    hour_of_day: int = _field("The hour (0-23, UTC).")
    events: int = _field("Audited actions made in that hour.")
    active_users: int = _field("Distinct users active in that hour on any day.")


@strawberry.type
class BiQuery:
    """BI fields of the root Query (ADMIN, AUDITOR, APPROVER; tokens need `bi:read`)."""

    @strawberry.field(
        description="Headline numbers of the last `periodDays` days (1-3650), fed by rollups "
        "(at most PRISM_BI_REFRESH_SECONDS behind). ADMIN, AUDITOR, APPROVER; `bi:read`."
    )
    async def executive_summary(
        self,
        info: Info,
        period_days: Annotated[
            int | None, strawberry.argument(description="Days, today included (null: 30).")
        ] = 30,
    ) -> ExecutiveSummary:
        days = 30 if period_days is None else period_days
        figures = await bi_resolvers.executive_summary(info.context, days)
        return ExecutiveSummary.from_figures(figures)

    @strawberry.field(
        description="One entry per UTC day of [from, to] (at most 366 days), quiet days "
        "included as zeros. ADMIN, AUDITOR, APPROVER; `bi:read`."
    )
    async def daily_summary(self, info: Info, from_: From, to: To) -> list[DailySummary]:
        days = await bi_resolvers.daily_summaries(info.context, from_, to)
        return [DailySummary.from_figures(d) for d in days]

    @strawberry.field(
        description="AI cost and tokens of analyses completed in [from, to], per period and "
        "grouped by model (default), document type and/or classification. DAY covers at most "
        "366 days, the other intervals 3660."
    )
    async def ai_usage(
        self,
        info: Info,
        from_: From,
        to: To,
        interval: Interval = Interval.TOTAL,
        group_by: Annotated[
            list[UsageDimension] | None,
            strawberry.argument(description="Default [MODEL]; [] for totals only."),
        ] = None,
    ) -> list[AiUsage]:
        dimensions = [UsageDimension.MODEL] if group_by is None else group_by
        rows = await bi_resolvers.ai_usage(info.context, from_, to, interval, dimensions)
        return [AiUsage.from_row(r) for r in rows]

    @strawberry.field(
        description="Documents uploaded in [from, to] by risk level, per period and grouped by "
        "document type (default) and/or classification."
    )
    async def risk_distribution(
        self,
        info: Info,
        from_: From,
        to: To,
        interval: Interval = Interval.TOTAL,
        group_by: Annotated[
            list[DocumentDimension] | None,
            strawberry.argument(description="Default [DOCUMENT_TYPE]; [] for risk only."),
        ] = None,
    ) -> list[DocumentRisk]:
        dimensions = [DocumentDimension.DOCUMENT_TYPE] if group_by is None else group_by
        rows = await bi_resolvers.risk_distribution(info.context, from_, to, interval, dimensions)
        return [DocumentRisk.from_row(r) for r in rows]

    @strawberry.field(
        description="How often reviewers accept the AI: feedback given in [from, to] by action, "
        "per period and grouped by category (default) and/or model."
    )
    async def feedback_acceptance(
        self,
        info: Info,
        from_: From,
        to: To,
        interval: Interval = Interval.TOTAL,
        group_by: Annotated[
            list[FeedbackDimension] | None,
            strawberry.argument(description="Default [CATEGORY]; [] for totals only."),
        ] = None,
    ) -> list[FeedbackAcceptance]:
        dimensions = [FeedbackDimension.CATEGORY] if group_by is None else group_by
        rows = await bi_resolvers.feedback_acceptance(info.context, from_, to, interval, dimensions)
        return [FeedbackAcceptance.from_row(r) for r in rows]

    @strawberry.field(
        description="Audited user actions and distinct active users per hour (default; at most "
        "31 days), day (366), week or month (3660) of [from, to]; periods without activity "
        "are left out."
    )
    async def user_activity(
        self,
        info: Info,
        from_: From,
        to: To,
        interval: ActivityInterval = ActivityInterval.HOUR,
        categories: Categories = None,
    ) -> list[ActivityPeriod]:
        rows = await bi_resolvers.user_activity(info.context, from_, to, interval, categories)
        return [ActivityPeriod(period_start=r.period_start, **_counts(r)) for r in rows]

    @strawberry.field(
        description="The working day's shape: audited user actions and distinct active users "
        "per UTC hour of day (all 24) over [from, to] (at most 92 days)."
    )
    async def activity_by_hour_of_day(
        self, info: Info, from_: From, to: To, categories: Categories = None
    ) -> list[HourOfDayActivity]:
        rows = await bi_resolvers.activity_by_hour_of_day(info.context, from_, to, categories)
        return [HourOfDayActivity(hour_of_day=r.hour_of_day, **_counts(r)) for r in rows]


def _counts(row: bi_models.ActivityRow | bi_models.HourOfDayRow) -> dict[str, int]:
    return {"events": row.events, "active_users": row.active_users}
