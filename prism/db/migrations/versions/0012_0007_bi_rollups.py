"""BI rollups: daily aggregates per organization and visibility bucket, the invalidation
markers that statement-level triggers on documents, analyses, feedback and the audit log
append in the writer's transaction, and the function workers call to queue refresh jobs.
Existing data is marked stale once, so the first refresh builds the rollups.

Revision ID: 0007
Revises: 0011
Create Date: 2026-11-26 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from prism.db.migrations.rls import APP_ROLE, enable_tenant_rls

revision: str = "0007"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLASSIFICATIONS = ("PUBLIC", "INTERNAL", "CONFIDENTIAL", "RESTRICTED")
DOCUMENT_TYPES = ("GENERAL", "CONTRACT", "POLICY", "REPORT", "TECHNICAL", "OTHER")
STATUSES = (
    "UPLOADED",
    "EXTRACTING",
    "EXTRACTED",
    "QUEUED",
    "ANALYZING",
    "COMPLETED",
    "FAILED",
)
ACTIONS = ("ACCEPTED", "REJECTED", "CUSTOM", "MODIFIED")
WORKFLOW = ("SUBMITTED", "APPROVED", "REJECTED")

ROLLUPS = (
    "bi_document_daily",
    "bi_analysis_daily",
    "bi_feedback_daily",
    "bi_reviewer_daily",
    "bi_activity_hourly",
    "bi_activity_daily",
)


def _enum(name: str, values: Sequence[str]) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _key(table: str, *columns: str) -> list[Any]:
    return [
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f(f"fk_{table}_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", *columns, name=op.f(f"pk_{table}")),
    ]


def _bucket() -> list[sa.Column[Any]]:
    return [
        sa.Column("classification", _enum("classification", CLASSIFICATIONS), nullable=False),
        sa.Column("department", sa.String(length=100), nullable=False),
    ]


def _period_type(period: str) -> Any:
    return sa.DateTime(timezone=True) if period == "hour" else sa.Date()


def _create_tables() -> None:
    op.create_table(
        "bi_invalidations",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bi_invalidations")),
    )
    op.create_index(
        "ix_bi_invalidations_organization_id_kind_day",
        "bi_invalidations",
        ["organization_id", "kind", "day"],
        unique=False,
    )
    op.create_table(
        "bi_document_daily",
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *_bucket(),
        sa.Column("document_type", _enum("documenttype", DOCUMENT_TYPES), nullable=False),
        sa.Column("processing_status", _enum("processingstatus", STATUSES), nullable=False),
        sa.Column("risk_level", sa.String(length=16), nullable=False),
        sa.Column("documents", sa.BigInteger(), nullable=False),
        *_key(
            "bi_document_daily",
            "day",
            "classification",
            "department",
            "document_type",
            "processing_status",
            "risk_level",
        ),
    )
    op.create_table(
        "bi_analysis_daily",
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *_bucket(),
        sa.Column("document_type", _enum("documenttype", DOCUMENT_TYPES), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("analyses", sa.BigInteger(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column("tokens_used", sa.BigInteger(), nullable=False),
        sa.Column("confidence_sum", sa.Float(), nullable=False),
        sa.Column("confidences", sa.BigInteger(), nullable=False),
        sa.Column("feedback_items", sa.BigInteger(), nullable=False),
        *_key("bi_analysis_daily", "day", "classification", "department", "document_type", "model"),
    )
    op.create_table(
        "bi_feedback_daily",
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *_bucket(),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("action", _enum("feedbackaction", ACTIONS), nullable=False),
        sa.Column("workflow_status", _enum("workflowstatus", WORKFLOW), nullable=False),
        sa.Column("feedback", sa.BigInteger(), nullable=False),
        sa.Column("rated", sa.BigInteger(), nullable=False),
        sa.Column("rating_sum", sa.BigInteger(), nullable=False),
        sa.Column("satisfied", sa.BigInteger(), nullable=False),
        *_key(
            "bi_feedback_daily",
            "day",
            "classification",
            "department",
            "category",
            "model",
            "action",
            "workflow_status",
        ),
    )
    op.create_table(
        "bi_reviewer_daily",
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        *_bucket(),
        sa.Column("feedback", sa.BigInteger(), nullable=False),
        sa.Column("satisfied", sa.BigInteger(), nullable=False),
        *_key("bi_reviewer_daily", "day", "user_id", "classification", "department"),
    )
    for table, period in (("bi_activity_hourly", "hour"), ("bi_activity_daily", "day")):
        op.create_table(
            table,
            sa.Column("organization_id", sa.UUID(), nullable=False),
            sa.Column(period, _period_type(period), nullable=False),
            sa.Column("user_id", sa.UUID(), nullable=False),
            sa.Column("category", sa.String(length=50), nullable=False),
            *_bucket(),
            sa.Column("events", sa.BigInteger(), nullable=False),
            *_key(table, period, "user_id", "category", "classification", "department"),
        )
    op.create_index(
        "ix_user_feedback_organization_id_created_at",
        "user_feedback",
        ["organization_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_jobs_bi_refresh",
        "jobs",
        ["organization_id"],
        unique=False,
        postgresql_where=sa.text(
            "kind = 'bi.refresh' AND state IN ('QUEUED', 'RUNNING', 'FAILED')"
        ),
    )


def _day(column: str) -> str:
    return f"({column} AT TIME ZONE 'UTC')::date"


def _mark(kind: str, rows: str, day: str, where: str = "") -> str:
    """Mark the days of ``rows`` (a transition table) stale for ``kind``."""
    return (
        f"INSERT INTO bi_invalidations (organization_id, kind, day) "
        f"SELECT DISTINCT organization_id, '{kind}', {_day(day)} FROM {rows} {where};"
    )


# What each rollup row is keyed or counted by: a change of anything else (updated_at, word
# counts, ...) marks nothing.
_DOCUMENT_OWN = (
    "classification, department, document_type, processing_status, risk_level, "
    "deleted_at IS NULL, created_at"
)
# What a document lends the rows of its analyses and feedback.
_DOCUMENT_LENT = "classification, department, document_type, deleted_at IS NULL"


def _changed(columns: str) -> str:
    old = ", ".join(f"o.{c.strip()}" for c in columns.split(","))
    new = ", ".join(f"n.{c.strip()}" for c in columns.split(","))
    return f"({old}) IS DISTINCT FROM ({new})"


TRIGGER_FUNCTIONS = {
    "documents": f"""
    CREATE FUNCTION prism_bi_mark_documents() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            {_mark("documents", "new_rows", "created_at")}
        ELSIF TG_OP = 'DELETE' THEN
            {_mark("documents", "old_rows", "created_at")}
        ELSE
            INSERT INTO bi_invalidations (organization_id, kind, day)
            SELECT DISTINCT x.organization_id, 'documents', {_day("x.created_at")}
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            CROSS JOIN LATERAL (VALUES (o.organization_id, o.created_at),
                                       (n.organization_id, n.created_at))
                AS x (organization_id, created_at)
            WHERE {_changed(_DOCUMENT_OWN)};
            INSERT INTO bi_invalidations (organization_id, kind, day)
            SELECT DISTINCT a.organization_id, 'analyses', {_day("a.completed_at")}
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            JOIN analysis_results a ON a.document_id = n.id
            WHERE {_changed(_DOCUMENT_LENT)};
            INSERT INTO bi_invalidations (organization_id, kind, day)
            SELECT DISTINCT f.organization_id, 'feedback', {_day("f.created_at")}
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            JOIN user_feedback f ON f.document_id = n.id
            WHERE {_changed(_DOCUMENT_LENT)};
        END IF;
        RETURN NULL;
    END $$""",
    "analysis_results": f"""
    CREATE FUNCTION prism_bi_mark_analysis_results() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            {_mark("analyses", "new_rows", "completed_at")}
        END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            {_mark("analyses", "old_rows", "completed_at")}
        END IF;
        IF TG_OP = 'UPDATE' THEN
            -- feedback is counted by the model of the analysis it is about
            INSERT INTO bi_invalidations (organization_id, kind, day)
            SELECT DISTINCT f.organization_id, 'feedback', {_day("f.created_at")}
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            JOIN user_feedback f ON f.analysis_id = n.id
            WHERE o.model IS DISTINCT FROM n.model;
        END IF;
        RETURN NULL;
    END $$""",
    "user_feedback": f"""
    CREATE FUNCTION prism_bi_mark_user_feedback() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            {_mark("feedback", "new_rows", "created_at")}
        END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            {_mark("feedback", "old_rows", "created_at")}
        END IF;
        RETURN NULL;
    END $$""",
    "audit_logs": f"""
    CREATE FUNCTION prism_bi_mark_audit_logs() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            {_mark("activity", "new_rows", "created_at", "WHERE actor_id IS NOT NULL")}
        END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            {_mark("activity", "old_rows", "created_at", "WHERE actor_id IS NOT NULL")}
        END IF;
        RETURN NULL;
    END $$""",
}

# Transition tables allow one event per trigger: three triggers per table, one function.
_TRANSITIONS = {
    "INSERT": "NEW TABLE AS new_rows",
    "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "OLD TABLE AS old_rows",
}

SCHEDULE_SIGNATURE = "prism_bi_schedule_refreshes(integer)"
SCHEDULE = """
CREATE FUNCTION prism_bi_schedule_refreshes(p_max_attempts integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    made integer;
BEGIN
    -- One scheduler at a time (every worker ticks): no two jobs for one organization.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('prism.bi.schedule', 0)) THEN
        RETURN 0;
    END IF;
    -- Markers of deleted organizations (the table has no foreign key, see the model).
    DELETE FROM bi_invalidations i
    WHERE NOT EXISTS (SELECT FROM organizations o WHERE o.id = i.organization_id);
    INSERT INTO jobs (organization_id, kind, payload, state, priority, attempts, max_attempts)
    SELECT p.organization_id, 'bi.refresh', '{}'::jsonb, 'QUEUED', 0, 0, p_max_attempts
    FROM (SELECT DISTINCT organization_id FROM bi_invalidations) p
    WHERE NOT EXISTS (
        SELECT FROM jobs j
        WHERE j.organization_id = p.organization_id AND j.kind = 'bi.refresh'
          AND j.state IN ('QUEUED', 'RUNNING', 'FAILED'));
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made;
END $$"""

MARK_EXISTING = " UNION ".join(
    f"SELECT DISTINCT organization_id, '{kind}', {_day(column)} FROM {table} {where}"
    for kind, table, column, where in (
        ("documents", "documents", "created_at", ""),
        ("analyses", "analysis_results", "completed_at", ""),
        ("feedback", "user_feedback", "created_at", ""),
        ("activity", "audit_logs", "created_at", "WHERE actor_id IS NOT NULL"),
    )
)


def upgrade() -> None:
    _create_tables()
    for table in ROLLUPS:
        enable_tenant_rls(table, grants="SELECT, INSERT, DELETE")
    # Writers append markers (their triggers run as the app role); refreshes take them.
    enable_tenant_rls("bi_invalidations", grants="SELECT, INSERT, DELETE")
    op.execute(f"GRANT USAGE ON SEQUENCE bi_invalidations_id_seq TO {APP_ROLE}")
    for table, function in TRIGGER_FUNCTIONS.items():
        op.execute(function)
        for event, transition in _TRANSITIONS.items():
            op.execute(
                f"CREATE TRIGGER bi_mark_{event.lower()} AFTER {event} ON {table} "
                f"REFERENCING {transition} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION prism_bi_mark_{table}()"
            )
    op.execute(SCHEDULE)
    op.execute(f"REVOKE ALL ON FUNCTION {SCHEDULE_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SCHEDULE_SIGNATURE} TO {APP_ROLE}")
    op.execute(f"INSERT INTO bi_invalidations (organization_id, kind, day) {MARK_EXISTING}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEDULE_SIGNATURE}")
    for table in TRIGGER_FUNCTIONS:
        for event in _TRANSITIONS:
            op.execute(f"DROP TRIGGER IF EXISTS bi_mark_{event.lower()} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS prism_bi_mark_{table}()")
    op.drop_index(
        "ix_jobs_bi_refresh",
        table_name="jobs",
        postgresql_where=sa.text(
            "kind = 'bi.refresh' AND state IN ('QUEUED', 'RUNNING', 'FAILED')"
        ),
    )
    op.drop_index("ix_user_feedback_organization_id_created_at", table_name="user_feedback")
    for table in reversed(ROLLUPS):
        op.drop_table(table)
    op.drop_index("ix_bi_invalidations_organization_id_kind_day", table_name="bi_invalidations")
    op.drop_table("bi_invalidations")
    # Refresh jobs have no handler without this revision's code.
    op.execute("DELETE FROM jobs WHERE kind = 'bi.refresh'")
