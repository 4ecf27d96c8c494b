"""``prism search``: the full-text search indexes."""

from __future__ import annotations

import click

from prism.cli.app import console, main, with_services
from prism.identity import organizations
from prism.services import Services


@main.group()
def search() -> None:
    """Full-text search indexes."""


@search.command("reindex")
@click.option("--org", "org_ref", default=None, help="Only this organization (name or id).")
@click.option(
    "--batch",
    type=click.IntRange(10, 10_000),
    default=1000,
    show_default=True,
    help="Sections per batch.",
)
def search_reindex(org_ref: str | None, batch: int) -> None:
    """Re-scan for PII (sealed sections excepted), re-mask and re-index every section:
    PostgreSQL's search text, and with OpenSearch a new index that replaces the old one in one
    alias swap (with --org: that organization in place)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from prism.jobs import indexing

    async def work(services: Services) -> indexing.ReindexProgress:
        org_id = await organizations.find_organization(services, org_ref) if org_ref else None
        backend = "OpenSearch" if services.search.opensearch is not None else "PostgreSQL"
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(f"{backend}: sections", total=None, rate="")

            def report(p: indexing.ReindexProgress) -> None:
                elapsed = bar.tasks[task].elapsed or 0
                rate = f"{p.done / elapsed:,.0f}/s" if elapsed > 0 else ""
                bar.update(task, total=p.total, completed=p.done, rate=rate)

            return await indexing.reindex(
                services.db, services.search, organization_id=org_id, batch=batch, report=report
            )

    done = with_services(work)
    console.print(
        f"Reindexed {done.done:,} sections of {done.organizations} organization(s)"
        + (f" into {done.index}" if done.index else "")
        + (f"; replaced {', '.join(done.replaced)}" if done.replaced else "")
        + (f"; removed {done.removed:,} stale" if done.removed else "")
        + (f"; caught up {done.caught_up:,} changed document(s)" if done.caught_up else "")
        + "."
    )
