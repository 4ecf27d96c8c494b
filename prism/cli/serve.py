"""``prism serve``, ``worker``, ``migrate`` and ``demo``: running Prism, loading its demo data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import click
import uvicorn

from prism import bootstrap, demo
from prism.cli.app import console, main, stop_on_signals, with_services
from prism.config import Settings
from prism.observability import MULTIPROC_ENV, clean_multiprocess_dir, multiprocess_dir
from prism.services import Services
from prism.web.edge import MAX_JSON_BODY


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
        _print_demo(with_services(demo.seed, url))
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
        with metrics_directory(settings.workers):
            uvicorn.run(
                "prism.web.app:app_from_environment",
                factory=True,
                workers=settings.workers,
                **options,
            )
    else:
        from prism.web import serving
        from prism.web.app import create_app  # keep `prism --help` and operator commands light

        with metrics_directory(settings.workers):
            serving.run(create_app(settings, database_url=url, with_worker=with_worker), **options)


@contextlib.contextmanager
def metrics_directory(workers: int) -> Iterator[None]:
    """Prometheus multiprocess mode for the server's processes (decision 0036): the
    operator's PROMETHEUS_MULTIPROC_DIR (shared with other processes of the host), cleaned of
    the files of processes no longer running; else, with several workers, a directory of the
    server's own (the worker processes, started afterwards, inherit it), removed at exit.
    One process alone keeps its metrics in memory."""
    given = multiprocess_dir()
    if given is not None:
        clean_multiprocess_dir(given)
        yield
        return
    if workers <= 1:
        yield
        return
    own = tempfile.mkdtemp(prefix="prism-metrics-")
    os.environ[MULTIPROC_ENV] = own
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(own, ignore_errors=True)


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
    """Run background jobs (extraction, analysis); stops gracefully on SIGTERM. Serves its
    metrics on PRISM_WORKER_METRICS_ADDRESS when set."""
    from prism.jobs.worker import Worker
    from prism.web.routes import metrics_listener

    async def work(services: Services) -> None:
        runner = Worker(services, concurrency=concurrency)
        if drain:
            console.print(f"Ran {await runner.drain()} jobs.")
            return
        async with metrics_listener(services, services.settings.worker_metrics_address):
            await runner.run(stop_on_signals())

    with_services(work)


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
    _print_demo(with_services(demo.seed, url))
    if scale is not None:
        _print_scale(with_services(lambda services: _scale(services, url, scale, days, seed), url))


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
