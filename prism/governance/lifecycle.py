"""The lifecycle: document files move to colder storage tiers as they age, and what a policy
says to delete is purged, never anything under legal hold; every transition and purge is an
audit event with its counts.

Objects first, rows second: a tier change is applied to the object, then recorded; a purge
deletes the rows (and commits) before the objects, so a crash leaves at worst an orphan
object, never a row pointing at nothing. A purge queues, in its transaction, the rewrite of
the lake days that held the purged rows (``cleanup.schedule_lake_rewrite``): the lake never
keeps what retention deleted, and a later erasure has nothing there to miss."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authz.principal import Principal
from prism.db.engine import Database
from prism.governance.cleanup import schedule_lake_rewrite
from prism.models import governance as models
from prism.models.base import utcnow
from prism.models.enums import DataCategory, StorageTier
from prism.storage import ObjectStore

log = structlog.get_logger("prism.lifecycle")
# Bounded work per organization and run; the next run continues.
BATCH = 500
# Attempts of the job that rewrites the lake days of purged rows.
LAKE_REWRITE_ATTEMPTS = 5


@dataclass
class LifecycleReport:
    organization_id: uuid.UUID
    dry_run: bool
    # "HOT->WARM": count
    transitions: Counter[str] = field(default_factory=Counter)
    purged: Counter[str] = field(default_factory=Counter)
    object_errors: int = 0

    @property
    def changed(self) -> bool:
        return bool(sum(self.transitions.values()) or sum(self.purged.values()))


async def run_lifecycle(
    db: Database,
    objects: ObjectStore,
    organization_id: uuid.UUID,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    principal: Principal | None = None,
    meta: RequestMeta | None = None,
) -> LifecycleReport:
    """Move and purge what the organization's policies say, as ``principal`` (None: Prism
    itself, as the worker and the CLI run it)."""
    now = now or utcnow()
    report = LifecycleReport(organization_id=organization_id, dry_run=dry_run)
    async with db.transaction(organization_id) as session:
        policies = await models.read_retention_policies(session, organization_id)
    await _move_tiers(db, objects, report, policies[DataCategory.DOCUMENTS], now, principal, meta)
    await _purge_documents(
        db, objects, report, policies[DataCategory.DOCUMENTS], now, principal, meta
    )
    for category in (
        DataCategory.ANALYSES,
        DataCategory.FEEDBACK,
        DataCategory.AUDIT_LOGS,
        DataCategory.SYSTEM_METRICS,
    ):
        await _purge_rows(db, report, policies[category], now, principal, meta)
    return report


async def _move_tiers(
    db: Database,
    objects: ObjectStore,
    report: LifecycleReport,
    policy: models.RetentionPolicy,
    now: datetime,
    principal: Principal | None,
    meta: RequestMeta | None,
) -> None:
    org = report.organization_id
    async with db.transaction(org) as session:
        moves = await models.read_tier_moves(session, org, policy, now=now, limit=BATCH)
    if report.dry_run:
        report.transitions.update(f"{m.current.value}->{m.target.value}" for m in moves)
        return
    applied: dict[StorageTier, list[models.TierMove]] = {}
    for move in moves:
        try:
            if move.storage_key is not None and not await _change_tier_locked(
                db, objects, org, move
            ):
                continue  # erased or its file replaced meanwhile
        except Exception:
            report.object_errors += 1
            log.warning("tier change failed", document_id=str(move.document_id), exc_info=True)
            continue
        applied.setdefault(move.target, []).append(move)
    if not applied:
        return
    async with db.transaction(org) as session:
        counts: Counter[str] = Counter()
        for tier, done in applied.items():
            recorded = set(
                await models.record_tier(session, org, [m.document_id for m in done], tier)
            )
            for move in done:
                if move.document_id in recorded:
                    counts[f"{move.current.value}->{tier.value}"] += 1
        if counts:
            await audit.record(
                session,
                principal,
                meta,
                organization_id=org,
                event_type="lifecycle.transition",
                category="governance",
                description=f"Lifecycle moved {sum(counts.values())} document files to colder "
                "storage tiers",
                after={"transitions": dict(counts), "store": objects.name},
            )
    report.transitions.update(counts)


async def _change_tier_locked(
    db: Database, objects: ObjectStore, org: uuid.UUID, move: models.TierMove
) -> bool:
    """Copy the file onto its new tier under the document row's lock (FOR UPDATE), the lock
    sealing takes (a reclassification, ``prism originals seal``): a copy of the clear object
    that started before a seal can never land over the sealed one. False if the document no
    longer has this file."""
    async with db.transaction(org) as session:
        key = await models.lock_storage_key(session, org, move.document_id)
        if key is None or key != move.storage_key:
            return False
        await objects.change_tier(key, move.target.value)
    return True


async def _purge_documents(
    db: Database,
    objects: ObjectStore,
    report: LifecycleReport,
    policy: models.RetentionPolicy,
    now: datetime,
    principal: Principal | None,
    meta: RequestMeta | None,
) -> None:
    if policy.delete_after_days is None:
        return
    org = report.organization_id
    async with db.transaction(org) as session:
        if report.dry_run:
            report.purged[DataCategory.DOCUMENTS.value] += await models.count_expired_documents(
                session, org, now=now
            )
            return
        expired = await models.read_expired_documents(session, org, now=now, limit=BATCH)
        ids = [document_id for document_id, _ in expired]
        days = await models.document_days(session, ids)
        purged = await models.purge_documents(session, org, ids)
        if purged:
            await _purged(
                session,
                principal,
                meta,
                org,
                days,
                f"Lifecycle purged {purged} documents past retention",
                {
                    "category": DataCategory.DOCUMENTS.value,
                    "count": purged,
                    "documentIds": [str(i) for i in ids],
                    "deleteAfterDays": policy.delete_after_days,
                },
            )
    report.purged[DataCategory.DOCUMENTS.value] += purged
    for _, key in expired:
        if key is None:
            continue
        try:
            await objects.delete(key)
        except Exception:
            report.object_errors += 1
            log.warning("object delete failed", key=key, exc_info=True)


async def _purged(
    session: AsyncSession,
    principal: Principal | None,
    meta: RequestMeta | None,
    org: uuid.UUID,
    days: set[date],
    description: str,
    after: dict[str, Any],
) -> None:
    """After a purge: the lake rewrites the days it touched (the lake must not keep what
    retention deleted, nor hide it from an erasure), and the purge is audited."""
    await schedule_lake_rewrite(
        session, org, days, reason="lifecycle.purge", max_attempts=LAKE_REWRITE_ATTEMPTS
    )
    await audit.record(
        session,
        principal,
        meta,
        organization_id=org,
        event_type="lifecycle.purge",
        category="governance",
        description=description,
        after=after,
    )


async def _purge_rows(
    db: Database,
    report: LifecycleReport,
    policy: models.RetentionPolicy,
    now: datetime,
    principal: Principal | None,
    meta: RequestMeta | None,
) -> None:
    if policy.delete_after_days is None:
        return
    org = report.organization_id
    before = now - timedelta(days=policy.delete_after_days)
    async with db.transaction(org) as session:
        days = (
            set()
            if report.dry_run
            else await models.purged_row_days(session, org, policy.category, before=before)
        )
        count = await models.purge_rows(
            session, org, policy.category, before=before, dry_run=report.dry_run
        )
        if count and not report.dry_run:
            await _purged(
                session,
                principal,
                meta,
                org,
                days,
                f"Lifecycle purged {count} {policy.category.value.lower()} rows past retention",
                {
                    "category": policy.category.value,
                    "count": count,
                    "before": before.isoformat(),
                    "deleteAfterDays": policy.delete_after_days,
                },
            )
    report.purged[policy.category.value] += count
