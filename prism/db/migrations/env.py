"""Alembic environment: runs migrations as the login user (the owner), never as prism_app."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from prism.db.engine import create_engine
from prism.models import metadata

config = context.config


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # Monthly audit partitions are made by prism_ensure_audit_partitions(), not by models.
    return not (type_ == "table" and name is not None and name.startswith("audit_logs_"))


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object,
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    engine = create_engine(
        config.attributes["url"],
        role=None,
        pool_size=1,
        max_overflow=0,
        statement_timeout_ms=0,
        application_name="prism-migrate",
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `prism migrate`")
asyncio.run(run_async())
