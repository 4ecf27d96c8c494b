"""Background jobs of the caller's organization: one by ID, or a filtered page (ADMIN)."""

from __future__ import annotations

from prism.authz.policy import Action, require
from prism.errors import NotFound
from prism.execution.context import Context
from prism.execution.ids import expect_id
from prism.models import jobs as job_models
from prism.models.pagination import Page, PageRequest


async def read_job(ctx: Context, job_id: str) -> job_models.Job:
    """One job; NOT_FOUND if it does not exist or is not visible."""
    principal = ctx.require_principal()
    require(principal, Action.JOB_READ)
    row = await ctx.loaders.job.load(expect_id(job_id, "Job"))
    if row is None:
        raise NotFound("Job not found.")
    return row


async def read_jobs(
    ctx: Context, flt: job_models.JobFilter, first: int | None, after: str | None
) -> Page[job_models.Job]:
    """A page of the organization's jobs, newest first."""
    principal = ctx.require_principal()
    require(principal, Action.JOB_ADMIN)
    page_request = PageRequest.parse(first, after, ordering="jobs", descending=True)
    async with ctx.transaction.read() as session:
        return await job_models.read_jobs(
            session, principal.organization_id, flt=flt, page=page_request
        )
