"""SQL for row-level security, shared by every migration that adds a tenant table."""

from __future__ import annotations

from alembic import op

APP_ROLE = "prism_app"

# After a transaction-local setting ends it reads '' (not NULL): nullif makes that NULL, and
# `organization_id = NULL` matches nothing, so a transaction without an organization sees and
# writes no tenant row at all.
CURRENT_ORG = "nullif(current_setting('prism.org_id', true), '')::uuid"


def enable_tenant_rls(
    table: str, *, key: str = "organization_id", grants: str = "SELECT, INSERT, UPDATE, DELETE"
) -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING ({key} = {CURRENT_ORG}) WITH CHECK ({key} = {CURRENT_ORG})"
    )
    op.execute(f"GRANT {grants} ON {table} TO {APP_ROLE}")


def disable_tenant_rls(table: str) -> None:
    op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
    op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"REVOKE ALL ON {table} FROM {APP_ROLE}")
