"""BI fields: each calls its report (``prism.bi.reports``) in the request's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from prism.bi import reports
from prism.execution.context import Context
from prism.models.bi import reads as bi_rows


async def executive_summary(ctx: Context, period_days: int) -> bi_rows.ExecutiveFigures:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.executive_summary(session, principal, period_days)


async def daily_summaries(ctx: Context, start: date, end: date) -> list[bi_rows.DailyFigures]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.daily_summaries(session, principal, start, end)


async def ai_usage(
    ctx: Context,
    start: date,
    end: date,
    interval: bi_rows.Interval,
    group_by: Sequence[bi_rows.UsageDimension] | None,
) -> list[bi_rows.UsageRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.ai_usage(session, principal, start, end, interval, group_by)


async def risk_distribution(
    ctx: Context,
    start: date,
    end: date,
    interval: bi_rows.Interval,
    group_by: Sequence[bi_rows.DocumentDimension] | None,
) -> list[bi_rows.RiskRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.risk_distribution(session, principal, start, end, interval, group_by)


async def feedback_acceptance(
    ctx: Context,
    start: date,
    end: date,
    interval: bi_rows.Interval,
    group_by: Sequence[bi_rows.FeedbackDimension] | None,
) -> list[bi_rows.FeedbackRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.feedback_acceptance(session, principal, start, end, interval, group_by)


async def user_activity(
    ctx: Context,
    start: date,
    end: date,
    interval: bi_rows.ActivityInterval,
    categories: Sequence[str] | None,
) -> list[bi_rows.ActivityRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.user_activity(session, principal, start, end, interval, categories)


async def activity_by_hour_of_day(
    ctx: Context, start: date, end: date, categories: Sequence[str] | None
) -> list[bi_rows.HourOfDayRow]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await reports.activity_by_hour_of_day(session, principal, start, end, categories)
