"""The embedded PostgreSQL: a real server in PRISM_DATA_DIR/pg for laptops and demos.

It is the same PostgreSQL as production (one SQL dialect), started from the ``pgserver``
wheel where it is installed, else from ``initdb``/``pg_ctl`` found on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import asyncpg

DATABASE_NAME = "prism"


class EmbeddedUnavailable(RuntimeError):
    pass


def start(data_dir: Path) -> str:
    """Start (or join) the server for ``data_dir``; return the URL of the prism database."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (data_dir / "pg").resolve()
    try:
        import pgserver
    except ImportError:
        return _start_from_path(pgdata)
    # cleanup_mode="stop": the server stops when the last process using it exits, and stays
    # up while `prism serve` and a `prism user create` share it.
    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    return str(server.get_uri(DATABASE_NAME))


def _start_from_path(pgdata: Path) -> str:
    pg_ctl = shutil.which("pg_ctl")
    initdb = shutil.which("initdb")
    if pg_ctl is None or initdb is None:
        raise EmbeddedUnavailable(
            "No embedded PostgreSQL: install the `embedded` extra (pgserver, CPython 3.9-3.12), "
            "put PostgreSQL's initdb and pg_ctl on PATH, or set PRISM_DATABASE_URL."
        )
    if os.geteuid() == 0:
        raise EmbeddedUnavailable(
            "PostgreSQL refuses to run as root: install the `embedded` extra (pgserver runs it "
            "as its own user) or set PRISM_DATABASE_URL."
        )
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(  # noqa: S603
            [initdb, "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
    status = subprocess.run([pg_ctl, "-D", str(pgdata), "status"], capture_output=True, check=False)  # noqa: S603
    if status.returncode != 0:
        subprocess.run(  # noqa: S603
            [
                pg_ctl,
                "-D",
                str(pgdata),
                "-w",
                "-l",
                str(pgdata / "log"),
                "-o",
                f"-h '' -k {pgdata}",
                "start",
            ],
            check=True,
            capture_output=True,
        )
    return f"postgresql://postgres@/{DATABASE_NAME}?host={pgdata}"


async def ensure_database(url: str) -> None:
    """Create the prism database on first start (connecting to the maintenance database)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database or DATABASE_NAME
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
