"""``prism lifecycle``, ``quality``, ``backup`` and ``lake``: retention, data quality, verified
backups and the data lake."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from prism.audit import OPERATOR
from prism.cli.app import console, emit, main, organization_ids, organizations_option, with_services
from prism.services import Services


@main.group()
def lifecycle() -> None:
    """Retention: storage tiers and purges by each organization's policies."""


@lifecycle.command("run")
@click.option("--dry-run", is_flag=True, help="Say what would move and be purged; change nothing.")
@organizations_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def lifecycle_run(dry_run: bool, org_ref: str | None, as_json: bool) -> None:
    """Move document files to colder tiers and purge what has expired (never under legal
    hold); every transition and purge is audited with its counts."""
    from prism.governance.lifecycle import LifecycleReport, run_lifecycle

    async def work(services: Services) -> list[LifecycleReport]:
        return [
            await run_lifecycle(services.db, services.objects, org, dry_run=dry_run, meta=OPERATOR)
            for org in await organization_ids(services, org_ref)
        ]

    reports = with_services(work)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "organizationId": str(r.organization_id),
                        "dryRun": r.dry_run,
                        "transitions": dict(r.transitions),
                        "purged": dict(r.purged),
                        "objectErrors": r.object_errors,
                    }
                    for r in reports
                ]
            )
        )
        return
    title = "Lifecycle (dry run: nothing changed)" if dry_run else "Lifecycle"
    table = Table("organization", "tier moves", "purged", "object errors", title=title)
    for r in reports:
        moves = ", ".join(f"{k} {v}" for k, v in sorted(r.transitions.items())) or "-"
        purged = ", ".join(f"{k.lower()} {v}" for k, v in sorted(r.purged.items()) if v) or "-"
        table.add_row(str(r.organization_id), moves, purged, str(r.object_errors))
    Console().print(table)


@main.group()
def quality() -> None:
    """Data quality."""


@quality.command("check")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.95,
    show_default=True,
    help="Exit 1 when an organization's overall score is below this.",
)
@organizations_option
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def quality_check(threshold: float, org_ref: str | None, as_json: bool) -> None:
    """Assess data quality (stored as a run, shown by `dataQualityReport`)."""
    from prism.governance.quality import assess
    from prism.models.governance import QualityRun

    async def work(services: Services) -> list[QualityRun]:
        sla = services.settings.analysis_sla_seconds
        return [
            await assess(services.db, org, analysis_sla_seconds=sla)
            for org in await organization_ids(services, org_ref)
        ]

    runs = with_services(work)
    below = [r for r in runs if r.overall_score < threshold]
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "organizationId": str(r.organization_id),
                        "overallScore": r.overall_score,
                        "checks": r.checks,
                    }
                    for r in runs
                ]
            )
        )
    else:
        out = Console()
        for run in runs:
            table = Table(
                "table",
                "dimension",
                "check",
                "score",
                "failing",
                "checked",
                title=f"{run.organization_id}: overall {run.overall_score:.3f}",
            )
            for c in run.checks:
                style = "red" if c["score"] < threshold else ""
                table.add_row(
                    c["table"],
                    c["dimension"],
                    c["name"],
                    f"[{style}]{c['score']:.3f}[/{style}]" if style else f"{c['score']:.3f}",
                    str(c["failingRows"]),
                    str(c["checkedRows"]),
                )
            out.print(table)
    if below:
        console.print(f"[red]{len(below)} organization(s) below the threshold {threshold}.[/red]")
        sys.exit(1)


@main.group()
def backup() -> None:
    """Encrypted backups of the database and the object store (PRISM_BACKUP_URL)."""


def _backup_failed(error: Exception) -> None:
    console.print(f"[red]error:[/red] {error}", soft_wrap=True)
    sys.exit(1)


@backup.command("create")
@click.option("--json", "as_json", is_flag=True, help="Print the backup's header as JSON.")
def backup_create(as_json: bool) -> None:
    """pg_dump (custom format) and every object of the store, encrypted with the keyring, to
    PRISM_BACKUP_URL, with a manifest of table checksums and object sha256s; then keep the
    newest PRISM_BACKUP_KEEP backups."""
    from prism.governance.backup import BackupError, BackupResult, create_backup
    from prism.storage import backup_store

    async def work(services: Services) -> BackupResult:
        url = services.db.engine.url.render_as_string(hide_password=False)
        return await create_backup(
            url,
            services.objects,
            backup_store(services.settings),
            services.envelope.keks,
            keep=services.settings.backup_keep,
            bin_dir=services.settings.pg_bin_dir,
        )

    try:
        result = with_services(work)
    except (BackupError, ValueError) as error:
        _backup_failed(error)
    if as_json:
        click.echo(json.dumps(result.header))
        return
    summary = result.header["summary"]
    console.print(
        f"Backup {result.name}: dump {summary['dumpBytes']} bytes, {summary['tables']} tables, "
        f"{summary['rows']} rows; {summary['objects']} objects, {summary['objectBytes']} bytes; "
        f"key wrapped by {result.header['kekId']}; {len(result.removed)} old backup(s) removed",
        soft_wrap=True,
    )
    click.echo(result.name)


@backup.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the headers as JSON.")
def backup_list(as_json: bool) -> None:
    """The complete backups at PRISM_BACKUP_URL, oldest first."""
    from prism.config import Settings
    from prism.governance.backup import list_backups
    from prism.storage import backup_store

    try:
        found = asyncio.run(list_backups(backup_store(Settings())))
    except ValueError as error:
        _backup_failed(error)
    if as_json:
        click.echo(json.dumps(found))
        return
    table = Table("name", "created", "dump bytes", "rows", "objects", "object bytes", "KEK")
    for header in found:
        summary = header["summary"]
        table.add_row(
            header["name"],
            header["createdAt"],
            str(summary["dumpBytes"]),
            str(summary["rows"]),
            str(summary["objects"]),
            str(summary["objectBytes"]),
            header["kekId"],
        )
    Console().print(table)


@backup.command("verify")
@click.option("--name", default=None, help="The backup to verify (default: the newest).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def backup_verify(name: str | None, as_json: bool) -> None:
    """Restore a backup into a scratch database and compare it with its manifest, and open
    every object and compare its sha256; exit 1 on any difference."""
    from prism.governance.backup import BackupError, VerifyReport, verify_backup
    from prism.storage import backup_store

    async def work(services: Services) -> VerifyReport:
        url = services.db.engine.url.render_as_string(hide_password=False)
        return await verify_backup(
            url,
            backup_store(services.settings),
            services.envelope.keks,
            name=name,
            bin_dir=services.settings.pg_bin_dir,
        )

    try:
        report = with_services(work)
    except (BackupError, ValueError) as error:
        _backup_failed(error)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "name": report.name,
                    "ok": report.ok,
                    "dumpChecksumMatches": report.dump_checksum_matches,
                    "restored": report.restored,
                    "error": report.error,
                    "tables": [
                        {
                            "table": t.table,
                            "expectedRows": t.expected_rows,
                            "actualRows": t.actual_rows,
                            "checksumMatches": t.checksum_matches,
                        }
                        for t in report.tables
                    ],
                    "objectsChecked": report.objects_checked,
                    "objectsFailed": report.objects_failed,
                }
            )
        )
    elif report.error and not report.restored and not report.tables:
        # Nothing was restored to compare (the dump missing or altered): one line says it.
        console.print(f"[red]error:[/red] backup {report.name}: {report.error}", soft_wrap=True)
    else:
        table = Table("table", "manifest rows", "restored rows", "checksum", title=report.name)
        for t in report.tables:
            mark = "[green]ok[/green]" if t.ok else "[red]MISMATCH[/red]"
            table.add_row(t.table, str(t.expected_rows), str(t.actual_rows), mark)
        Console().print(table)
        dump = "matches" if report.dump_checksum_matches else "[red]DOES NOT MATCH[/red]"
        console.print(
            f"Dump checksum {dump}; restored: {report.restored}; objects: "
            f"{report.objects_checked} checked, {len(report.objects_failed)} failed."
        )
        if report.error:
            console.print(f"[red]{report.error}[/red]")
        verdict = "[green]verified[/green]" if report.ok else "[red]verification failed[/red]"
        console.print(f"Backup {report.name}: {verdict}")
    if not report.ok:
        sys.exit(1)


@backup.command("restore")
@click.option("--name", default=None, help="The backup to restore (default: the newest).")
@click.option(
    "--force",
    is_flag=True,
    help="Restore over a database and store that are not empty (the database's objects are "
    "dropped first; objects of the store are overwritten, others are left).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def backup_restore(name: str | None, force: bool, as_json: bool) -> None:
    """Restore a backup into the (empty) database of PRISM_DATABASE_URL and the (empty)
    object store, then verify both against the backup's manifest: every table's rows and
    checksum, every object's sha256, every document's file present. Exit 1 on any
    difference. Migrations are not run: `prism migrate` afterwards brings an older backup's
    schema up to this version."""
    from prism import bootstrap
    from prism.config import Settings
    from prism.crypto.keyring import key_encryption_keys
    from prism.db import embedded
    from prism.governance.backup import BackupError, RestoreReport, restore_backup
    from prism.storage import backup_store, object_store

    async def work() -> RestoreReport:
        settings = Settings()
        if settings.database_url is not None:
            url = settings.database_url.get_secret_value()
        else:
            url = await asyncio.to_thread(embedded.start, settings.data_dir)
            await embedded.ensure_database(url)
        keks = key_encryption_keys(
            settings, bootstrap.server_key(settings), bootstrap.retired_keys(settings)
        )
        return await restore_backup(
            url,
            backup_store(settings),
            object_store(settings),
            keks,
            name=name,
            force=force,
            bin_dir=settings.pg_bin_dir,
        )

    try:
        report = asyncio.run(work())
    except (BackupError, ValueError, OSError) as error:
        _backup_failed(error)
    failed = [t.table for t in report.tables if not t.ok]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "name": report.name,
                    "ok": report.ok,
                    "documents": report.documents,
                    "sections": report.sections,
                    "objectsRestored": report.objects_restored,
                    "objectBytes": report.object_bytes,
                    "dumpBytes": report.dump_bytes,
                    "tablesMismatched": failed,
                    "objectsMismatched": report.objects_mismatched,
                    "filesMissing": report.files_missing,
                    "seconds": round(report.seconds, 3),
                }
            )
        )
    else:
        verdict = "[green]verified[/green]" if report.ok else "[red]verification failed[/red]"
        console.print(
            f"Backup {report.name} restored in {report.seconds:.1f} s: {report.documents} "
            f"documents, {report.sections} sections, {report.objects_restored} objects "
            f"({report.object_bytes} bytes), {len(report.tables)} tables; {verdict}",
            soft_wrap=True,
        )
        for problem, items in (
            ("tables that differ", failed),
            ("objects that differ", report.objects_mismatched),
            ("document files missing", report.files_missing),
        ):
            if items:
                console.print(f"[red]{problem}:[/red] {', '.join(items[:20])}", soft_wrap=True)
    if not report.ok:
        sys.exit(1)


@main.group()
def lake() -> None:
    """The data lake: Parquet datasets in the object store."""


@lake.command("export")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Export rows changed from this UTC date on (default: from each table's watermark).",
)
@click.option(
    "--settle-seconds",
    type=click.FloatRange(0, 3600),
    default=60,
    show_default=True,
    help="Leave rows younger than this for the next run (transactions still in flight).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def lake_export(since: Any, settle_seconds: float, as_json: bool) -> None:
    """Write bronze (raw), silver (PII-masked) and gold (daily aggregates) Parquet datasets
    partitioned year=/month=/day=, incrementally from the last watermark; then remove the
    partitions older than their layer's period (PRISM_LAKE_*_DAYS)."""
    from datetime import UTC

    from prism.governance import lake as lake_module

    async def work(services: Services) -> lake_module.LakeReport:
        periods = lake_module.LakePeriods.of(services.settings)
        report = await lake_module.export(
            services.db,
            services.objects,
            since=since.replace(tzinfo=UTC) if since else None,
            settle_seconds=settle_seconds,
            periods=periods,
        )
        report.expired = await lake_module.expire(services.objects, periods)
        return report

    report = with_services(work)
    emit(
        report.as_json(),
        as_json,
        f"Lake export: {report.rows} rows in {report.files} files "
        f"({report.organizations} organizations); {sum(report.expired.values())} expired "
        "partition files removed.",
    )
