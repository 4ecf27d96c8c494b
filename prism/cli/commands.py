"""The ``prism`` command line: serve, migrate, demo, and operator commands that work against
the same database as a running server (the embedded one included)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import uvicorn
from rich.console import Console
from rich.table import Table

from prism import bootstrap, demo, operators
from prism.cli.errors import FailsInOneLine
from prism.config import Settings
from prism.errors import PrismError
from prism.models.enums import Classification, Role
from prism.observability import configure_logging
from prism.services import Services
from prism.web.edge import MAX_JSON_BODY

T = TypeVar("T")
console = Console(stderr=True)


def _run(work: Callable[[Services], Awaitable[T]], url: str | None = None) -> T:
    """Run ``work`` with services on a migrated database; domain errors exit 1, said plainly."""

    async def main() -> T:
        settings = Settings()
        nonlocal url
        url = url or await bootstrap.prepare_database(settings)
        services = bootstrap.build_services(settings, url)
        try:
            return await work(services)
        finally:
            await services.close()

    try:
        return asyncio.run(main())
    except PrismError as error:
        console.print(f"[red]error:[/red] {error.message}", soft_wrap=True)
        sys.exit(1)


def _emit(obj: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(obj, default=str))
    else:
        click.echo(text)


@click.group(cls=FailsInOneLine)
def main() -> None:
    """Prism: the GraphQL data-platform API of AI document review."""
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)


@main.command()
@click.option(
    "--demo", "with_demo", is_flag=True, help="Load the demo data and print a demo token first."
)
@click.option("--with-worker", is_flag=True, help="Also run a job worker in the server process.")
def serve(with_demo: bool, with_worker: bool) -> None:
    """Serve GraphQL on PRISM_HOST:PRISM_PORT."""
    settings = Settings()
    url = asyncio.run(bootstrap.prepare_database(settings))
    if with_demo:
        _print_demo(_run(demo.seed, url))
    console.print(f"Prism serves GraphQL at http://{settings.host}:{settings.port}/graphql")
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        # The client address is derived by the app from PRISM_TRUSTED_PROXIES alone
        # (prism/web/edge.py): uvicorn must not rewrite it from X-Forwarded-For first.
        "proxy_headers": False,
        # A WebSocket message is held to the HTTP body limit (prism/web/websocket.py refuses a
        # larger one too, for servers started otherwise).
        "ws_max_size": MAX_JSON_BODY,
    }
    if settings.workers > 1:
        # Worker processes build their own app; the resolved URL spares them the embedded
        # start-up and the migrations.
        os.environ["PRISM_DATABASE_URL"] = url
        os.environ[bootstrap.WITH_WORKER_ENV] = "1" if with_worker else "0"
        uvicorn.run(
            "prism.web.app:app_from_environment", factory=True, workers=settings.workers, **options
        )
    else:
        from prism.web import serving
        from prism.web.app import create_app  # keep `prism --help` and operator commands light

        serving.run(create_app(settings, database_url=url, with_worker=with_worker), **options)


def _print_demo(result: demo.DemoResult) -> None:
    state = "created" if result.created else "already present, reused"
    console.print(f"Demo organization {demo.DEMO_ORGANIZATION!r} {state}.")
    console.print(
        f"Demo users: admin@acme.example, approver@…, reviewer@…, auditor@…, viewer@… "
        f"(password {demo.DEMO_PASSWORD!r}); other organization: admin@globex.example."
    )
    console.print("Demo API token (ADMIN, every scope; shown once):")
    click.echo(result.token)


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Jobs run at once (default PRISM_WORKER_CONCURRENCY).",
)
@click.option("--drain", is_flag=True, help="Run what is queued, then exit.")
def worker(concurrency: int | None, drain: bool) -> None:
    """Run background jobs (extraction, analysis); stops gracefully on SIGTERM."""
    from prism.jobs.worker import Worker

    async def work(services: Services) -> None:
        runner = Worker(services, concurrency=concurrency)
        if drain:
            console.print(f"Ran {await runner.drain()} jobs.")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await runner.run(stop)

    _run(work)


@main.command()
def migrate() -> None:
    """Apply database migrations (also done by `serve`)."""
    settings = Settings()
    asyncio.run(bootstrap.prepare_database(settings))
    where = "embedded" if settings.database_url is None else "PRISM_DATABASE_URL"
    console.print(f"Database ({where}) migrated to head.")


@main.command("demo")
@click.option(
    "--scale",
    type=click.IntRange(1, 20_000_000),
    default=None,
    help="Also generate this many documents (about 10 analysed sections each) in new "
    "organizations, with feedback and audit trails, written with COPY.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="Days of history the generated documents spread over.",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed of the generated distributions (ids and names are always new).",
)
def demo_command(scale: int | None, days: int, seed: int) -> None:
    """Load the demo data (idempotent) and print a fresh demo token; with --scale, also a
    large multi-organization corpus and a token for its largest organization."""
    url = asyncio.run(bootstrap.prepare_database(Settings()))
    _print_demo(_run(demo.seed, url))
    if scale is not None:
        _print_scale(_run(lambda services: _scale(services, url, scale, days, seed), url))


async def _scale(services: Services, url: str, documents: int, days: int, seed: int) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    labels = {
        "documents": "documents",
        "document_sections": "sections",
        "analysis_results": "analyses",
        "user_feedback": "feedback",
        "audit_logs": "audit events",
        "slices": "BI rollup day slices",
    }
    with Progress(
        TextColumn("{task.description:>22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {
            table: progress.add_task(label, total=None, rate="") for table, label in labels.items()
        }
        started: dict[str, float] = {}

        def planned(table: str, rows: int) -> None:
            progress.update(tasks[table], total=rows)

        def advance(table: str, rows: int) -> None:
            now = time.perf_counter()
            begun = started.setdefault(table, now)
            progress.advance(tasks[table], rows)
            done = progress.tasks[tasks[table]].completed
            if now > begun:
                progress.update(tasks[table], rate=f"{done / (now - begun):,.0f}/s")

        return await demo.load_scale(
            services,
            url,
            documents=documents,
            days=days,
            seed=seed,
            advance=advance,
            planned=planned,
            on_rollups=advance,
        )


def _print_scale(result: demo.ScaleDemo) -> None:
    corpus = result.corpus
    console.print(
        f"Generated in {corpus.seconds:.0f} s: "
        + ", ".join(f"{n:,} {table}" for table, n in corpus.rows.items())
        + f"; BI rollups built in {result.rollup_seconds:.1f} s.",
        soft_wrap=True,
    )
    for _, name, admin in corpus.organizations:
        console.print(f"  {name}: ADMIN {admin} (password {demo.DEMO_PASSWORD!r})", soft_wrap=True)
    console.print(
        f"API token of {corpus.organizations[0][1]}'s ADMIN (every scope; shown once):",
        soft_wrap=True,
    )
    click.echo(result.token)


@main.group()
def org() -> None:
    """Organizations."""


@org.command("create")
@click.argument("name")
@click.option("--domain", help="The organization's e-mail domain.")
@click.option("--json", "as_json", is_flag=True, help="Print the organization as JSON.")
def org_create(name: str, domain: str | None, as_json: bool) -> None:
    """Create an organization."""
    org_row = _run(lambda s: operators.create_organization(s, name, domain=domain))
    _emit(
        {"id": str(org_row.id), "name": org_row.name, "domain": org_row.domain},
        as_json,
        f"Organization {org_row.name!r} created: {org_row.id}",
    )


@org.command("domain")
@click.argument("organization")
@click.argument("domain")
@click.option("--json", "as_json", is_flag=True, help="Print the organization as JSON.")
def org_domain(organization: str, domain: str, as_json: bool) -> None:
    """Set ORGANIZATION's e-mail domain (its ADMINs create users in it, nobody else can)."""

    async def work(services: Services) -> Any:
        org_id = await operators.find_organization(services, organization)
        return await operators.set_domain(services, org_id, domain)

    org_row = _run(work)
    _emit(
        {"id": str(org_row.id), "name": org_row.name, "domain": org_row.domain},
        as_json,
        f"Organization {org_row.name!r} now has the e-mail domain {org_row.domain}",
    )


def _choice(enum: type[Role] | type[Classification]) -> click.Choice[str]:
    return click.Choice([m.value for m in enum], case_sensitive=False)


@main.group()
def user() -> None:
    """Users."""


@user.command("create")
@click.option("--org", "org_ref", required=True, help="Organization name or id.")
@click.option("--email", required=True)
@click.option("--password", required=True, help="12 characters or more.")
@click.option("--role", required=True, type=_choice(Role))
@click.option("--clearance", type=_choice(Classification), default=None)
@click.option("--department", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the user as JSON.")
def user_create(
    org_ref: str,
    email: str,
    password: str,
    role: str,
    clearance: str | None,
    department: str | None,
    as_json: bool,
) -> None:
    """Create a user."""

    async def work(services: Services) -> Any:
        org_id = await operators.find_organization(services, org_ref)
        return await operators.create_user(
            services,
            org_id,
            email=email,
            password=password,
            role=Role(role.upper()),
            clearance=Classification(clearance.upper()) if clearance else None,
            department=department,
        )

    row = _run(work)
    _emit(
        {
            "id": str(row.id),
            "organizationId": str(row.organization_id),
            "email": row.email,
            "role": row.role.value,
            "clearance": row.clearance.value,
            "department": row.department,
        },
        as_json,
        f"User {row.email} ({row.role.value}) created: {row.id}",
    )


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--org", "org_ref", required=True, help="Organization name or id.")
@click.option("--name", required=True)
@click.option("--scopes", required=True, help="Comma-separated, e.g. documents:read,search:read")
@click.option("--user", "user_email", default=None, help="Bind the token to this user's rights.")
@click.option(
    "--role",
    type=_choice(Role),
    default="VIEWER",
    show_default=True,
    help="Role of an unbound (service) token.",
)
@click.option(
    "--clearance",
    type=_choice(Classification),
    default="INTERNAL",
    show_default=True,
    help="Clearance of an unbound (service) token.",
)
@click.option("--expires-in-days", type=click.IntRange(1, 3650), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the token as JSON.")
def token_create(
    org_ref: str,
    name: str,
    scopes: str,
    user_email: str | None,
    role: str,
    clearance: str,
    expires_in_days: int | None,
    as_json: bool,
) -> None:
    """Create an API token; the secret is printed once."""

    async def work(services: Services) -> operators.CreatedToken:
        org_id = await operators.find_organization(services, org_ref)
        return await operators.create_token(
            services,
            org_id,
            name=name,
            scopes=[s.strip() for s in scopes.split(",") if s.strip()],
            user_email=user_email,
            role=Role(role.upper()),
            clearance=Classification(clearance.upper()),
            expires_in_days=expires_in_days,
        )

    created = _run(work)
    t = created.token
    _emit(
        {
            "token": created.secret,
            "id": str(t.id),
            "name": t.name,
            "prefix": t.prefix,
            "scopes": t.scopes,
            "expiresAt": t.expires_at,
        },
        as_json,
        created.secret,
    )


@main.group()
def operations() -> None:
    """Registered operations: the safelist that BI tools and production clients call by hash."""


@operations.command("push")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--json", "as_json", is_flag=True, help="Print name → sha256 as JSON.")
def operations_push(files: tuple[Path, ...], as_json: bool) -> None:
    """Register every named operation of FILES (validated against the schema)."""
    from prism.models.registered_operations import register_operations
    from prism.operations.persisted import split_operations
    from prism.schema import build_schema

    graphql_schema = build_schema()._schema
    found: list[tuple[str, str]] = []
    for path in files:
        try:
            found.extend(split_operations(path.read_text(), graphql_schema))
        except PrismError as error:
            console.print(f"[red]error:[/red] {path}: {error.message}", soft_wrap=True)
            sys.exit(1)
        except UnicodeDecodeError:
            console.print(f"[red]error:[/red] {path}: not UTF-8 text", soft_wrap=True)
            sys.exit(1)

    async def work(services: Services) -> list[tuple[str, str, bool]]:
        async with services.db.transaction(None) as session:
            return await register_operations(session, found)

    stored = _run(work)
    if as_json:
        click.echo(json.dumps({name: digest for name, digest, _ in stored}, indent=2))
        return
    table = Table("operation", "")
    table.add_column("sha256", no_wrap=True, min_width=64)
    for name, digest, new in stored:
        table.add_row(name, "registered" if new else "already registered", digest)
    Console().print(table)


@operations.command("list")
def operations_list() -> None:
    """The registered operations."""
    from prism.models.registered_operations import list_operations

    async def work(services: Services) -> list[tuple[str, str, str]]:
        async with services.db.transaction(None) as session:
            rows = await list_operations(session)
        return [(r.name, r.sha256, r.created_at.isoformat()) for r in rows]

    table = Table("operation", "registered at")
    table.add_column("sha256", no_wrap=True, min_width=64)
    for name, digest, created in _run(work):
        table.add_row(name, created[:19], digest)
    Console().print(table)


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
    """Re-mask and re-index every section: PostgreSQL's search text, and with OpenSearch a new
    index that replaces the old one in one alias swap (with --org: that organization in
    place)."""
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
        org_id = await operators.find_organization(services, org_ref) if org_ref else None
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

    done = _run(work)
    console.print(
        f"Reindexed {done.done:,} sections of {done.organizations} organization(s)"
        + (f" into {done.index}" if done.index else "")
        + (f"; replaced {', '.join(done.replaced)}" if done.replaced else "")
        + (f"; removed {done.removed:,} stale" if done.removed else "")
        + (f"; caught up {done.caught_up:,} changed document(s)" if done.caught_up else "")
        + "."
    )


@main.group()
def policy() -> None:
    """The access policy."""


@policy.command("table")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docs/policy.md"),
    show_default=True,
)
def policy_table(output: Path) -> None:
    """Write the role × scope × action table generated from the policy code."""
    from prism.authz.policy import policy_table as table

    output.write_text(table())
    console.print(f"Wrote {output}")


async def _organizations(services: Services, org_ref: str | None) -> list[Any]:
    from prism.models.organizations import read_organization_ids

    if org_ref is not None:
        return [await operators.find_organization(services, org_ref)]
    async with services.db.transaction(None) as session:
        return await read_organization_ids(session)


@main.group()
def lifecycle() -> None:
    """Retention: storage tiers and purges by each organization's policies."""


@lifecycle.command("run")
@click.option("--dry-run", is_flag=True, help="Say what would move and be purged; change nothing.")
@click.option("--org", "org_ref", default=None, help="One organization (name or id); default all.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def lifecycle_run(dry_run: bool, org_ref: str | None, as_json: bool) -> None:
    """Move document files to colder tiers and purge what has expired (never under legal
    hold); every transition and purge is audited with its counts."""
    from prism.governance.lifecycle import LifecycleReport, run_lifecycle

    async def work(services: Services) -> list[LifecycleReport]:
        return [
            await run_lifecycle(
                services.db, services.objects, org, dry_run=dry_run, meta=operators.CLI
            )
            for org in await _organizations(services, org_ref)
        ]

    reports = _run(work)
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
@click.option("--org", "org_ref", default=None, help="One organization (name or id); default all.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def quality_check(threshold: float, org_ref: str | None, as_json: bool) -> None:
    """Assess data quality (stored as a run, shown by `dataQualityReport`)."""
    from prism.governance.quality import assess
    from prism.models.governance import QualityRun

    async def work(services: Services) -> list[QualityRun]:
        sla = services.settings.analysis_sla_seconds
        return [
            await assess(services.db, org, analysis_sla_seconds=sla)
            for org in await _organizations(services, org_ref)
        ]

    runs = _run(work)
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
    """Verified backups of the database to the object store."""


@backup.command("create")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def backup_create(as_json: bool) -> None:
    """pg_dump (custom format) to the object store, with a manifest of row counts and
    checksums per table taken from the same snapshot."""
    from prism.governance.backup import BackupError, BackupResult, create_backup

    async def work(services: Services) -> BackupResult:
        url = services.db.engine.url.render_as_string(hide_password=False)
        return await create_backup(url, services.objects, bin_dir=services.settings.pg_bin_dir)

    try:
        result = _run(work)
    except BackupError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(result.manifest))
        return
    tables = result.manifest["tables"]
    console.print(
        f"Backup {result.name}: {result.manifest['dump']['bytes']} bytes, {len(tables)} tables, "
        f"{sum(t['rows'] for t in tables.values())} rows; dump sha256 "
        f"{result.manifest['dump']['sha256']}"
    )
    click.echo(result.name)


@backup.command("verify")
@click.option("--name", default=None, help="The backup to verify (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def backup_verify(name: str | None, as_json: bool) -> None:
    """Restore a backup into a scratch database and compare it with its manifest; exit 1 on
    any difference."""
    from prism.governance.backup import BackupError, VerifyReport, verify_backup

    async def work(services: Services) -> VerifyReport:
        url = services.db.engine.url.render_as_string(hide_password=False)
        return await verify_backup(
            url, services.objects, name=name, bin_dir=services.settings.pg_bin_dir
        )

    try:
        report = _run(work)
    except BackupError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        sys.exit(1)
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
                }
            )
        )
    elif report.error and not report.restored and not report.tables:
        # Nothing was restored to compare (manifest or dump missing): one line says it.
        console.print(f"[red]error:[/red] backup {report.name}: {report.error}", soft_wrap=True)
    else:
        table = Table("table", "manifest rows", "restored rows", "checksum", title=report.name)
        for t in report.tables:
            mark = "[green]ok[/green]" if t.ok else "[red]MISMATCH[/red]"
            table.add_row(t.table, str(t.expected_rows), str(t.actual_rows), mark)
        Console().print(table)
        dump = "matches" if report.dump_checksum_matches else "[red]DOES NOT MATCH[/red]"
        console.print(f"Dump checksum {dump}; restored: {report.restored}.")
        if report.error:
            console.print(f"[red]{report.error}[/red]")
        verdict = "[green]verified[/green]" if report.ok else "[red]verification failed[/red]"
        console.print(f"Backup {report.name}: {verdict}")
    if not report.ok:
        sys.exit(1)


@main.group()
def keys() -> None:
    """Encryption keys: organizations' data keys and the keys that wrap them."""


@keys.command("rotate")
@click.option(
    "--new-kek",
    is_flag=True,
    help="First add a new key-encryption key to PRISM_DATA_DIR/keyring.json and make it "
    "current (the local keyring file only; with PRISM_ENCRYPTION_KEY or PRISM_KMS_KEY_ID, "
    "change the setting instead).",
)
def keys_rotate(new_kek: bool) -> None:
    """Re-wrap every organization's data key with the current key-encryption key. Data stays
    as it is and servers keep running: old and new keys both unwrap until this finishes."""
    from prism.crypto import envelope as encryption
    from prism.crypto import keyring

    settings = Settings()
    if new_kek:
        if settings.encryption_key is not None or settings.kms_key_id:
            console.print(
                "[red]error:[/red] --new-kek manages the keyring file; with "
                "PRISM_ENCRYPTION_KEY set, move it to PRISM_ENCRYPTION_RETIRED_KEYS and set a "
                "new one (with PRISM_KMS_KEY_ID, name the new KMS key) before rotating."
            )
            sys.exit(1)
        keyring.file_keyring(
            settings.data_dir / keyring.KEYRING_FILE, bootstrap.server_key(settings)
        )
        added = keyring.add_key(settings.data_dir / keyring.KEYRING_FILE)
        console.print(f"New key-encryption key {added} is current.")

    async def work(services: Services) -> list[tuple[Any, str, str]]:
        return await encryption.rotate(services.db, services.envelope)

    changed = _run(work)
    for organization_id, old, new in changed:
        click.echo(f"{organization_id}: {old} -> {new}")
    console.print(f"Re-wrapped {len(changed)} data keys.")


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the data keys per KEK as JSON.")
def keys_status(as_json: bool) -> None:
    """Data keys per key-encryption key. A retired KEK may be removed from the keyring only
    when it wraps none; exits 1 while any data key is under a KEK that is not current."""
    from prism.crypto import envelope as encryption

    async def work(services: Services) -> tuple[str, dict[str, list[Any]]]:
        envelope = services.envelope
        return envelope.keks.current_id, await encryption.key_status(services.db, envelope)

    current, by_kek = _run(work)
    stale = {kek: orgs for kek, orgs in by_kek.items() if kek != current}
    body = {
        "current": current,
        "data_keys": {kek: [str(o) for o in orgs] for kek, orgs in by_kek.items()},
    }
    lines = [f"Current key-encryption key: {current}"]
    for kek, orgs in sorted(by_kek.items()):
        lines.append(f"{kek}: {len(orgs)} data keys" + (" (current)" if kek == current else ""))
    lines.append(
        f"{sum(len(o) for o in stale.values())} data keys under a KEK that is not current"
        + ("; run `prism keys rotate`." if stale else ".")
    )
    _emit(body, as_json, "\n".join(lines))
    if stale:
        sys.exit(1)


@main.group()
def originals() -> None:
    """Stored originals (uploaded files) in the object store."""


@originals.command("seal")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def originals_seal(as_json: bool) -> None:
    """Seal the stored files of CONFIDENTIAL and RESTRICTED documents that are still in the
    clear (stored before sealing existed) with their organization's data key. Safe to re-run:
    sealed files are recognised by their header and skipped, so an interrupted run resumes."""
    from prism.documents import originals as originals_module

    async def work(services: Services) -> originals_module.SealReport:
        return await originals_module.seal_existing(
            services.db, services.objects, services.envelope
        )

    report = _run(work)
    _emit(
        report.as_json(),
        as_json,
        f"Originals: {report.sealed} sealed now, {report.already} sealed already, "
        f"{report.missing} missing, {report.failed} failed (see the log; run again), of "
        f"{report.examined} ({report.organizations} organizations).",
    )
    if report.failed:
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
    partitioned year=/month=/day=, incrementally from the last watermark."""
    from datetime import UTC

    from prism.governance import lake as lake_module

    async def work(services: Services) -> lake_module.LakeReport:
        return await lake_module.export(
            services.db,
            services.objects,
            since=since.replace(tzinfo=UTC) if since else None,
            settle_seconds=settle_seconds,
        )

    report = _run(work)
    _emit(
        report.as_json(),
        as_json,
        f"Lake export: {report.rows} rows in {report.files} files "
        f"({report.organizations} organizations).",
    )


@main.group()
def jobs() -> None:
    """The background job queue: find jobs that gave up (DEAD) and queue them again."""


def _job_states() -> click.Choice[str]:
    from prism.models.enums import JobState

    return click.Choice([s.value for s in JobState], case_sensitive=False)


@jobs.command("list")
@click.option("--state", "states", multiple=True, type=_job_states(), help="Repeatable.")
@click.option("--kind", "kinds", multiple=True, help="A job kind, e.g. gdpr.erase_cleanup.")
@click.option("--org", "org_ref", default=None, help="One organization (name or id); default all.")
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
        for org_id in await _organizations(services, org_ref):
            async with services.db.transaction(org_id) as session:
                page = await job_models.read_jobs(
                    session,
                    org_id,
                    flt=flt,
                    page=PageRequest(first=limit, ordering="jobs", descending=True),
                )
            found += page.items
        return found

    found = _run(work)
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
@click.option("--org", "org_ref", default=None, help="One organization (name or id); default all.")
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
        for org_id in await _organizations(services, org_ref):
            retried += await retry_dead(
                services.db, org_id, wanted, actor=Actor(), meta=operators.CLI
            )
        return retried

    retried = _run(work)
    missing = sorted(set(map(str, wanted or [])) - {str(j.id) for j in retried})
    _emit(
        {"retried": [{"id": str(j.id), "kind": j.kind} for j in retried], "notDead": missing},
        as_json,
        f"Queued again: {len(retried)} job(s)."
        + (f" Not DEAD (or not found): {', '.join(missing)}." if missing else ""),
    )
    if missing:
        sys.exit(1)


@main.group()
def schema() -> None:
    """The GraphQL schema."""


@schema.command("export")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("schema.graphql"),
    show_default=True,
)
def schema_export(output: Path) -> None:
    """Write the SDL of the public surface (committed as schema.graphql)."""
    from prism.schema import export_sdl

    output.write_text(export_sdl())
    console.print(f"Wrote {output}")


@main.group()
def config() -> None:
    """The settings (PRISM_* environment variables)."""


@config.command("docs")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docs/configuration.md"),
    show_default=True,
)
def config_docs(output: Path) -> None:
    """Write the configuration reference generated from the settings (docs/configuration.md)."""
    from prism.cli.config_docs import configuration_markdown

    output.write_text(configuration_markdown())
    console.print(f"Wrote {output}")
