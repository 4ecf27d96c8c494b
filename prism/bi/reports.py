"""BI reports: authorize (``bi:read``), check the range asked for, read the rollups within
the caller's scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.errors import BadUserInput
from prism.models.bi import reads
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

MAX_PERIOD_DAYS = 3650
MAX_DAILY_DAYS = 366
# The longest range each interval may cover: bounded answers (a year of days, ten years of
# weeks or months), and hourly reads kept to what the hourly table answers quickly.
MAX_DAYS: dict[Interval, int] = {
    Interval.DAY: 366,
    Interval.WEEK: 3660,
    Interval.MONTH: 3660,
    Interval.TOTAL: 3660,
}
MAX_ACTIVITY_DAYS: dict[ActivityInterval, int] = {
    ActivityInterval.HOUR: 31,
    ActivityInterval.DAY: 366,
    ActivityInterval.WEEK: 3660,
    ActivityInterval.MONTH: 3660,
}
MAX_HOUR_OF_DAY_DAYS = 92
MAX_CATEGORIES = 20
MAX_GROUP_BY = 5

D = TypeVar("D")
R = TypeVar("R")


def today() -> date:
    """BI days are UTC calendar days."""
    return datetime.now(UTC).date()


def _reader(principal: Principal) -> Principal:
    require(principal, Action.BI_READ)
    return principal


# The calendar BI answers over: periods are computed a day, week or month past their ends,
# which the ends of Python's calendar (0001-01-01, 9999-12-31) do not have.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)


def check_range(start: date, end: date, max_days: int) -> None:
    for name, day in (("from", start), ("to", end)):
        if not FIRST_DAY <= day <= LAST_DAY:
            raise BadUserInput(
                f"`{name}` ({day.isoformat()}) is outside {FIRST_DAY.isoformat()} to "
                f"{LAST_DAY.isoformat()}.",
                argument=name,
            )
    if start > end:
        raise BadUserInput(
            f"`from` ({start.isoformat()}) is after `to` ({end.isoformat()}).", argument="from"
        )
    days = (end - start).days + 1
    if days > max_days:
        raise BadUserInput(
            f"The range covers {days} days; at most {max_days} may be asked for at once.",
            argument="to",
        )


def _dimensions(values: Sequence[D] | None, argument: str) -> list[D]:
    chosen = list(values or [])
    if len(chosen) > MAX_GROUP_BY:
        raise BadUserInput(f"`{argument}` takes at most {MAX_GROUP_BY} values.", argument=argument)
    return list(dict.fromkeys(chosen))


def _categories(categories: Sequence[str] | None) -> list[str] | None:
    if categories is None:
        return None
    if len(categories) > MAX_CATEGORIES or any(len(c) > 50 for c in categories):
        raise BadUserInput(
            f"`categories` takes at most {MAX_CATEGORIES} names of at most 50 characters.",
            argument="categories",
        )
    return list(dict.fromkeys(categories))


async def executive_summary(
    session: AsyncSession, principal: Principal, period_days: int
) -> ExecutiveFigures:
    _reader(principal)
    if not 1 <= period_days <= MAX_PERIOD_DAYS:
        raise BadUserInput(
            f"`periodDays` is 1 to {MAX_PERIOD_DAYS}; got {period_days}.", argument="periodDays"
        )
    end = today()
    start = end - timedelta(days=period_days - 1)
    return await reads.read_executive_figures(session, principal.scope(), start=start, end=end)


async def daily_summaries(
    session: AsyncSession, principal: Principal, start: date, end: date
) -> list[DailyFigures]:
    _reader(principal)
    check_range(start, end, MAX_DAILY_DAYS)
    return await reads.read_daily_figures(session, principal.scope(), start=start, end=end)


async def _breakdown(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[D] | None,
    read: Callable[..., Awaitable[list[R]]],
) -> list[R]:
    """A breakdown over periods and dimensions, read from the rollups within the caller's
    scope (the date range checked against the interval's limit)."""
    _reader(principal)
    check_range(start, end, MAX_DAYS[interval])
    dimensions = _dimensions(group_by, "groupBy")
    return await read(
        session, principal.scope(), start=start, end=end, interval=interval, group_by=dimensions
    )


async def ai_usage(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[UsageDimension] | None,
) -> list[UsageRow]:
    return await _breakdown(session, principal, start, end, interval, group_by, reads.read_ai_usage)


async def risk_distribution(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[DocumentDimension] | None,
) -> list[RiskRow]:
    return await _breakdown(
        session, principal, start, end, interval, group_by, reads.read_risk_distribution
    )


async def feedback_acceptance(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    interval: Interval,
    group_by: Sequence[FeedbackDimension] | None,
) -> list[FeedbackRow]:
    return await _breakdown(
        session, principal, start, end, interval, group_by, reads.read_feedback_acceptance
    )


async def user_activity(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    interval: ActivityInterval,
    categories: Sequence[str] | None,
) -> list[ActivityRow]:
    _reader(principal)
    check_range(start, end, MAX_ACTIVITY_DAYS[interval])
    wanted = _categories(categories)
    return await reads.read_user_activity(
        session,
        principal.scope(),
        start=start,
        end=end,
        interval=interval,
        categories=wanted,
    )


async def activity_by_hour_of_day(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    categories: Sequence[str] | None,
) -> list[HourOfDayRow]:
    _reader(principal)
    check_range(start, end, MAX_HOUR_OF_DAY_DAYS)
    wanted = _categories(categories)
    return await reads.read_activity_by_hour_of_day(
        session, principal.scope(), start=start, end=end, categories=wanted
    )
