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

from prism import bootstrap, demo, operators
from prism.config import Settings
from prism.errors import PrismError
from prism.models.enums import Classification, Role
from prism.observability import configure_logging
from prism.resolvers.context import Services

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
            await services.db.dispose()

    try:
        return asyncio.run(main())
    except PrismError as error:
        console.print(f"[red]error:[/red] {error.message}")
        sys.exit(1)


def _emit(obj: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(obj, default=str))
    else:
        click.echo(text)


@click.group()
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
    }
    if settings.workers > 1:
        # Worker processes build their own app; the resolved URL spares them the embedded
        # start-up and the migrations.
        os.environ["PRISM_DATABASE_URL"] = url
        os.environ[bootstrap.WITH_WORKER_ENV] = "1" if with_worker else "0"
        uvicorn.run(
            "prism.server:app_from_environment", factory=True, workers=settings.workers, **options
        )
    else:
        from prism.server import create_app  # keep `prism --help` and operator commands light

        uvicorn.run(create_app(settings, database_url=url, with_worker=with_worker), **options)


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
        runner = Worker(services.pipeline, concurrency=concurrency)
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


if __name__ == "__main__":
    main()
