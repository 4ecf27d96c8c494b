"""``prism jobs``: the background job queue (DEAD jobs listed and queued again)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from prism.audit import OPERATOR
from prism.cli.app import emit, main, organization_ids, organizations_option, with_services
from prism.services import Services


@main.group()
def jobs() -> None:
    """The background job queue: find jobs that gave up (DEAD) and queue them again."""


def _job_states() -> click.Choice[str]:
    from prism.models.enums import JobState

    return click.Choice([s.value for s in JobState], case_sensitive=False)


@jobs.command("list")
@click.option("--state", "states", multiple=True, type=_job_states(), help="Repeatable.")
@click.option("--kind", "kinds", multiple=True, help="A job kind, e.g. gdpr.erase_cleanup.")
@organizations_option
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON lines.")
def jobs_list(
    states: tuple[str, ...], kinds: tuple[str, ...], org_ref: str | None, limit: int, as_json: bool
) -> None:
    """Jobs newest first (per organization), e.g. `--state DEAD`."""
    from prism.models import jobs as job_models
    from prism.models.enums import JobState
    from prism.models.pagination import PageRequest

    flt = job_models.JobFilter(
        states=[JobState(s.upper()) for s in states] or None, kinds=list(kinds) or None
    )

    async def work(services: Services) -> list[job_models.Job]:
        found: list[job_models.Job] = []
        for org_id in await organization_ids(services, org_ref):
            async with services.db.transaction(org_id) as session:
                page = await job_models.read_jobs(
                    session,
                    org_id,
                    flt=flt,
                    page=PageRequest(first=limit, ordering="jobs", descending=True),
                )
            found += page.items
        return found

    found = with_services(work)
    rows = [
        {
            "id": str(j.id),
            "organizationId": str(j.organization_id),
            "kind": j.kind,
            "state": j.state.value,
            "attempts": j.attempts,
            "maxAttempts": j.max_attempts,
            "lastError": j.last_error,
            "createdAt": j.created_at.isoformat(),
            "finishedAt": j.finished_at.isoformat() if j.finished_at else None,
        }
        for j in found
    ]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    table = Table("id", "organization", "kind", "state", "attempts", "last error", "created")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["organizationId"]),
            str(r["kind"]),
            str(r["state"]),
            f"{r['attempts']}/{r['maxAttempts']}",
            str(r["lastError"] or "-"),
            str(r["createdAt"]),
        )
    Console().print(table)


@jobs.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Every DEAD job (of --org, or of all).")
@organizations_option
@click.option("--json", "as_json", is_flag=True, help="Print the retried jobs as JSON.")
def jobs_retry(
    job_ids: tuple[str, ...], all_dead: bool, org_ref: str | None, as_json: bool
) -> None:
    """Queue DEAD jobs again, attempts from zero (audited as `job.retry`). Give job ids, or
    --all-dead. Exits 1 if a given id is not a DEAD job."""
    import uuid

    from prism.jobs.watch import retry_dead
    from prism.models.audit import Actor

    if bool(job_ids) == all_dead:
        raise click.UsageError("Give job ids or --all-dead (not both).")
    try:
        wanted = [uuid.UUID(i) for i in job_ids] if job_ids else None
    except ValueError as exc:
        raise click.BadParameter(f"not a job id: {exc}") from exc

    async def work(services: Services) -> list[Any]:
        retried: list[Any] = []
        for org_id in await organization_ids(services, org_ref):
            retried += await retry_dead(services.db, org_id, wanted, actor=Actor(), meta=OPERATOR)
        return retried

    retried = with_services(work)
    missing = sorted(set(map(str, wanted or [])) - {str(j.id) for j in retried})
    emit(
        {"retried": [{"id": str(j.id), "kind": j.kind} for j in retried], "notDead": missing},
        as_json,
        f"Queued again: {len(retried)} job(s)."
        + (f" Not DEAD (or not found): {', '.join(missing)}." if missing else ""),
    )
    if missing:
        sys.exit(1)
