"""Partners' webhooks: ``webhook_endpoints`` (URL, event types, the registering ADMIN's
clearance, the sealed signing secret, enabled or disabled and why, since when it fails) and
``webhook_deliveries`` (one row per attempt: status, response code, latency, error, when the
next attempt is), both row-level secured like every tenant table.

The dispatcher reads the outbox as consumer ``webhooks`` with a cursor per organization made
when the organization's first endpoint is: ``prism_webhook_pending`` lists the organizations
with such a cursor and events past it. Pruning the outbox now also keeps what any cursor has
not passed (before: only registered consumers' cursors), so the webhooks' cursors hold back
their organizations' events only. ``prism_webhook_claim`` leases due attempts of every
organization to one dispatcher (``FOR UPDATE SKIP LOCKED``), ``prism_webhook_prune`` deletes
finished attempts after the retention window; both SECURITY DEFINER, returning ids only.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from prism.db.migrations.rls import (
    APP_ROLE,
    disable_tenant_rls,
    enable_tenant_rls,
    track_data_version,
    untrack_data_version,
)

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEFINER = "SECURITY DEFINER SET search_path = public, pg_temp"
SIGNATURES = (
    "prism_webhook_pending(integer)",
    "prism_webhook_claim(integer, double precision)",
    "prism_webhook_prune(timestamptz, integer)",
)
FUNCTIONS = (
    f"""
    CREATE FUNCTION prism_webhook_pending(p_limit integer)
    RETURNS TABLE (organization_id uuid, last_sequence bigint, head_sequence bigint)
    LANGUAGE sql STABLE {_DEFINER} AS $$
        SELECT c.organization_id, c.last_sequence, h.outbox_sequence
        FROM outbox_cursors c
        JOIN audit_chain_heads h ON h.organization_id = c.organization_id
        WHERE c.consumer = 'webhooks' AND h.outbox_sequence > c.last_sequence
        ORDER BY c.updated_at
        LIMIT p_limit
    $$""",
    f"""
    CREATE FUNCTION prism_webhook_claim(p_limit integer, p_lease_seconds double precision)
    RETURNS TABLE (organization_id uuid, id uuid, leased_until timestamptz)
    LANGUAGE sql {_DEFINER} AS $$
        WITH due AS (
            SELECT d.id FROM webhook_deliveries d
            JOIN webhook_endpoints e ON e.id = d.endpoint_id
            WHERE d.status = 'PENDING' AND d.next_attempt_at <= now()
              AND (d.leased_until IS NULL OR d.leased_until < now())
              AND e.enabled
            ORDER BY d.next_attempt_at
            LIMIT p_limit
            FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE webhook_deliveries d
        SET leased_until = now() + make_interval(secs => p_lease_seconds)
        FROM due WHERE d.id = due.id
        RETURNING d.organization_id, d.id, d.leased_until
    $$""",
    f"""
    CREATE FUNCTION prism_webhook_prune(p_before timestamptz, p_limit integer)
    RETURNS integer LANGUAGE sql {_DEFINER} AS $$
        WITH doomed AS (
            SELECT id FROM webhook_deliveries
            WHERE status <> 'PENDING' AND created_at < p_before
            ORDER BY created_at
            LIMIT p_limit
        ), deleted AS (
            DELETE FROM webhook_deliveries d USING doomed WHERE d.id = doomed.id RETURNING 1
        )
        SELECT count(*)::integer FROM deleted
    $$""",
    *[f"REVOKE ALL ON FUNCTION {sig} FROM PUBLIC" for sig in SIGNATURES],
    *[f"GRANT EXECUTE ON FUNCTION {sig} TO {APP_ROLE}" for sig in SIGNATURES],
)

# The outbox's pruning: what a registered consumer, or any cursor, has not passed is kept.
_PRUNE = """
    CREATE OR REPLACE FUNCTION prism_outbox_prune(p_before timestamptz, p_limit integer)
    RETURNS integer LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
        WITH doomed AS (
            SELECT e.organization_id, e.sequence FROM outbox_events e
            WHERE e.created_at < p_before
              AND NOT EXISTS (
                  SELECT 1 FROM outbox_consumers k
                  LEFT JOIN outbox_cursors c
                      ON c.consumer = k.name AND c.organization_id = e.organization_id
                  WHERE coalesce(c.last_sequence, 0) < e.sequence)
              %s
            ORDER BY e.created_at
            LIMIT p_limit
        ), deleted AS (
            DELETE FROM outbox_events e USING doomed d
            WHERE e.organization_id = d.organization_id AND e.sequence = d.sequence
            RETURNING 1
        )
        SELECT count(*)::integer FROM deleted
    $$"""
_ANY_CURSOR = """AND NOT EXISTS (
                  SELECT 1 FROM outbox_cursors c
                  WHERE c.organization_id = e.organization_id AND c.last_sequence < e.sequence)"""

_CLASSIFICATION = sa.Enum(
    "PUBLIC",
    "INTERNAL",
    "CONFIDENTIAL",
    "RESTRICTED",
    name="classification",
    native_enum=False,
    create_constraint=True,
    length=32,
)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.String(length=100)), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("clearance", _CLASSIFICATION, nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=64)), nullable=True),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("previous_secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("since_sequence", sa.BigInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=200), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_webhook_endpoints_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_webhook_endpoints_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(
        "ix_webhook_endpoints_organization_id", "webhook_endpoints", ["organization_id"]
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("endpoint_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "SUCCEEDED",
                "FAILED",
                name="webhookdeliverystatus",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_webhook_deliveries_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint_id_created_at_id",
        "webhook_deliveries",
        ["endpoint_id", "created_at", "id"],
    )
    op.create_index("ix_webhook_deliveries_created_at", "webhook_deliveries", ["created_at"])
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    enable_tenant_rls("webhook_endpoints")
    track_data_version("webhook_endpoints")
    enable_tenant_rls("webhook_deliveries", grants="SELECT, INSERT, UPDATE")
    for statement in FUNCTIONS:
        op.execute(statement)
    op.execute(_PRUNE % _ANY_CURSOR)


def downgrade() -> None:
    op.execute(_PRUNE % "")
    for sig in SIGNATURES:
        op.execute(f"DROP FUNCTION {sig}")
    disable_tenant_rls("webhook_deliveries")
    untrack_data_version("webhook_endpoints")
    disable_tenant_rls("webhook_endpoints")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_created_at", table_name="webhook_deliveries")
    op.drop_index(
        "ix_webhook_deliveries_endpoint_id_created_at_id", table_name="webhook_deliveries"
    )
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_endpoints_organization_id", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
