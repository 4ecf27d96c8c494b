"""Watching the job queue: the ``prism_jobs`` and ``prism_job_oldest_seconds`` gauges (jobs
by state and kind, and the age of the oldest, read at scrape time), and the operators' retry
of DEAD jobs (audited in the job's organization)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from prism import audit
from prism.db.engine import Database
from prism.models import jobs as job_models
from prism.models.audit import Actor, RequestMeta
from prism.models.jobs import Job
from prism.observability import QUEUE


async def observe_jobs(db: Database) -> None:
    """Set the gauge from the database: one aggregate over the partial index of jobs not
    SUCCEEDED (its cost follows the backlog, not the history)."""
    async with db.transaction(None) as session:
        counts = await job_models.count_jobs(session)
    QUEUE.set((state.value, kind, jobs, oldest) for state, kind, jobs, oldest in counts)


async def retry_dead(
    db: Database,
    organization_id: uuid.UUID,
    ids: Sequence[uuid.UUID] | None,
    *,
    actor: Actor,
    meta: RequestMeta,
) -> list[Job]:
    """Queue DEAD jobs of one organization again (``ids``, or all when None); audited."""
    async with db.transaction(organization_id) as session:
        retried = await job_models.retry_dead_jobs(session, organization_id, ids)
        if retried:
            await audit.record(
                session,
                None,
                meta,
                organization_id=organization_id,
                actor=actor,
                event_type="job.retry",
                category="administration",
                description=f"{len(retried)} dead job(s) queued again",
                after={"jobs": [{"id": str(j.id), "kind": j.kind} for j in retried]},
            )
    return retried
