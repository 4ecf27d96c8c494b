"""BI rollup maintenance: the ``bi.refresh`` job recomputes an organization's stale day slices
(marked by triggers in the writers' transactions); workers queue such jobs every
``PRISM_BI_REFRESH_SECONDS`` for organizations with stale slices."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from prism.config import Settings
from prism.db.engine import Database
from prism.jobs.pipeline import JobRun, complete
from prism.models import bi as bi_models
from prism.models.analyses import Analysis

REFRESH = bi_models.REFRESH_JOB
# Counts the findings of analyses sealed before ``finding_count`` existed (queued by
# migration 0015, one per organization): their JSON column is empty, so only the data key
# can tell how many there are.
COUNT_FINDINGS = "bi.count_findings"
# Day slices recomputed per transaction: keeps each transaction (and its statements) short
# when a bulk load or the first build after the migration marks years of days at once.
SLICES_PER_TRANSACTION = 32


async def refresh_organization(db: Database, organization_id: uuid.UUID) -> int:
    """Recompute every stale slice of one organization now; the number of slices."""
    total = 0
    while True:
        async with db.transaction(organization_id) as session:
            done = await bi_models.refresh_rollups(
                session, organization_id, limit=SLICES_PER_TRANSACTION
            )
        total += done
        if done < SLICES_PER_TRANSACTION:
            return total


async def handle_refresh(run: JobRun) -> None:
    db, organization_id = run.services.db, run.job.organization_id
    while True:
        async with db.transaction(organization_id) as session:
            done = await bi_models.refresh_rollups(
                session, organization_id, limit=SLICES_PER_TRANSACTION
            )
            if done < SLICES_PER_TRANSACTION:
                # Finished with the last slices, in their transaction, fenced on the lease.
                await complete(session, run)
                return


async def schedule_refreshes(db: Database, settings: Settings) -> int:
    """Queue a refresh for each organization with stale slices (none twice); how many."""
    async with db.transaction(None) as session:
        return await bi_models.schedule_refreshes(session, max_attempts=settings.job_max_attempts)


async def handle_count_findings(run: JobRun) -> None:
    """Open each sealed analysis without a count, store its count (the row's update marks its
    BI day slice stale, so the next refresh counts it), a batch per transaction."""
    db, organization_id = run.services.db, run.job.organization_id
    envelope = run.services.envelope
    while True:
        async with db.transaction(organization_id) as session:
            rows = list(
                await session.scalars(
                    sa.select(Analysis)
                    .where(Analysis.sealed.is_not(None), Analysis.finding_count.is_(None))
                    .limit(SLICES_PER_TRANSACTION * 8)
                    # Waited for, not skipped: a row skipped now would stay uncounted once
                    # the job has finished.
                    .with_for_update()
                )
            )
            await envelope.open_analyses(session, rows)
            for row in rows:
                await session.execute(
                    sa.update(Analysis)
                    .where(Analysis.id == row.id)
                    .values(finding_count=len(row.feedback_items))
                )
            if rows:
                continue
            await complete(session, run)
            return


HANDLERS = {REFRESH: handle_refresh, COUNT_FINDINGS: handle_count_findings}
