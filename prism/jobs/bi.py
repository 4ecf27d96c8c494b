"""The BI jobs' handlers: each dispatches to ``prism.bi.refresh``."""

from __future__ import annotations

from prism.bi.refresh import COUNT_FINDINGS, REFRESH, count_findings, run_refresh
from prism.jobs.handlers import JobRun, complete


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
