"""The BI jobs' handlers: each dispatches to ``prism.bi.refresh``."""

from __future__ import annotations

from prism.bi.refresh import (
    COUNT_FINDINGS,
    REFRESH,
    SLICES_PER_TRANSACTION,
    count_findings,
    refresh_organization,
    run_refresh,
    schedule_refreshes,
)
from prism.jobs.pipeline import JobRun, complete

__all__ = [
    "COUNT_FINDINGS",
    "HANDLERS",
    "REFRESH",
    "SLICES_PER_TRANSACTION",
    "refresh_organization",
    "schedule_refreshes",
]


async def handle_refresh(run: JobRun) -> None:
    await run_refresh(
        run.services.db, run.job.organization_id, complete=lambda session: complete(session, run)
    )


async def handle_count_findings(run: JobRun) -> None:
    await count_findings(
        run.services.db,
        run.services.envelope,
        run.job.organization_id,
        complete=lambda session: complete(session, run),
    )


HANDLERS = {REFRESH: handle_refresh, COUNT_FINDINGS: handle_count_findings}
