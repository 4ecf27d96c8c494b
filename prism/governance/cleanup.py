"""The cleanup job: after rows are deleted, it removes what lives outside the database
(stored files, lake partitions, search index entries). An erasure queues it with its subject
(``prism.privacy.erasure``, which also holds the hooks the job runs); a lifecycle purge
queues it with only the lake days to rewrite (``schedule_lake_rewrite``)."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from prism.models import jobs as job_models
from prism.models.jobs import Job

ERASE_CLEANUP = "gdpr.erase_cleanup"


async def schedule_lake_rewrite(
    session: AsyncSession,
    organization_id: uuid.UUID,
    days: set[date],
    *,
    reason: str,
    max_attempts: int,
) -> Job | None:
    """Rows deleted by something other than an erasure (a lifecycle purge) leave the lake
    too: a cleanup job with no subject rewrites their days, queued in the transaction that
    deletes them (retried like an erasure's; never lost to a crash after the commit)."""
    if not days:
        return None
    return await job_models.enqueue_job(
        session,
        organization_id=organization_id,
        kind=ERASE_CLEANUP,
        payload={
            "reason": reason,
            "objects": [],
            "documentIds": [],
            "days": sorted(d.isoformat() for d in days),
        },
        max_attempts=max_attempts,
    )
