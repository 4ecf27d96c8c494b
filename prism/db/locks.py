"""Fleet-wide locks: a PostgreSQL session advisory lock on a connection of its own, held for
as long as a piece of work runs (longer than any transaction should stay open). Whoever
holds it is the one process of the fleet doing that work; a process that dies loses its
connection, and with it the lock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog

from prism.db.engine import APP_ROLE, url_for_asyncpg

log = structlog.get_logger("prism.locks")
# How often the lock's connection is used while the work runs, so that a proxy or firewall
# does not take it for idle and cut it (which would free the lock under the work's feet).
KEEPALIVE_SECONDS = 30.0


@contextlib.asynccontextmanager
async def fleet_lock(url: str, name: str) -> AsyncIterator[bool]:
    """Try to take the fleet-wide lock ``name``: yields True when this process holds it until
    the block ends, False (at once) when another process holds it."""
    conn: asyncpg.Connection = await asyncpg.connect(
        url_for_asyncpg(url),
        server_settings={"role": APP_ROLE, "application_name": f"prism-lock:{name}"[:63]},
    )
    try:
        held = await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", f"prism.fleet:{name}"
        )
        if not held:
            yield False
            return
        keepalive = asyncio.create_task(_keep_alive(conn, name))
        try:
            yield True
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            with contextlib.suppress(Exception):
                await conn.execute(
                    "SELECT pg_advisory_unlock(hashtextextended($1, 0))", f"prism.fleet:{name}"
                )
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5)


async def _keep_alive(conn: asyncpg.Connection, name: str) -> None:
    while True:
        await asyncio.sleep(KEEPALIVE_SECONDS)
        try:
            await conn.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - logged: the lock may be gone
            log.warning(
                "fleet lock connection lost; the lock may be free", lock=name, error=str(exc)
            )
            return
