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


# Tenant tables whose writes do not change what a cached answer shows (sign-in sessions, MFA
# codes, password reset tokens, the audit chain's bookkeeping, the job queue's leases, wrapped data keys (a re-wrap
# changes no plaintext), the lake export's watermarks), or change too often for caching to
# survive them and are never cached (API tokens: `last_used_at` every minute): no
# data_version trigger.
UNVERSIONED_TABLES = frozenset(
    {
        "sessions",
        "mfa_backup_codes",
        "password_resets",
        "audit_chain_heads",
        "jobs",
        "api_tokens",
        "data_keys",
        "lake_watermarks",
        # the rollups' to-do list: the rollup tables move the version when they are refreshed
        "bi_invalidations",
        # the organization's registered operations: query texts, not data an answer shows
        "organization_operations",
        # the outbox: its events describe changes that moved the version themselves
        "outbox_events",
        "outbox_cursors",
        # webhook deliveries: written at every attempt; the log is read live, never cached
        "webhook_deliveries",
    }
)


def track_data_version(table: str, *, per_row: bool = False) -> None:
    """Bump ``organizations.data_version`` on every write of ``table`` (once per statement
    and organization; ``per_row`` for partitioned tables, which have no transition tables)."""
    if per_row:
        op.execute(
            f"CREATE TRIGGER prism_data_version AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION prism_bump_data_version()"
        )
        return
    for event, transition in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        op.execute(
            f"CREATE TRIGGER prism_data_version_{event.lower()} AFTER {event} ON {table} "
            f"REFERENCING {transition} TABLE AS {transition.lower()}_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION prism_bump_data_version()"
        )


def untrack_data_version(table: str) -> None:
    for name in (
        "prism_data_version",
        *(f"prism_data_version_{e}" for e in ("insert", "update", "delete")),
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
