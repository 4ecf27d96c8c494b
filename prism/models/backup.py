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
