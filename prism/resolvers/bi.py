"""BI fields: each calls its report (``prism.bi.reports``) in the request's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from prism.bi import reports
from prism.execution.context import Context
from prism.models.bi.reads import (
    ActivityInterval,
    ActivityRow,
    DailyFigures,
    DocumentDimension,
    ExecutiveFigures,
    FeedbackDimension,
    FeedbackRow,
    HourOfDayRow,
    Interval,
    RiskRow,
    UsageDimension,
    UsageRow,
)


async def executive_summary(ctx: Context, period_days: int) -> ExecutiveFigures:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.executive_summary(session, principal, period_days)


async def daily_summaries(ctx: Context, start: date, end: date) -> list[DailyFigures]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.daily_summaries(session, principal, start, end)


async def ai_usage(
    ctx: Context,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[UsageDimension] | None,
) -> list[UsageRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.ai_usage(session, principal, start, end, interval, group_by)


async def risk_distribution(
    ctx: Context,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[DocumentDimension] | None,
) -> list[RiskRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.risk_distribution(session, principal, start, end, interval, group_by)


async def feedback_acceptance(
    ctx: Context,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[FeedbackDimension] | None,
) -> list[FeedbackRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.feedback_acceptance(session, principal, start, end, interval, group_by)


async def user_activity(
    ctx: Context,
    start: date,
    end: date,
    interval: ActivityInterval,
    categories: Sequence[str] | None,
) -> list[ActivityRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.user_activity(session, principal, start, end, interval, categories)


async def activity_by_hour_of_day(
    ctx: Context, start: date, end: date, categories: Sequence[str] | None
) -> list[HourOfDayRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.activity_by_hour_of_day(session, principal, start, end, categories)
