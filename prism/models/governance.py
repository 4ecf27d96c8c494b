"""Governance tables and their SQL: retention policies per organization and data category,
the lifecycle's selections and purges, and data-quality runs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.analyses import Analysis
from prism.models.base import Base, created_at, enum_column, org_fk, pk, updated_at, utcnow
from prism.models.documents import Document
from prism.models.enums import DataCategory, JobState, StorageTier
from prism.models.feedback import Feedback
from prism.models.jobs import Job


class RetentionPolicyRow(Base):
    """An organization's own schedule for one category; a category without a row follows
    ``DEFAULT_POLICIES``."""

    __tablename__ = "retention_policies"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    )
    category: Mapped[DataCategory] = enum_column(DataCategory, primary_key=True)
    hot_days: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    warm_days: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    cold_days: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    archive_days: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    # NULL: never deleted.
    delete_after_days: Mapped[int | None] = mapped_column(sa.Integer)
    updated_at: Mapped[datetime] = updated_at()

    __table_args__ = (
        sa.CheckConstraint(
            "0 < hot_days AND hot_days <= warm_days AND warm_days <= cold_days "
            "AND cold_days <= archive_days",
            name="tiers_ordered",
        ),
        sa.CheckConstraint(
            "delete_after_days IS NULL OR delete_after_days >= archive_days",
            name="delete_after_archive",
        ),
    )


class QualityRun(Base):
    """One assessment of an organization's data: every check's score, kept per run."""

    __tablename__ = "data_quality_runs"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    assessed_at: Mapped[datetime] = created_at()
    overall_score: Mapped[float] = mapped_column(sa.Float, nullable=False)
    # [{"table", "dimension", "name", "score", "failingRows", "checkedRows", "description"}]
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)

    __table_args__ = (
        sa.CheckConstraint("overall_score BETWEEN 0 AND 1", name="overall_score"),
        sa.Index(
            "ix_data_quality_runs_organization_id_assessed_at", "organization_id", "assessed_at"
        ),
    )


# --- retention policies ------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionPolicy:
    """Age thresholds in days: a row is HOT until ``hot_days``, WARM until ``warm_days``, COLD
    until ``cold_days``, ARCHIVE after; its retention ends at ``archive_days``; it is purged
    at ``delete_after_days`` (None: never)."""

    category: DataCategory
    hot_days: int
    warm_days: int
    cold_days: int
    archive_days: int
    delete_after_days: int | None

    def tier_at(self, age: timedelta) -> StorageTier:
        days = age.total_seconds() / 86_400
        if days < self.hot_days:
            return StorageTier.HOT
        if days < self.warm_days:
            return StorageTier.WARM
        if days < self.cold_days:
            return StorageTier.COLD
        return StorageTier.ARCHIVE

    def expires_at(self, created: datetime) -> datetime:
        """When the schedule ends: the purge date if the policy deletes, else the end of the
        archive period (after which nothing obliges keeping the row)."""
        return created + timedelta(days=self.delete_after_days or self.archive_days)

    def problems(self) -> list[str]:
        found = []
        if not 0 < self.hot_days <= self.warm_days <= self.cold_days <= self.archive_days:
            found.append("Tiers must satisfy 0 < hotDays <= warmDays <= coldDays <= archiveDays.")
        if self.delete_after_days is not None and self.delete_after_days < self.archive_days:
            found.append("deleteAfterDays cannot come before archiveDays ends.")
        return found


DEFAULT_POLICIES: dict[DataCategory, RetentionPolicy] = {
    p.category: p
    for p in (
        RetentionPolicy(DataCategory.DOCUMENTS, 30, 365, 1825, 2555, None),
        RetentionPolicy(DataCategory.ANALYSES, 90, 730, 1825, 2555, None),
        RetentionPolicy(DataCategory.FEEDBACK, 365, 1095, 1460, 2555, None),
        RetentionPolicy(DataCategory.AUDIT_LOGS, 90, 365, 730, 2555, None),
        RetentionPolicy(DataCategory.SYSTEM_METRICS, 7, 90, 365, 1095, 1825),
    )
}


def _policy_of(row: RetentionPolicyRow) -> RetentionPolicy:
    return RetentionPolicy(
        category=row.category,
        hot_days=row.hot_days,
        warm_days=row.warm_days,
        cold_days=row.cold_days,
        archive_days=row.archive_days,
        delete_after_days=row.delete_after_days,
    )


async def read_retention_policies(
    session: AsyncSession, organization_id: uuid.UUID
) -> dict[DataCategory, RetentionPolicy]:
    """Every category's policy: the organization's own, or the default."""
    rows = await session.scalars(
        sa.select(RetentionPolicyRow).where(RetentionPolicyRow.organization_id == organization_id)
    )
    policies = dict(DEFAULT_POLICIES)
    for row in rows:
        policies[row.category] = _policy_of(row)
    return policies


async def read_retention_policy(
    session: AsyncSession, organization_id: uuid.UUID, category: DataCategory
) -> RetentionPolicy:
    row = await session.get(RetentionPolicyRow, (organization_id, category))
    return _policy_of(row) if row else DEFAULT_POLICIES[category]


async def store_retention_policy(
    session: AsyncSession, organization_id: uuid.UUID, policy: RetentionPolicy
) -> None:
    values = {
        "hot_days": policy.hot_days,
        "warm_days": policy.warm_days,
        "cold_days": policy.cold_days,
        "archive_days": policy.archive_days,
        "delete_after_days": policy.delete_after_days,
        "updated_at": utcnow(),
    }
    await session.execute(
        insert(RetentionPolicyRow)
        .values(organization_id=organization_id, category=policy.category, **values)
        .on_conflict_do_update(
            index_elements=[RetentionPolicyRow.organization_id, RetentionPolicyRow.category],
            set_=values,
        )
    )


async def reset_document_expiry(
    session: AsyncSession, organization_id: uuid.UUID, policy: RetentionPolicy
) -> int:
    """Recompute ``retention_expires_at`` of the organization's documents after a change of
    their policy."""
    days = policy.delete_after_days or policy.archive_days
    result = await session.execute(
        sa.update(Document)
        .where(Document.organization_id == organization_id)
        .values(retention_expires_at=Document.created_at + sa.func.make_interval(0, 0, 0, days))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- the lifecycle's selections and purges ------------------------------------------------------

TIER_RANK = {tier: rank for rank, tier in enumerate(StorageTier)}


@dataclass(frozen=True)
class TierMove:
    document_id: uuid.UUID
    storage_key: str | None
    current: StorageTier
    target: StorageTier


def _days_ago(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)


async def read_tier_moves(
    session: AsyncSession,
    organization_id: uuid.UUID,
    policy: RetentionPolicy,
    *,
    now: datetime,
    limit: int,
) -> list[TierMove]:
    """Documents old enough for a colder tier than the one they are in. Only forward moves
    (a lengthened policy does not warm files up again); held documents stay where they are,
    readable at once."""
    target = sa.case(
        (Document.created_at > _days_ago(now, policy.hot_days), StorageTier.HOT.value),
        (Document.created_at > _days_ago(now, policy.warm_days), StorageTier.WARM.value),
        (Document.created_at > _days_ago(now, policy.cold_days), StorageTier.COLD.value),
        else_=StorageTier.ARCHIVE.value,
    )
    rank = sa.case({t.value: r for t, r in TIER_RANK.items()}, value=target)
    current_rank = sa.case(
        {t.value: r for t, r in TIER_RANK.items()}, value=sa.cast(Document.storage_tier, sa.String)
    )
    query = (
        sa.select(Document.id, Document.storage_key, Document.storage_tier, target)
        .where(
            Document.organization_id == organization_id,
            Document.legal_hold.is_(False),
            Document.created_at <= _days_ago(now, policy.hot_days),
            rank > current_rank,
        )
        .order_by(Document.created_at, Document.id)
        .limit(limit)
    )
    return [
        TierMove(document_id=i, storage_key=k, current=c, target=StorageTier(t))
        for i, k, c, t in await session.execute(query)
    ]


async def record_tier(
    session: AsyncSession, organization_id: uuid.UUID, ids: Sequence[uuid.UUID], tier: StorageTier
) -> list[uuid.UUID]:
    """Record ``tier`` on the documents (not held meanwhile); the ids recorded."""
    if not ids:
        return []
    result = await session.scalars(
        sa.update(Document)
        .where(
            Document.organization_id == organization_id,
            Document.id.in_(ids),
            Document.legal_hold.is_(False),
        )
        .values(storage_tier=tier)
        .returning(Document.id)
    )
    return list(result)


async def read_expired_documents(
    session: AsyncSession, organization_id: uuid.UUID, *, now: datetime, limit: int
) -> list[tuple[uuid.UUID, str | None]]:
    """Documents past their retention and not held, locked (SKIP LOCKED: a concurrent run or
    a hold being set takes them out of this batch)."""
    query = (
        sa.select(Document.id, Document.storage_key)
        .where(
            Document.organization_id == organization_id,
            Document.legal_hold.is_(False),
            Document.retention_expires_at <= now,
        )
        .order_by(Document.retention_expires_at, Document.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [(i, k) for i, k in await session.execute(query)]


async def count_expired_documents(
    session: AsyncSession, organization_id: uuid.UUID, *, now: datetime
) -> int:
    query = sa.select(sa.func.count()).where(
        Document.organization_id == organization_id,
        Document.legal_hold.is_(False),
        Document.retention_expires_at <= now,
    )
    return int(await session.scalar(query) or 0)


async def purge_documents(
    session: AsyncSession, organization_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> int:
    """Delete the rows (sections, analyses and feedback cascade); never a held one."""
    if not ids:
        return 0
    result = await session.execute(
        sa.delete(Document).where(
            Document.organization_id == organization_id,
            Document.id.in_(ids),
            Document.legal_hold.is_(False),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _not_held(document_id: Any) -> sa.ColumnElement[bool]:
    return ~sa.exists().where(Document.id == document_id, Document.legal_hold.is_(True))


def _expired_analyses(organization_id: uuid.UUID, before: datetime) -> sa.ColumnElement[bool]:
    # An analysis with feedback stays while its feedback does (deleting it would cascade).
    return sa.and_(
        Analysis.organization_id == organization_id,
        Analysis.created_at < before,
        _not_held(Analysis.document_id),
        ~sa.exists().where(Feedback.analysis_id == Analysis.id),
    )


def _expired_feedback(organization_id: uuid.UUID, before: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        Feedback.organization_id == organization_id,
        Feedback.created_at < before,
        _not_held(Feedback.document_id),
    )


def _expired_jobs(organization_id: uuid.UUID, before: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        Job.organization_id == organization_id,
        Job.state.in_([JobState.SUCCEEDED, JobState.DEAD]),
        Job.created_at < before,
    )


def _expired_runs(organization_id: uuid.UUID, before: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(QualityRun.organization_id == organization_id, QualityRun.assessed_at < before)


def _utc_day(column: Any) -> Any:
    return sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), column), sa.Date)


async def document_days(session: AsyncSession, ids: Sequence[uuid.UUID]) -> set[date]:
    """The UTC creation days of documents ``ids`` and of the analyses and feedback that go
    with them (cascade): the lake partitions that hold them."""
    if not ids:
        return set()
    queries = [
        sa.select(_utc_day(Document.created_at)).where(Document.id.in_(ids)),
        sa.select(_utc_day(Analysis.created_at)).where(Analysis.document_id.in_(ids)),
        sa.select(_utc_day(Feedback.created_at)).where(Feedback.document_id.in_(ids)),
    ]
    return set(await session.scalars(sa.union(*queries)))


async def purged_row_days(
    session: AsyncSession, organization_id: uuid.UUID, category: DataCategory, *, before: datetime
) -> set[date]:
    """The UTC creation days of the rows ``purge_rows`` would delete that the lake exports
    (analyses, feedback): the partitions to rewrite once they are gone."""
    if category is DataCategory.ANALYSES:
        query = sa.select(_utc_day(Analysis.created_at)).where(
            _expired_analyses(organization_id, before)
        )
    elif category is DataCategory.FEEDBACK:
        query = sa.select(_utc_day(Feedback.created_at)).where(
            _expired_feedback(organization_id, before)
        )
    else:
        return set()
    return set(await session.scalars(query.distinct()))


async def purge_rows(
    session: AsyncSession,
    organization_id: uuid.UUID,
    category: DataCategory,
    *,
    before: datetime,
    dry_run: bool,
) -> int:
    """Delete (or, dry, count) the rows of a row-only category created before ``before``."""
    targets: list[tuple[Any, sa.ColumnElement[bool]]]
    if category is DataCategory.ANALYSES:
        targets = [(Analysis, _expired_analyses(organization_id, before))]
    elif category is DataCategory.FEEDBACK:
        targets = [(Feedback, _expired_feedback(organization_id, before))]
    elif category is DataCategory.SYSTEM_METRICS:
        targets = [
            (Job, _expired_jobs(organization_id, before)),
            (QualityRun, _expired_runs(organization_id, before)),
        ]
    elif category is DataCategory.AUDIT_LOGS:
        return await purge_audit_events(session, before=before, dry_run=dry_run)
    else:
        raise ValueError(f"{category} is purged document by document")
    total = 0
    for table, condition in targets:
        if dry_run:
            total += int(
                await session.scalar(sa.select(sa.func.count()).select_from(table).where(condition))
                or 0
            )
        else:
            result = await session.execute(sa.delete(table).where(condition))
            total += int(result.rowcount)  # type: ignore[attr-defined]
    return total


async def purge_audit_events(session: AsyncSession, *, before: datetime, dry_run: bool) -> int:
    """The audit log is append-only for the app role: old events of the current organization
    go through a SECURITY DEFINER function, which keeps everything from the oldest event about
    a held document on and anchors the hash chain on the last event it removes."""
    value = await session.scalar(sa.select(sa.func.prism_purge_audit_events(before, dry_run)))
    return int(value or 0)


# --- data quality -------------------------------------------------------------------------------


async def create_quality_run(
    session: AsyncSession,
    organization_id: uuid.UUID,
    *,
    overall_score: float,
    checks: list[dict[str, Any]],
) -> QualityRun:
    run = QualityRun(organization_id=organization_id, overall_score=overall_score, checks=checks)
    session.add(run)
    await session.flush()
    return run


async def read_latest_quality_run(
    session: AsyncSession, organization_id: uuid.UUID
) -> QualityRun | None:
    query = (
        sa.select(QualityRun)
        .where(QualityRun.organization_id == organization_id)
        .order_by(QualityRun.assessed_at.desc(), QualityRun.id.desc())
        .limit(1)
    )
    return (await session.scalars(query)).one_or_none()


async def count_check(
    session: AsyncSession,
    *,
    table: str,
    population: str,
    passes: str,
    params: dict[str, Any],
) -> tuple[int, int]:
    """(rows checked, rows failing) of one quality check; ``table``, ``population`` and
    ``passes`` are SQL written in ``prism.governance.quality``, never input."""
    statement = sa.text(
        f"SELECT count(*), count(*) FILTER (WHERE NOT coalesce(({passes}), false)) "  # noqa: S608
        f"FROM {table} WHERE organization_id = :org AND ({population})"
    )
    checked, failing = (await session.execute(statement, params)).one()
    return int(checked), int(failing)


# --- organizations and schedules (SECURITY DEFINER: they span organizations) ------------------


async def schedule_jobs(session: AsyncSession, *, kind: str, every: timedelta) -> int:
    """Queue ``kind`` for every organization that has none pending and none finished within
    ``every``."""
    made = await session.scalar(sa.select(sa.func.prism_schedule_jobs(kind, every)))
    return int(made or 0)


async def lock_storage_key(
    session: AsyncSession, organization_id: uuid.UUID, document_id: uuid.UUID
) -> str | None:
    """The document's stored object, under the row's lock (FOR UPDATE): the lock sealing
    takes. None if the document is gone or has no file."""
    key: str | None = await session.scalar(
        sa.select(Document.storage_key)
        .where(Document.id == document_id, Document.organization_id == organization_id)
        .with_for_update()
    )
    return key


async def read_legal_holds(
    session: AsyncSession, organization_id: uuid.UUID, document_ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, bool]]:
    """(document, under legal hold) of the organization's documents among ``document_ids``,
    share-locked until the transaction ends."""
    rows = await session.execute(
        sa.select(Document.id, Document.legal_hold)
        .where(Document.organization_id == organization_id, Document.id.in_(document_ids))
        .with_for_update(read=True)
    )
    return [(document_id, bool(held)) for document_id, held in rows]
