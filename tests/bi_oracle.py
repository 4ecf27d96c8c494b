"""What the BI numbers must be, computed in Python from the base rows of one organization:
independent of the rollups' SQL, with visibility decided by the policy's own ``can_see``."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from prism.authz.policy import Resource, can_see
from prism.authz.principal import Principal
from prism.models.analyses import Analysis
from prism.models.audit import AuditEvent
from prism.models.bi import reads as bi_models
from prism.models.bi import tables as bi_tables
from prism.models.documents import Document
from prism.models.enums import Classification, ProcessingStatus, RiskLevel
from prism.models.feedback import Feedback
from prism.services import Services


@dataclass
class BaseRows:
    documents: dict[uuid.UUID, Document]
    analyses: dict[uuid.UUID, Analysis]
    feedback: list[Feedback]
    events: list[AuditEvent]

    @property
    def live(self) -> dict[uuid.UUID, Document]:
        return {i: d for i, d in self.documents.items() if d.deleted_at is None}


async def base_rows(services: Services, organization_id: uuid.UUID) -> BaseRows:
    async with services.db.transaction(organization_id) as session:
        documents = list(await session.scalars(sa.select(Document)))
        analyses = list(await session.scalars(sa.select(Analysis)))
        # The truth is the findings themselves: a RESTRICTED analysis's are opened (its JSON
        # column holds [] while they are sealed), never taken from a stored count.
        await services.envelope.open_analyses(session, analyses)
        feedback = list(await session.scalars(sa.select(Feedback)))
        events = list(
            await session.scalars(sa.select(AuditEvent).where(AuditEvent.actor_id.is_not(None)))
        )
    return BaseRows(
        documents={d.id: d for d in documents},
        analyses={a.id: a for a in analyses},
        feedback=feedback,
        events=events,
    )


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def bucket_department(classification: Classification, department: str | None) -> str:
    return (department or "") if classification is Classification.RESTRICTED else ""


def _add(table: dict[tuple[Any, ...], list[Any]], key: tuple[Any, ...], *values: Any) -> None:
    if key in table:
        table[key] = [a + b for a, b in zip(table[key], values, strict=True)]
    else:
        table[key] = list(values)


def expected_rollups(base: BaseRows) -> dict[str, dict[tuple[Any, ...], list[Any]]]:
    """Every rollup table as it must be: primary key -> measures."""
    tables: dict[str, dict[tuple[Any, ...], list[Any]]] = defaultdict(dict)
    live = base.live
    for d in live.values():
        key = (
            d.organization_id,
            day_of(d.created_at),
            d.classification,
            bucket_department(d.classification, d.department),
            d.document_type,
            d.processing_status,
            d.risk_level.value if d.risk_level else "",
        )
        _add(tables["bi_document_daily"], key, 1)
    for a in base.analyses.values():
        document = live.get(a.document_id)
        if document is None:
            continue
        c = document.classification
        key = (
            a.organization_id,
            day_of(a.completed_at),
            c,
            bucket_department(c, document.department),
            document.document_type,
            a.model,
        )
        _add(
            tables["bi_analysis_daily"],
            key,
            1,
            a.duration_seconds,
            Decimal(a.cost_usd),
            a.tokens_used,
            a.confidence or 0.0,
            int(a.confidence is not None),
            len(a.feedback_items),
        )
    for f in base.feedback:
        document = live.get(f.document_id)
        if document is None:
            continue
        c = document.classification
        analysis = base.analyses.get(f.analysis_id) if f.analysis_id else None
        satisfied = int(f.rating is not None and f.rating >= 4)
        key = (
            f.organization_id,
            day_of(f.created_at),
            c,
            bucket_department(c, document.department),
            f.category or "",
            analysis.model if analysis else "",
            f.action,
            f.workflow_status,
        )
        rated = int(f.rating is not None)
        _add(tables["bi_feedback_daily"], key, 1, rated, f.rating or 0, satisfied)
        if f.user_id is not None:
            key = (
                f.organization_id,
                day_of(f.created_at),
                f.user_id,
                c,
                bucket_department(c, document.department),
            )
            _add(tables["bi_reviewer_daily"], key, 1, satisfied)
    for e in base.events:
        c = e.classification or Classification.PUBLIC
        department = bucket_department(c, e.department)
        key = (e.organization_id, hour_of(e.created_at), e.actor_id, e.category, c, department)
        _add(tables["bi_activity_hourly"], key, 1)
        key = (e.organization_id, day_of(e.created_at), e.actor_id, e.category, c, department)
        _add(tables["bi_activity_daily"], key, 1)
    return tables


async def actual_rollups(
    services: Services, organization_id: uuid.UUID
) -> dict[str, dict[tuple[Any, ...], list[Any]]]:
    tables: dict[str, dict[tuple[Any, ...], list[Any]]] = defaultdict(dict)
    async with services.db.transaction(organization_id) as session:
        for rollup in bi_tables.ROLLUPS:
            table = rollup.__table__
            assert isinstance(table, sa.Table)
            keys = [c for c in table.columns if c.primary_key]
            measures = [c for c in table.columns if not c.primary_key]
            for row in await session.execute(sa.select(*keys, *measures)):
                tables[table.name][tuple(row[: len(keys)])] = list(row[len(keys) :])
    return tables


def assert_same_tables(
    actual: dict[str, dict[tuple[Any, ...], list[Any]]],
    expected: dict[str, dict[tuple[Any, ...], list[Any]]],
) -> None:
    for rollup in bi_tables.ROLLUPS:
        name = str(rollup.__tablename__)
        got, want = actual.get(name, {}), expected.get(name, {})
        assert set(got) == set(want), (name, set(got) ^ set(want))
        for key, values in want.items():
            for have, should in zip(got[key], values, strict=True):
                if isinstance(should, float):
                    assert abs(have - should) <= 1e-6 * max(1.0, abs(should)), (name, key)
                else:
                    assert have == should, (name, key, got[key], values)


# --- what a principal sees ---------------------------------------------------------------------


def sees(p: Principal, classification: Classification | None, department: str | None) -> bool:
    return can_see(
        p,
        Resource(
            organization_id=p.organization_id,
            kind="Document",
            classification=classification,
            department=department,
        ),
    )


def visible_documents(base: BaseRows, p: Principal) -> dict[uuid.UUID, Document]:
    return {i: d for i, d in base.live.items() if sees(p, d.classification, d.department)}


def between(day: date, start: date, end: date) -> bool:
    return start <= day <= end


def expected_executive(base: BaseRows, p: Principal, start: date, end: date) -> dict[str, Any]:
    documents = visible_documents(base, p)
    processed = [
        d
        for d in documents.values()
        if d.processing_status is ProcessingStatus.COMPLETED
        and between(day_of(d.created_at), start, end)
    ]
    high = [d for d in processed if d.risk_level is RiskLevel.HIGH]
    analyses = [
        a
        for a in base.analyses.values()
        if a.document_id in documents and between(day_of(a.completed_at), start, end)
    ]
    ratings = [
        f.rating
        for f in base.feedback
        if f.document_id in documents
        and f.rating is not None
        and between(day_of(f.created_at), start, end)
    ]
    users = {
        e.actor_id
        for e in base.events
        if sees(p, e.classification, e.department) and between(day_of(e.created_at), start, end)
    }
    cost = sum((Decimal(a.cost_usd) for a in analyses), Decimal(0))
    days = (end - start).days + 1
    return {
        "periodDays": days,
        "totalDocumentsProcessed": len(processed),
        "totalActiveUsers": len(users),
        "averageProcessingTimeSeconds": (
            sum(a.duration_seconds for a in analyses) / len(analyses) if analyses else 0.0
        ),
        "totalAiFeedbackItems": sum(len(a.feedback_items) for a in analyses),
        "averageUserSatisfaction": sum(ratings) / len(ratings) if ratings else None,
        "totalProcessingCostUsd": cost,
        "highRiskDocumentsCount": len(high),
        "documentsPerDay": len(processed) / days,
        "costPerDocument": (
            (cost / len(processed)).quantize(Decimal("0.000001")) if processed else Decimal(0)
        ),
        "highRiskPercentage": 100.0 * len(high) / len(processed) if processed else 0.0,
        "userProductivityScore": len(processed) / len(users) if users else 0.0,
    }


def expected_daily(base: BaseRows, p: Principal, start: date, end: date) -> list[dict[str, Any]]:
    documents = visible_documents(base, p)
    days = []
    for i in range((end - start).days + 1):
        day = start + timedelta(days=i)
        analyses = [
            a
            for a in base.analyses.values()
            if a.document_id in documents and day_of(a.completed_at) == day
        ]
        confidences = [a.confidence for a in analyses if a.confidence is not None]
        satisfied = {
            f.user_id
            for f in base.feedback
            if f.document_id in documents
            and day_of(f.created_at) == day
            and f.user_id is not None
            and f.rating is not None
            and f.rating >= 4
        }
        days.append(
            {
                "date": day.isoformat(),
                "totalAnalyses": len(analyses),
                "avgProcessingTimeSeconds": (
                    sum(a.duration_seconds for a in analyses) / len(analyses) if analyses else 0.0
                ),
                "totalCostUsd": sum((Decimal(a.cost_usd) for a in analyses), Decimal(0)),
                "avgConfidence": sum(confidences) / len(confidences) if confidences else None,
                "totalFeedbackItems": sum(len(a.feedback_items) for a in analyses),
                "satisfiedUsersCount": len(satisfied),
            }
        )
    return days


def assert_close(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Field by field: Decimals (given as strings over GraphQL) exactly, floats to 1e-9."""
    assert set(actual) == set(expected), set(actual) ^ set(expected)
    for name, want in expected.items():
        have = actual[name]
        if isinstance(want, Decimal):
            assert Decimal(str(have)) == want, (name, have, want)
        elif isinstance(want, float):
            assert have is not None
            assert abs(float(have) - want) <= 1e-9 * max(1.0, abs(want)), (name, have, want)
        else:
            assert have == want, (name, have, want)


def executive_of(f: bi_models.ExecutiveFigures) -> dict[str, Any]:
    """Model figures under the GraphQL field names."""
    return {
        "periodDays": f.days,
        "totalDocumentsProcessed": f.documents_processed,
        "totalActiveUsers": f.active_users,
        "averageProcessingTimeSeconds": f.average_processing_seconds,
        "totalAiFeedbackItems": f.feedback_items,
        "averageUserSatisfaction": f.average_rating,
        "totalProcessingCostUsd": f.cost_usd,
        "highRiskDocumentsCount": f.high_risk_documents,
        "documentsPerDay": f.documents_per_day,
        "costPerDocument": f.cost_per_document,
        "highRiskPercentage": f.high_risk_percentage,
        "userProductivityScore": f.documents_per_active_user,
    }


def daily_of(f: bi_models.DailyFigures) -> dict[str, Any]:
    return {
        "date": f.day.isoformat(),
        "totalAnalyses": f.analyses,
        "avgProcessingTimeSeconds": f.average_processing_seconds,
        "totalCostUsd": f.cost_usd,
        "avgConfidence": f.average_confidence,
        "totalFeedbackItems": f.feedback_items,
        "satisfiedUsersCount": f.satisfied_users,
    }
