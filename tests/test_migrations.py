"""Migrations: one head, models in sync, and down/up with data present."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from prism.config import Settings
from prism.db import migrations
from prism.models import TENANT_TABLES
from tests.conftest import NewDatabase


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_single_head() -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config("postgresql://unused/db"))
    assert len(script.get_heads()) == 1


def test_file_order_is_chain_order() -> None:
    """A reader listing the folder sees the migrations in the order they run: each file is
    named <position>_<revision>_<slug>.py."""
    script = ScriptDirectory.from_config(migrations.alembic_config("postgresql://unused/db"))
    chain = list(reversed(list(script.walk_revisions())))
    names = [Path(revision.path).name for revision in chain]
    assert names == sorted(names)
    for position, revision in enumerate(chain, start=1):
        assert names[position - 1].startswith(f"{position:04d}_{revision.revision}_")
    assert sorted(p.name for p in Path(chain[0].path).parent.glob("*.py")) == names


async def test_models_match_the_migrated_schema(database_url: str) -> None:
    # alembic check: raises when autogenerate would produce any operation
    await asyncio.to_thread(migrations.check, database_url)


async def test_downgrade_to_base_and_upgrade_again_with_data(
    new_database: NewDatabase, settings: Settings
) -> None:
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    conn = await asyncpg.connect(_plain(url))
    try:
        # data present: an organization with an audited change
        org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('m') RETURNING id")
        await conn.execute(
            "INSERT INTO audit_logs (id, created_at, organization_id, event_type, category,"
            " description, hash) VALUES (gen_random_uuid(), now(), $1, 't', 'c', 'd', $2)",
            org,
            "0" * 64,
        )
        await conn.close()
        await asyncio.to_thread(migrations.downgrade, url, "base")
        conn = await asyncpg.connect(_plain(url))
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables <= {"alembic_version"}
        await conn.close()
        await asyncio.to_thread(migrations.upgrade, url)
        conn = await asyncpg.connect(_plain(url))
        for table in TENANT_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0  # noqa: S608
        partitions = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_logs'::regclass"
        )
        assert partitions >= 5  # default + this month + 3 ahead
    finally:
        await conn.close()
