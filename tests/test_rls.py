"""Row-level security fails closed: a query that forgets the organization filter still sees
nothing of another organization, and nothing at all without an organization."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from prism.db.engine import Database
from prism.db.migrations.rls import UNVERSIONED_TABLES
from prism.models import TENANT_TABLES, Document
from prism.models.enums import Classification
from prism.services import Services
from tests.factories import Tenant, add_document


async def test_unfiltered_query_sees_only_the_current_organization(
    services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = await add_document(services, tenant, classification=Classification.PUBLIC)
    theirs = await add_document(services, other_tenant, classification=Classification.PUBLIC)
    async with services.db.transaction(tenant.org_id) as session:
        # deliberately no organization filter
        ids = set(await session.scalars(sa.select(Document.id)))
    assert mine.id in ids
    assert theirs.id not in ids


@pytest.mark.parametrize("table", [*TENANT_TABLES, "organizations"])
async def test_without_an_organization_every_tenant_table_is_empty(
    services: Services, tenant: Tenant, table: str
) -> None:
    await add_document(services, tenant)
    async with services.db.transaction(None) as session:
        count = await session.scalar(sa.text(f"SELECT count(*) FROM {table}"))  # noqa: S608
    assert count == 0


async def test_every_tenant_table_has_rls_and_a_policy(services: Services) -> None:
    async with services.db.transaction(None) as session:
        rows = (
            await session.execute(
                sa.text(
                    """
                    SELECT c.relname, c.relrowsecurity,
                           (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
                    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
                    WHERE a.attname = 'organization_id' AND c.relkind IN ('r', 'p')
                      AND c.relnamespace = 'public'::regnamespace AND NOT c.relispartition
                    """
                )
            )
        ).all()
    tables = {r.relname: (r.relrowsecurity, r.policies) for r in rows}
    assert set(tables) == set(TENANT_TABLES)
    assert all(enabled and policies >= 1 for enabled, policies in tables.values()), tables


async def test_app_role_cannot_write_into_another_organization(
    services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    with pytest.raises(DBAPIError, match="row-level security"):
        async with services.db.transaction(tenant.org_id) as session:
            session.add(
                Document(
                    organization_id=other_tenant.org_id,
                    filename="x",
                    mime_type="text/plain",
                    file_size=1,
                    sha256="0" * 64,
                )
            )
            await session.flush()


async def test_app_role_cannot_update_or_delete_audit_events(
    services: Services, tenant: Tenant
) -> None:
    for statement in ("UPDATE audit_logs SET description = 'x'", "DELETE FROM audit_logs"):
        with pytest.raises(DBAPIError, match="permission denied"):
            async with services.db.transaction(tenant.org_id) as session:
                await session.execute(sa.text(statement))


async def test_the_app_connects_as_prism_app_even_as_a_superuser(services: Services) -> None:
    async with services.db.transaction(None) as session:
        user, superuser = (
            await session.execute(
                sa.text(
                    "SELECT current_user,"
                    " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
                )
            )
        ).one()
    assert user == "prism_app"
    assert superuser is False


async def test_organization_setting_does_not_leak_into_the_next_transaction(
    services: Services, tenant: Tenant
) -> None:
    # A pool of one connection: the second transaction reuses the first one's connection.
    from prism.db.engine import create_engine

    url = services.db.engine.url.render_as_string(hide_password=False)
    db = Database(create_engine(url, pool_size=1, max_overflow=0))
    try:
        async with db.transaction(tenant.org_id) as session:
            assert await session.scalar(sa.text("SELECT count(*) FROM users")) == len(tenant.users)
        async with db.transaction(None) as session:
            setting = await session.scalar(sa.text("SELECT current_setting('prism.org_id', true)"))
            assert setting == ""
            assert await session.scalar(sa.text("SELECT count(*) FROM users")) == 0
        async with db.transaction(uuid.uuid4()) as session:
            assert await session.scalar(sa.text("SELECT count(*) FROM users")) == 0
    finally:
        await db.dispose()


async def test_every_tenant_table_moves_the_data_version(services: Services) -> None:
    """Cached answers are keyed on organizations.data_version: a tenant table written
    without bumping it would serve stale answers (exceptions are listed, with reasons, in
    prism/db/migrations/rls.py)."""
    async with services.db.transaction(None) as session:
        rows = await session.execute(
            sa.text(
                "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " JOIN pg_proc p ON p.oid = t.tgfoid"
                " WHERE p.proname = 'prism_bump_data_version' AND NOT c.relispartition"
            )
        )
        tracked = {r.relname for r in rows}
    assert tracked == set(TENANT_TABLES) - UNVERSIONED_TABLES
