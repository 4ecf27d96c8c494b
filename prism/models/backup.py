"""Fingerprints of every table for backup manifests: row count and a checksum of the rows'
text, computed the same way on the source and on a restored copy."""

from __future__ import annotations

from typing import Any

import asyncpg

TABLES = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  AND NOT c.relispartition
ORDER BY c.relname
"""


async def table_fingerprints(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    """{table: {"rows", "checksum"}} of the public schema (partitioned tables as a whole), as
    the connection's role sees them: run it as the owner, whom row-level security lets see
    every organization. The checksum does not depend on row order (md5 of the sorted md5s)."""
    result: dict[str, dict[str, Any]] = {}
    for record in await conn.fetch(TABLES):
        name = record["relname"]
        row = await conn.fetchrow(
            "SELECT count(*) AS rows, "  # noqa: S608 - a catalog name, quoted
            "coalesce(md5(string_agg(h, '' ORDER BY h)), '') AS checksum "
            f'FROM (SELECT md5(t::text) AS h FROM public."{name}" t) rows_of_table'
        )
        assert row is not None
        result[name] = {"rows": int(row["rows"]), "checksum": row["checksum"]}
    return result


async def export_snapshot(conn: asyncpg.Connection) -> str:
    """The snapshot of the connection's (repeatable read) transaction, for ``pg_dump
    --snapshot``: what the manifest counts is what is dumped."""
    snapshot: str = await conn.fetchval("SELECT pg_export_snapshot()")
    return snapshot


async def server_identity(conn: asyncpg.Connection) -> tuple[str, str]:
    """(database name, server version) of the connection."""
    database: str = await conn.fetchval("SELECT current_database()")
    version: str = await conn.fetchval("SHOW server_version")
    return database, version


async def create_database(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f'CREATE DATABASE "{name}"')


async def drop_database(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
