"""What every benchmark shares: the environment a figure depends on, Markdown tables, JSON
files, percentiles and CPU clocks, and a fresh, migrated PostgreSQL database (embedded, or on
PRISM_DATABASE_URL's server).

Every benchmark imports this as ``bench.common`` (and each other as ``bench.ingest``, ...),
never by file: run them from the repository root with the project's virtualenv, as
``.venv/bin/python bench/<name>.py`` or ``.venv/bin/python -m bench.<name>`` (the editable
install puts the root on ``sys.path``, so ``bench`` imports as a package either way).
Only public names cross modules, here and into ``prism``: tests/test_bench_smoke.py runs each
benchmark at a tiny size and checks that."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
START_LOAD = os.getloadavg()[0]


# --- reporting ---------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """What the figures depend on: the machine, the interpreter and the code's commit."""
    import psutil

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )

    def git(*args: str) -> str:
        done = subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), *args],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": git("rev-parse", "--short", "HEAD"),
        # Another engineer may be editing prism/ while this runs: say whether the code measured
        # is the commit's.
        "prism_dirty": bool(git("status", "--porcelain", "--", "prism")),
        "prism_diff_sha256": hashlib.sha256(git("diff", "--", "prism").encode()).hexdigest()[:12],
        # Other processes on these two cores skew every figure: the load around the run.
        "loadavg_1m_start": START_LOAD,
        "loadavg_1m_end": os.getloadavg()[0],
    }


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def results_options() -> argparse.ArgumentParser:
    """The ``--results-dir`` option every benchmark takes (a parent parser)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS,
        help="where the results are written (default bench/results)",
    )
    return options


def shown(path: Path) -> str:
    """A path as printed: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return seconds * 1000


def parse_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# --- CPU clocks --------------------------------------------------------------------------------


def postgres_cpu(postmaster: int | None) -> dict[int, float]:
    """CPU seconds so far of the PostgreSQL server's processes, by pid (embedded server only:
    ``postmaster`` is None on PRISM_DATABASE_URL's server, and this is empty)."""
    import psutil

    if postmaster is None:
        return {}
    try:
        root = psutil.Process(postmaster)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
        except psutil.Error:
            continue
    return seconds


class CpuClock:
    """Wall time, CPU seconds of this process and of the PostgreSQL server's processes
    (embedded only) over a ``with`` block."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster

    def __enter__(self) -> CpuClock:
        self.started_python = time.process_time()
        self.started_postgres = postgres_cpu(self.postmaster)
        self.started_wall = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.started_wall
        self.python = time.process_time() - self.started_python
        after = postgres_cpu(self.postmaster)
        self.postgres: float | None = (
            sum(v - self.started_postgres.get(pid, 0.0) for pid, v in after.items())
            if self.postmaster
            else None
        )


# --- the schema --------------------------------------------------------------------------------


def core_schema(schema: Any = None) -> Any:
    """graphql-core's schema under Prism's Strawberry schema (``build_schema()`` when none is
    given), which graphql-core's functions take. Strawberry keeps it in ``_schema`` and has no
    public accessor (``prism schema export`` reads it the same way): this is the one place the
    benchmarks touch it."""
    if schema is None:
        from prism.schema import build_schema

        schema = build_schema()
    return schema._schema


# --- the database ------------------------------------------------------------------------------


@dataclass
class BenchDatabase:
    url: str  # the fresh database, as the app's login user
    server_url: str
    services: Any  # prism.execution.context.Services
    organization_id: uuid.UUID
    data_dir: Path
    postmaster_pid: int | None  # for PostgreSQL's CPU time (embedded server only)
    pgdata: Path | None = None  # the embedded server's data directory (its log is pgdata/log)

    async def owner(self) -> Any:
        """A plain asyncpg connection as the login user (owner: bypasses RLS, for set-up)."""
        import asyncpg

        from prism.db.engine import url_for_asyncpg

        return await asyncpg.connect(url_for_asyncpg(self.url))


@asynccontextmanager
async def bench_database(scratch: Path, pool_size: int) -> AsyncIterator[BenchDatabase]:
    """A fresh, migrated database with one organization, and the app's services on it."""
    import asyncpg
    from pydantic import SecretStr
    from sqlalchemy.engine import make_url

    from prism import bootstrap
    from prism.audit import OPERATOR
    from prism.config import Settings
    from prism.db import embedded, migrations
    from prism.db.engine import url_for_asyncpg
    from prism.identity import organizations as identity_organizations
    from prism.observability import configure_logging

    # Production logs every finished job at INFO; WARNING keeps the terminal readable (the
    # per-job log line costs tens of microseconds, noise next to the figures here).
    configure_logging("WARNING")
    given = os.environ.get("PRISM_DATABASE_URL")
    server_url = given or await asyncio.to_thread(embedded.start, scratch)
    name = f"prism_bench_{uuid.uuid4().hex[:10]}"
    admin = url_for_asyncpg(make_url(server_url).set(database="postgres").render_as_string(False))
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    services = None
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        settings = Settings(
            database_url=SecretStr(url),
            data_dir=scratch / "data",
            jwt_secret=SecretStr("bench-secret-" + "x" * 40),
            database_pool_size=pool_size,
            log_level="WARNING",
        )
        services = bootstrap.build_services(settings, url)
        org = await identity_organizations.create_organization(services, OPERATOR, f"Bench {name}")
        yield BenchDatabase(
            url=url,
            server_url=server_url,
            services=services,
            organization_id=org.id,
            data_dir=settings.data_dir,
            postmaster_pid=None if given else postmaster_pid(scratch / "pg"),
            pgdata=None if given else (scratch / "pg").resolve(),
        )
    finally:
        if services is not None:
            await services.close()
        if given:  # leave the given server as it was
            conn = await asyncpg.connect(admin)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
        else:
            stop_embedded(scratch / "pg")


def postmaster_pid(pgdata: Path) -> int | None:
    pid_file = pgdata.resolve() / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def stop_embedded(pgdata: Path) -> None:
    """Stop the embedded server embedded.start opened, and delete its data directory."""
    import pgserver

    server = pgserver.get_server(pgdata.resolve())
    server.cleanup_mode = "delete"
    server.cleanup()


def record(
    name: str,
    title: str,
    parameters: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
    extra: dict[str, Any] | None = None,
    *,
    script: str,
    file_name: str,
    results_dir: Path = RESULTS,
) -> Path:
    """Print the tables as Markdown and write everything to <results_dir>/<file_name>.json
    (bench/results by default); ``script`` is the bench file the recorded command runs."""
    env = environment()
    print(f"\n## {title}\n")
    print(f"{env['date']} · {env['cpu']} · {env['cpus_usable']} CPUs · Python {env['python']}")
    dirty = f" + uncommitted prism/ diff {env['prism_diff_sha256']}" if env["prism_dirty"] else ""
    load = f"load average {env['loadavg_1m_start']:.2f} → {env['loadavg_1m_end']:.2f}"
    print(f"commit {env['commit']}{dirty} · {load}")
    print("parameters: " + ", ".join(f"{k}={v}" for k, v in parameters.items()))
    for caption, rows in tables.items():
        print(f"\n### {caption}\n\n{markdown_table(rows)}")
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{file_name}.json"
    document = {
        "benchmark": name,
        "title": title,
        "command": f".venv/bin/python {script} " + " ".join(sys.argv[1:]),
        "environment": env,
        "parameters": parameters,
        "tables": tables,
        **(extra or {}),
    }
    write_json(path, document)
    print(f"\nwritten to {shown(path)}")
    return path
