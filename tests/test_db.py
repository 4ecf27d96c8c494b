"""The connection pool: dead connections are replaced without the request noticing."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
import sqlalchemy as sa

from prism.db import engine as db_module
from prism.db.engine import Database, create_engine


async def test_a_connection_killed_while_idle_is_replaced(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.2)
    name = f"prism-pool-{uuid.uuid4().hex[:6]}"
    db = Database(create_engine(database_url, pool_size=1, max_overflow=0, application_name=name))
    try:
        async with db.transaction(None) as session:
            first = await session.scalar(sa.text("SELECT pg_backend_pid()"))
        # the server ends the pooled connection (a restart, an idle-timeout proxy)
        admin = await asyncpg.connect(db_module.url_for_asyncpg(database_url))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                name,
            )
        finally:
            await admin.close()
        assert killed == 1
        await asyncio.sleep(0.3)
        async with db.transaction(None) as session:
            second = await session.scalar(sa.text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await db.dispose()
