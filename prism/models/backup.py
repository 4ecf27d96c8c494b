"""Fingerprints of every table for backup manifests: row count and a checksum of the rows'
text, computed the same way on the source and on a restored copy."""

from __future__ import annotations

from typing import Any

import asyncpg

from prism.db.engine import APP_ROLE

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


async def count_tables(conn: asyncpg.Connection) -> int:
    """Tables of the public schema: 0 for an empty database (what a restore asks for)."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relkind IN ('r', 'p')"
    )
    return count


async def ensure_app_role(conn: asyncpg.Connection) -> None:
    """The app role, as the first migration makes it (roles are the server's, not the
    database's: a restore onto a new server needs it before the dump's grants)."""
    await conn.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
            END IF;
        END $$"""
    )
    await conn.execute(f"GRANT {APP_ROLE} TO CURRENT_USER")


async def document_files(conn: asyncpg.Connection) -> set[str]:
    """The object keys of the files of documents not deleted (what a restore must bring)."""
    rows = await conn.fetch(
        "SELECT storage_key FROM public.documents "
        "WHERE storage_key IS NOT NULL AND deleted_at IS NULL"
    )
    return {r["storage_key"] for r in rows}


async def clear_public_schema(conn: asyncpg.Connection) -> None:
    """Drop everything of the public schema (a forced restore over a database in use)."""
    await conn.execute("DROP SCHEMA public CASCADE")
    await conn.execute("CREATE SCHEMA public")
