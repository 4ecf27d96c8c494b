"""Engine and transactions. Every transaction of the app runs as the non-owner role
``prism_app`` with ``prism.org_id`` set, so row-level security applies to all of it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

APP_ROLE = "prism_app"


def async_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs (what people and pgserver hand out)."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def url_for_asyncpg(url: str) -> str:
    """The same URL as asyncpg itself takes (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    role: str | None = APP_ROLE,
    pool_size: int = 10,
    max_overflow: int = 10,
    statement_timeout_ms: int = 15_000,
    application_name: str = "prism",
) -> AsyncEngine:
    server_settings = {"application_name": application_name}
    if role is not None:
        # Sent in the startup packet: the session is prism_app from its first statement, and
        # RLS applies even when the login user owns the tables or is a superuser.
        server_settings["role"] = role
    if statement_timeout_ms:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # A replica restart or an idle-timeout proxy leaves dead sockets in the pool.
        pool_pre_ping=True,
        # Recycle before common proxy/firewall idle limits (often 30-60 min).
        pool_recycle=1800,
        # Bound values (password hashes, token digests) never reach logs via error text.
        hide_parameters=True,
        connect_args={"server_settings": server_settings},
    )


async def set_organization(session: AsyncSession, organization_id: uuid.UUID | None) -> None:
    """Transaction-local: ends with the transaction, so a pooled connection never carries an
    organization into the next request."""
    value = str(organization_id) if organization_id else ""
    await session.execute(sa.select(sa.func.set_config("prism.org_id", value, True)))


class Database:
    """The engine and a factory of organization-bound transactions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

    @asynccontextmanager
    async def transaction(self, organization_id: uuid.UUID | None) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success, rolled back on error."""
        async with self.sessionmaker() as session, session.begin():
            await set_organization(session, organization_id)
            yield session

    async def ping(self) -> bool:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return True

    def pool_status(self) -> dict[str, Any]:
        pool: Any = self.engine.pool
        return {
            "size": pool.size(),
            "checked_out": pool.checkedout(),
            "overflow": pool.overflow(),
        }

    async def dispose(self) -> None:
        await self.engine.dispose()
