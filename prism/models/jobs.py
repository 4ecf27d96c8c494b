"""Background jobs, queued in PostgreSQL in the same transaction as the change that causes
them (so no job exists for a change that rolled back)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism import tracing
from prism.models.base import Base, among, created_at, enum_column, org_fk, pk, updated_at, utcnow
from prism.models.enums import JobState
from prism.models.pagination import Page, PageRequest, keyset_page


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    kind: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, default=dict, server_default=sa.text("'{}'::jsonb")
    )
    state: Mapped[JobState] = enum_column(JobState, nullable=False, default=JobState.QUEUED)
    priority: Mapped[int] = mapped_column(sa.SmallInteger, nullable=False, default=0)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=5)
    run_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), nullable=False, default=utcnow, server_default=sa.func.now()
    )
    locked_by: Mapped[str | None] = mapped_column(sa.String(200))
    locked_until: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.CheckConstraint("attempts >= 0 AND max_attempts > 0", name="attempts"),
        # Claiming scans only runnable jobs, oldest first.
        sa.Index(
            "ix_jobs_runnable",
            "priority",
            "run_at",
            postgresql_where=sa.text("state IN ('QUEUED', 'FAILED')"),
        ),
        sa.Index("ix_jobs_organization_id_created_at", "organization_id", "created_at"),
        # Expired leases (a worker died) are found without scanning finished jobs.
        sa.Index("ix_jobs_leases", "locked_until", postgresql_where=sa.text("state = 'RUNNING'")),
        # The jobs gauge and the DEAD-job views count only what has not succeeded.
        sa.Index(
            "ix_jobs_unfinished", "state", "kind", postgresql_where=sa.text("state <> 'SUCCEEDED'")
        ),
    )


async def enqueue_job(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    kind: str,
    payload: dict[str, Any],
    run_at: datetime | None = None,
    max_attempts: int = 5,
) -> Job:
    job = Job(
        organization_id=organization_id,
        kind=kind,
        # The request (or job) that queued it: its trace context and request id.
        payload={**payload, **tracing.carried()},
        run_at=run_at or utcnow(),
        max_attempts=max_attempts,
    )
    session.add(job)
    await session.flush()
    return job


async def read_jobs_by_ids(
    session: AsyncSession, organization_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> list[Job]:
    if not ids:
        return []
    query = sa.select(Job).where(Job.organization_id == organization_id, among(Job.id, ids))
    return list(await session.scalars(query))


async def claim_jobs(
    session: AsyncSession, *, worker: str, limit: int, lease_seconds: int
) -> list[Job]:
    """Claim up to ``limit`` runnable jobs of any organization (FOR UPDATE SKIP LOCKED inside
    a narrow SECURITY DEFINER function: workers serve every tenant, RLS stays on)."""
    claimed = sa.func.prism_claim_jobs(worker, limit, lease_seconds).table_valued(
        *[c.name for c in Job.__table__.columns]
    )
    query = sa.select(Job).from_statement(sa.select(claimed))
    return list(await session.scalars(query))


async def renew_leases(
    session: AsyncSession, *, worker: str, ids: Sequence[uuid.UUID], lease_seconds: int
) -> int:
    if not ids:
        return 0
    renewed = await session.scalar(
        sa.select(sa.func.prism_renew_leases(worker, list(ids), lease_seconds))
    )
    return int(renewed or 0)


async def finish_job(
    session: AsyncSession,
    *,
    job_id: uuid.UUID,
    worker: str,
    attempt: int,
    state: JobState,
    error: str | None = None,
    run_at: datetime | None = None,
    refund: bool = False,
) -> bool:
    """Record a job's outcome, fenced on the lease: False if another worker has taken it
    over (this worker's lease expired), in which case the caller must roll back.
    ``refund``: the attempt does not count (a dependency was away, not the job at fault)."""
    values: dict[str, Any] = {
        "state": state,
        "last_error": error,
        "locked_by": None,
        "locked_until": None,
    }
    if refund:
        values["attempts"] = Job.attempts - 1
    if state in (JobState.SUCCEEDED, JobState.DEAD):
        values["finished_at"] = utcnow()
    if run_at is not None:
        values["run_at"] = run_at
    result = await session.execute(
        sa.update(Job)
        # Fenced on the claim (worker and attempt): a run whose lease expired and was claimed
        # again, even by the same worker, can no longer finish the job.
        .where(
            Job.id == job_id,
            Job.locked_by == worker,
            Job.attempts == attempt,
            Job.state == JobState.RUNNING,
        )
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_jobs(session: AsyncSession, *, worker: str, ids: Sequence[uuid.UUID]) -> None:
    """Give claimed jobs back (graceful shutdown): runnable again at once, attempt refunded."""
    if ids:
        await session.scalar(sa.select(sa.func.prism_release_jobs(worker, list(ids))))


# --- the operators' view: listing, retrying and counting jobs -------------------------------

JOB_KEY = (Job.created_at, Job.id)


@dataclass(frozen=True)
class JobFilter:
    """Jobs in any of ``states`` and of any of ``kinds`` (None: any)."""

    states: Sequence[JobState] | None = None
    kinds: Sequence[str] | None = None


async def read_jobs(
    session: AsyncSession,
    organization_id: uuid.UUID,
    *,
    flt: JobFilter | None = None,
    page: PageRequest,
) -> Page[Job]:
    """One organization's jobs, newest first."""
    query = sa.select(Job).where(Job.organization_id == organization_id)
    if flt is not None and flt.states:
        query = query.where(Job.state.in_(list(flt.states)))
    if flt is not None and flt.kinds:
        query = query.where(Job.kind.in_(list(flt.kinds)))
    return await keyset_page(session, query, JOB_KEY, page)


async def retry_dead_jobs(
    session: AsyncSession, organization_id: uuid.UUID, ids: Sequence[uuid.UUID] | None
) -> list[Job]:
    """Make DEAD jobs runnable again (``ids``, or all of the organization's when None): queued
    now, with their attempts counted from zero; the last error stays until the next outcome.
    Jobs in any other state are left alone. The jobs retried."""
    conditions = [Job.organization_id == organization_id, Job.state == JobState.DEAD]
    if ids is not None:
        if not ids:
            return []
        conditions.append(Job.id.in_(list(ids)))
    query = (
        sa.update(Job)
        .where(*conditions)
        .values(
            state=JobState.QUEUED,
            attempts=0,
            run_at=utcnow(),
            finished_at=None,
            locked_by=None,
            locked_until=None,
        )
        .returning(Job)
    )
    return list(await session.scalars(sa.select(Job).from_statement(query)))


async def count_jobs(session: AsyncSession) -> list[tuple[JobState, str, int, float]]:
    """(state, kind, jobs, seconds since the oldest of them became runnable, started or
    gave up) of every organization's jobs not SUCCEEDED (a SECURITY DEFINER function: any
    transaction may count, none sees a row)."""
    queue = sa.func.prism_job_queue().table_valued("state", "kind", "jobs", "oldest_seconds")
    rows = await session.execute(
        sa.select(queue.c.state, queue.c.kind, queue.c.jobs, queue.c.oldest_seconds)
    )
    return [
        (JobState(state), str(kind), int(jobs), max(0.0, float(oldest or 0.0)))
        for state, kind, jobs, oldest in rows
    ]
