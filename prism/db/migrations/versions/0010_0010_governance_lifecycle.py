"""Governance: retention policies per organization and data category, data-quality runs,
the audit chain's purge anchor, and the narrow SECURITY DEFINER functions the lifecycle
needs (organizations to visit, periodic jobs, purging old audit events).

Revision ID: 0010
Revises: 0012
Create Date: 2026-11-26 23:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from prism.db.migrations.rls import (
    APP_ROLE,
    disable_tenant_rls,
    enable_tenant_rls,
    track_data_version,
    untrack_data_version,
)

revision: str = "0010"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("retention_policies", "data_quality_runs")
_DEFINER = "SECURITY DEFINER SET search_path = public, pg_temp"
CURRENT_ORG = "nullif(current_setting('prism.org_id', true), '')::uuid"

FUNCTIONS = {
    # Periodic governance jobs: one per organization, unless one is pending or one finished
    # within p_every. The advisory lock makes concurrent workers schedule once.
    "prism_schedule_jobs(text, interval)": f"""
    CREATE FUNCTION prism_schedule_jobs(p_kind text, p_every interval) RETURNS integer
    LANGUAGE plpgsql {_DEFINER} AS $$
    DECLARE
        made integer;
    BEGIN
        IF p_kind NOT IN ('governance.lifecycle', 'governance.quality') THEN
            RAISE EXCEPTION 'not a periodic job kind: %', p_kind;
        END IF;
        PERFORM pg_advisory_xact_lock(hashtext('prism_schedule_jobs:' || p_kind));
        INSERT INTO jobs (id, organization_id, kind, payload, state, priority, attempts,
                          max_attempts, run_at, created_at, updated_at)
        SELECT gen_random_uuid(), o.id, p_kind, '{{}}'::jsonb, 'QUEUED', 5, 0, 3, now(), now(),
               now()
        FROM organizations o
        WHERE NOT EXISTS (
            SELECT 1 FROM jobs j
            WHERE j.organization_id = o.id AND j.kind = p_kind
              AND (j.state IN ('QUEUED', 'RUNNING', 'FAILED') OR j.created_at > now() - p_every)
        );
        GET DIAGNOSTICS made = ROW_COUNT;
        IF made > 0 THEN
            PERFORM pg_notify('prism_jobs', p_kind);
        END IF;
        RETURN made;
    END $$""",
    # The audit log is append-only for the app role. Retention removes the current
    # organization's events older than p_before (never younger than 30 days), up to the
    # oldest event about a document under legal hold, and records the hash of the last one
    # removed as the chain's anchor, so the rest of the chain still verifies.
    "prism_purge_audit_events(timestamp with time zone, boolean)": f"""
    CREATE FUNCTION prism_purge_audit_events(p_before timestamptz, p_dry_run boolean)
    RETURNS integer LANGUAGE plpgsql {_DEFINER} AS $$
    DECLARE
        org uuid := {CURRENT_ORG};
        cutoff timestamptz := least(p_before, now() - interval '30 days');
        held timestamptz;
        anchor char(64);
        removed integer;
    BEGIN
        IF org IS NULL THEN
            RAISE EXCEPTION 'no organization set';
        END IF;
        SELECT min(a.created_at) INTO held FROM audit_logs a
        WHERE a.organization_id = org AND a.resource_id IN (
            SELECT d.id FROM documents d WHERE d.organization_id = org AND d.legal_hold);
        IF held IS NOT NULL THEN
            cutoff := least(cutoff, held);
        END IF;
        IF p_dry_run THEN
            SELECT count(*) INTO removed FROM audit_logs
            WHERE organization_id = org AND created_at < cutoff;
            RETURN removed;
        END IF;
        -- the chain head's row lock orders this against concurrent writers of the chain
        PERFORM 1 FROM audit_chain_heads WHERE organization_id = org FOR UPDATE;
        SELECT hash INTO anchor FROM audit_logs
        WHERE organization_id = org AND created_at < cutoff
        ORDER BY created_at DESC, id DESC LIMIT 1;
        IF anchor IS NULL THEN
            RETURN 0;
        END IF;
        DELETE FROM audit_logs WHERE organization_id = org AND created_at < cutoff;
        GET DIAGNOSTICS removed = ROW_COUNT;
        UPDATE audit_chain_heads SET purged_hash = anchor WHERE organization_id = org;
        RETURN removed;
    END $$""",
}


def upgrade() -> None:
    op.create_table(
        "retention_policies",
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column(
            "category",
            sa.Enum(
                "DOCUMENTS",
                "ANALYSES",
                "FEEDBACK",
                "AUDIT_LOGS",
                "SYSTEM_METRICS",
                name="datacategory",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("hot_days", sa.Integer(), nullable=False),
        sa.Column("warm_days", sa.Integer(), nullable=False),
        sa.Column("cold_days", sa.Integer(), nullable=False),
        sa.Column("archive_days", sa.Integer(), nullable=False),
        sa.Column("delete_after_days", sa.Integer(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "0 < hot_days AND hot_days <= warm_days AND warm_days <= cold_days "
            "AND cold_days <= archive_days",
            name=op.f("ck_retention_policies_tiers_ordered"),
        ),
        sa.CheckConstraint(
            "delete_after_days IS NULL OR delete_after_days >= archive_days",
            name=op.f("ck_retention_policies_delete_after_archive"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_retention_policies_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "category", name=op.f("pk_retention_policies")),
    )
    op.create_table(
        "data_quality_runs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column(
            "assessed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("overall_score", sa.Float(), nullable=False),
        sa.Column("checks", sa.dialects.postgresql.JSONB(), nullable=False),
        sa.CheckConstraint(
            "overall_score BETWEEN 0 AND 1", name=op.f("ck_data_quality_runs_overall_score")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_data_quality_runs_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_quality_runs")),
    )
    op.create_index(
        "ix_data_quality_runs_organization_id_assessed_at",
        "data_quality_runs",
        ["organization_id", "assessed_at"],
        unique=False,
    )
    op.add_column("audit_chain_heads", sa.Column("purged_hash", sa.CHAR(length=64), nullable=True))
    for table in TABLES:
        enable_tenant_rls(table)
        track_data_version(table)
    for statement in FUNCTIONS.values():
        op.execute(statement)
    for signature in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def downgrade() -> None:
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
    for table in TABLES:
        untrack_data_version(table)
        disable_tenant_rls(table)
    op.drop_column("audit_chain_heads", "purged_hash")
    op.drop_index(
        "ix_data_quality_runs_organization_id_assessed_at", table_name="data_quality_runs"
    )
    op.drop_table("data_quality_runs")
    op.drop_table("retention_policies")
