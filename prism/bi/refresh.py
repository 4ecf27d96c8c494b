"""BI rollup maintenance: the ``bi.refresh`` job recomputes an organization's stale day slices
(marked by triggers in the writers' transactions); workers queue such jobs every
``PRISM_BI_REFRESH_SECONDS`` for organizations with stale slices."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from prism.config import Settings
from prism.crypto.envelope import Envelope
from prism.db.engine import Database
from prism.models.bi import refresh as rollups
from prism.models.bi.tables import REFRESH_JOB

REFRESH = REFRESH_JOB
# Counts the findings of analyses sealed before ``finding_count`` existed (queued by
# migration 0015, one per organization): their JSON column is empty, so only the data key
# can tell how many there are.
COUNT_FINDINGS = "bi.count_findings"
# Day slices recomputed per transaction: keeps each transaction (and its statements) short
# when a bulk load or the first build after the migration marks years of days at once.
SLICES_PER_TRANSACTION = 32

Complete = Callable[[AsyncSession], Awaitable[None]]


async def refresh_organization(db: Database, organization_id: uuid.UUID) -> int:
    """Recompute every stale slice of one organization now; the number of slices."""
    total = 0
    while True:
        async with db.transaction(organization_id) as session:
            done = await rollups.refresh_rollups(
                session, organization_id, limit=SLICES_PER_TRANSACTION
            )
        total += done
        if done < SLICES_PER_TRANSACTION:
            return total


async def run_refresh(db: Database, organization_id: uuid.UUID, *, complete: Complete) -> None:
    """The refresh job: every stale slice, a batch per transaction; ``complete`` ends the job
    in the transaction of the last slices."""
    while True:
        async with db.transaction(organization_id) as session:
            done = await rollups.refresh_rollups(
                session, organization_id, limit=SLICES_PER_TRANSACTION
            )
            if done < SLICES_PER_TRANSACTION:
                # Finished with the last slices, in their transaction, fenced on the lease.
                await complete(session)
                return


async def schedule_refreshes(db: Database, settings: Settings) -> int:
    """Queue a refresh for each organization with stale slices (none twice); how many."""
    async with db.transaction(None) as session:
        return await rollups.schedule_refreshes(session, max_attempts=settings.job_max_attempts)


async def count_findings(
    db: Database, envelope: Envelope, organization_id: uuid.UUID, *, complete: Complete
) -> None:
    """Open each sealed analysis without a count, store its count (the row's update marks its
    BI day slice stale, so the next refresh counts it), a batch per transaction."""
    while True:
        async with db.transaction(organization_id) as session:
            rows = await rollups.read_uncounted_sealed_analyses(
                session, limit=SLICES_PER_TRANSACTION * 8
            )
            await envelope.open_analyses(session, rows)
            for row in rows:
                await rollups.store_finding_count(session, row.id, len(row.feedback_items))
            if rows:
                continue
            await complete(session)
            return
