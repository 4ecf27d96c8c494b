"""Initial schema: tenants, identity, documents, analyses, feedback, audit log, jobs; the
prism_app role, row-level security on every tenant table, the narrow SECURITY DEFINER
functions sign-in needs before an organization is known, and monthly audit partitions.

Long because: the first revision as shipped, the whole schema in one step; revisions are
never edited, so it stays one file.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 18:08:40.296427
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from prism.db.migrations.rls import APP_ROLE, disable_tenant_rls, enable_tenant_rls

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for statement in CREATE_ROLE:
        op.execute(statement)
    op.create_table(
        "organizations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=True),
        sa.Column(
            "subscription_tier", sa.String(length=32), server_default="standard", nullable=False
        ),
        sa.Column("data_retention_days", sa.Integer(), server_default="2555", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "data_retention_days > 0", name=op.f("ck_organizations_retention_positive")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
    )
    op.create_index(
        "uq_organizations_name", "organizations", [sa.literal_column("lower(name)")], unique=True
    )
    op.create_table(
        "audit_chain_heads",
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("last_hash", sa.CHAR(length=64), nullable=True),
        sa.Column("last_event_id", sa.UUID(), nullable=True),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_audit_chain_heads_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_audit_chain_heads")),
    )
    op.create_table(
        "audit_logs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("actor_id", sa.UUID(), nullable=True),
        sa.Column("api_token_id", sa.UUID(), nullable=True),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=50), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("resource_type", sa.String(length=50), nullable=True),
        sa.Column("resource_id", sa.UUID(), nullable=True),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("ip_address", postgresql.INET(), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("prev_hash", sa.CHAR(length=64), nullable=True),
        sa.Column("hash", sa.CHAR(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_audit_logs_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", "created_at", name=op.f("pk_audit_logs")),
        postgresql_partition_by="RANGE (created_at)",
    )
    op.create_index("ix_audit_logs_id", "audit_logs", ["id"], unique=False)
    op.create_index(
        "ix_audit_logs_organization_id_created_at",
        "audit_logs",
        ["organization_id", "created_at", "id"],
        unique=False,
    )
    op.create_index("ix_audit_logs_resource_id", "audit_logs", ["resource_id"], unique=False)
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "QUEUED",
                "RUNNING",
                "SUCCEEDED",
                "FAILED",
                "DEAD",
                name="jobstate",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column(
            "run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("attempts >= 0 AND max_attempts > 0", name=op.f("ck_jobs_attempts")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_jobs_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(
        "ix_jobs_organization_id_created_at",
        "jobs",
        ["organization_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_jobs_runnable",
        "jobs",
        ["priority", "run_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('QUEUED', 'FAILED')"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column(
            "role",
            sa.Enum(
                "VIEWER",
                "REVIEWER",
                "APPROVER",
                "AUDITOR",
                "ADMIN",
                name="role",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("department", sa.String(length=100), nullable=True),
        sa.Column(
            "clearance",
            sa.Enum(
                "PUBLIC",
                "INTERNAL",
                "CONFIDENTIAL",
                "RESTRICTED",
                name="classification",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("mfa_enabled", sa.Boolean(), nullable=False),
        sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_users_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_index(
        "ix_users_organization_id_created_at",
        "users",
        ["organization_id", "created_at", "id"],
        unique=False,
    )
    op.create_index("uq_users_email", "users", [sa.literal_column("lower(email)")], unique=True)
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column(
            "role",
            sa.Enum(
                "VIEWER",
                "REVIEWER",
                "APPROVER",
                "AUDITOR",
                "ADMIN",
                name="role",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "clearance",
            sa.Enum(
                "PUBLIC",
                "INTERNAL",
                "CONFIDENTIAL",
                "RESTRICTED",
                name="classification",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("department", sa.String(length=100), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=40)), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_api_tokens_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_api_tokens_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(
        "ix_api_tokens_organization_id_created_at",
        "api_tokens",
        ["organization_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("uploaded_by", sa.UUID(), nullable=True),
        sa.Column("department", sa.String(length=100), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("mime_type", sa.String(length=127), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.CHAR(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=1024), nullable=True),
        sa.Column(
            "document_type",
            sa.Enum(
                "GENERAL",
                "CONTRACT",
                "POLICY",
                "REPORT",
                "TECHNICAL",
                "OTHER",
                name="documenttype",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "classification",
            sa.Enum(
                "PUBLIC",
                "INTERNAL",
                "CONFIDENTIAL",
                "RESTRICTED",
                name="classification",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("language_code", sa.String(length=16), nullable=True),
        sa.Column("word_count", sa.Integer(), nullable=True),
        sa.Column("page_count", sa.Integer(), nullable=True),
        sa.Column(
            "processing_status",
            sa.Enum(
                "UPLOADED",
                "EXTRACTING",
                "EXTRACTED",
                "QUEUED",
                "ANALYZING",
                "COMPLETED",
                "FAILED",
                name="processingstatus",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("processing_error", sa.Text(), nullable=True),
        sa.Column("legal_hold", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("retention_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "storage_tier",
            sa.Enum(
                "HOT",
                "WARM",
                "COLD",
                "ARCHIVE",
                name="storagetier",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("total_sections", sa.Integer(), nullable=False),
        sa.Column("total_feedback_items", sa.Integer(), nullable=False),
        sa.Column(
            "risk_level",
            sa.Enum(
                "LOW",
                "MEDIUM",
                "HIGH",
                name="risklevel",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("cost_usd", sa.Numeric(precision=14, scale=6), nullable=True),
        sa.Column("model_used", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "confidence IS NULL OR confidence BETWEEN 0 AND 1", name=op.f("ck_documents_confidence")
        ),
        sa.CheckConstraint("file_size >= 0", name=op.f("ck_documents_file_size_nonnegative")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_documents_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by"],
            ["users.id"],
            name=op.f("fk_documents_uploaded_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
    )
    op.create_index(
        "ix_documents_organization_id_created_at",
        "documents",
        ["organization_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_documents_organization_id_processing_status",
        "documents",
        ["organization_id", "processing_status"],
        unique=False,
    )
    op.create_index(
        "ix_documents_retention_expires_at",
        "documents",
        ["retention_expires_at"],
        unique=False,
        postgresql_where=sa.text("legal_hold = false AND deleted_at IS NULL"),
    )
    op.create_index(
        "ix_documents_uploaded_by_created_at",
        "documents",
        ["uploaded_by", "created_at"],
        unique=False,
    )
    op.create_index(
        "uq_documents_organization_id_sha256",
        "documents",
        ["organization_id", "sha256"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("family_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ip_address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sessions_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sessions_token_hash")),
    )
    op.create_index("ix_sessions_family_id", "sessions", ["family_id"], unique=False)
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"], unique=False)
    op.create_table(
        "document_sections",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("document_id", sa.UUID(), nullable=False),
        sa.Column("ord", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("word_count", sa.Integer(), nullable=False),
        sa.Column(
            "pii_findings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_document_sections_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_document_sections_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_sections")),
        sa.UniqueConstraint(
            "document_id", "ord", name=op.f("uq_document_sections_document_id_ord")
        ),
    )
    op.create_table(
        "analysis_results",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("document_id", sa.UUID(), nullable=False),
        sa.Column("section_id", sa.UUID(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column(
            "risk_level",
            sa.Enum(
                "LOW",
                "MEDIUM",
                "HIGH",
                name="risklevel",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("tokens_used", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(precision=14, scale=6), nullable=False),
        sa.Column(
            "feedback_items",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "confidence IS NULL OR confidence BETWEEN 0 AND 1",
            name=op.f("ck_analysis_results_confidence"),
        ),
        sa.CheckConstraint(
            "tokens_used >= 0 AND cost_usd >= 0", name=op.f("ck_analysis_results_usage_nonnegative")
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_analysis_results_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_analysis_results_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["section_id"],
            ["document_sections.id"],
            name=op.f("fk_analysis_results_section_id_document_sections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_results")),
    )
    op.create_index(
        "ix_analysis_results_document_id_created_at",
        "analysis_results",
        ["document_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_analysis_results_organization_id_completed_at",
        "analysis_results",
        ["organization_id", "completed_at"],
        unique=False,
    )
    op.create_index(
        "ix_analysis_results_section_id", "analysis_results", ["section_id"], unique=False
    )
    op.create_table(
        "user_feedback",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("document_id", sa.UUID(), nullable=False),
        sa.Column("section_id", sa.UUID(), nullable=True),
        sa.Column("analysis_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("item_id", sa.String(length=64), nullable=True),
        sa.Column(
            "action",
            sa.Enum(
                "ACCEPTED",
                "REJECTED",
                "CUSTOM",
                "MODIFIED",
                name="feedbackaction",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column("rating", sa.SmallInteger(), nullable=True),
        sa.Column("custom_text", sa.Text(), nullable=True),
        sa.Column("highlighted_text", sa.Text(), nullable=True),
        sa.Column(
            "workflow_status",
            sa.Enum(
                "SUBMITTED",
                "APPROVED",
                "REJECTED",
                name="workflowstatus",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("approved_by", sa.UUID(), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "rating IS NULL OR rating BETWEEN 1 AND 5", name=op.f("ck_user_feedback_rating_range")
        ),
        sa.ForeignKeyConstraint(
            ["analysis_id"],
            ["analysis_results.id"],
            name=op.f("fk_user_feedback_analysis_id_analysis_results"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["approved_by"],
            ["users.id"],
            name=op.f("fk_user_feedback_approved_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_user_feedback_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_user_feedback_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["section_id"],
            ["document_sections.id"],
            name=op.f("fk_user_feedback_section_id_document_sections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_feedback_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_feedback")),
    )
    op.create_index("ix_user_feedback_analysis_id", "user_feedback", ["analysis_id"], unique=False)
    op.create_index(
        "ix_user_feedback_document_id_created_at",
        "user_feedback",
        ["document_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_user_feedback_organization_id_workflow_status",
        "user_feedback",
        ["organization_id", "workflow_status"],
        unique=False,
    )
    op.execute("CREATE TABLE audit_logs_default PARTITION OF audit_logs DEFAULT")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    for table in TENANT_TABLES:
        enable_tenant_rls(table, grants=GRANTS.get(table, "SELECT, INSERT, UPDATE, DELETE"))
    enable_tenant_rls("organizations", key="id", grants="SELECT, INSERT, UPDATE")
    for statement in FUNCTIONS:
        op.execute(statement)
    op.execute("SELECT prism_ensure_audit_partitions(3)")


def downgrade() -> None:
    for name in FUNCTION_SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {name}")
    for table in (*TENANT_TABLES, "organizations"):
        disable_tenant_rls(table)
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_ROLE}")
    op.drop_index("ix_user_feedback_organization_id_workflow_status", table_name="user_feedback")
    op.drop_index("ix_user_feedback_document_id_created_at", table_name="user_feedback")
    op.drop_index("ix_user_feedback_analysis_id", table_name="user_feedback")
    op.drop_table("user_feedback")
    op.drop_index("ix_analysis_results_section_id", table_name="analysis_results")
    op.drop_index("ix_analysis_results_organization_id_completed_at", table_name="analysis_results")
    op.drop_index("ix_analysis_results_document_id_created_at", table_name="analysis_results")
    op.drop_table("analysis_results")
    op.drop_table("document_sections")
    op.drop_index("ix_sessions_user_id", table_name="sessions")
    op.drop_index("ix_sessions_family_id", table_name="sessions")
    op.drop_table("sessions")
    op.drop_index(
        "uq_documents_organization_id_sha256",
        table_name="documents",
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_index("ix_documents_uploaded_by_created_at", table_name="documents")
    op.drop_index(
        "ix_documents_retention_expires_at",
        table_name="documents",
        postgresql_where=sa.text("legal_hold = false AND deleted_at IS NULL"),
    )
    op.drop_index("ix_documents_organization_id_processing_status", table_name="documents")
    op.drop_index("ix_documents_organization_id_created_at", table_name="documents")
    op.drop_table("documents")
    op.drop_index("ix_api_tokens_organization_id_created_at", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_index("uq_users_email", table_name="users")
    op.drop_index("ix_users_organization_id_created_at", table_name="users")
    op.drop_table("users")
    op.drop_index(
        "ix_jobs_runnable",
        table_name="jobs",
        postgresql_where=sa.text("state IN ('QUEUED', 'FAILED')"),
    )
    op.drop_index("ix_jobs_organization_id_created_at", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_audit_logs_resource_id", table_name="audit_logs")
    op.drop_index("ix_audit_logs_organization_id_created_at", table_name="audit_logs")
    op.drop_index("ix_audit_logs_id", table_name="audit_logs")
    op.drop_table("audit_logs")
    op.drop_table("audit_chain_heads")
    op.drop_index("uq_organizations_name", table_name="organizations")
    op.drop_table("organizations")


TENANT_TABLES = (
    "users",
    "api_tokens",
    "sessions",
    "documents",
    "document_sections",
    "analysis_results",
    "user_feedback",
    "audit_logs",
    "audit_chain_heads",
    "jobs",
)
# The audit log is append-only for the app: no UPDATE, no DELETE.
GRANTS = {"audit_logs": "SELECT, INSERT", "audit_chain_heads": "SELECT, INSERT, UPDATE"}

# Roles are cluster-wide: create once, keep on downgrade (another database may use it).
CREATE_ROLE = (
    f"""
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
            CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
        END IF;
    END $$""",
    # A login user that is not a superuser needs membership to switch to the role.
    f"GRANT {APP_ROLE} TO CURRENT_USER",
)

FUNCTION_SIGNATURES = (
    "prism_login_lookup(text)",
    "prism_api_token_lookup(bytea)",
    "prism_refresh_lookup(bytea)",
    "prism_email_in_use(text)",
    "prism_find_organization(text)",
    "prism_ensure_audit_partitions(integer)",
)

_DEFINER = "LANGUAGE {lang} SECURITY DEFINER SET search_path = public, pg_temp"
FUNCTIONS = (
    # Sign-in happens before the organization is known: these few functions, owned by the
    # schema owner, answer exactly what sign-in needs and nothing more.
    f"""
    CREATE FUNCTION prism_login_lookup(p_email text)
    RETURNS TABLE (user_id uuid, organization_id uuid, password_hash text)
    {_DEFINER.format(lang="sql")} STABLE AS $$
        SELECT id, organization_id, password_hash FROM users
        WHERE lower(email) = lower(p_email) AND is_active
    $$""",
    f"""
    CREATE FUNCTION prism_api_token_lookup(p_hash bytea)
    RETURNS TABLE (token_id uuid, organization_id uuid)
    {_DEFINER.format(lang="plpgsql")} AS $$
    BEGIN
        -- lastUsedAt is kept to the minute: one write per token per minute, not per request.
        UPDATE api_tokens SET last_used_at = now()
        WHERE token_hash = p_hash AND revoked_at IS NULL
          AND (expires_at IS NULL OR expires_at > now())
          AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');
        RETURN QUERY SELECT t.id, t.organization_id FROM api_tokens t
            WHERE t.token_hash = p_hash AND t.revoked_at IS NULL
              AND (t.expires_at IS NULL OR t.expires_at > now());
    END $$""",
    f"""
    CREATE FUNCTION prism_refresh_lookup(p_hash bytea)
    RETURNS TABLE (session_id uuid, organization_id uuid)
    {_DEFINER.format(lang="sql")} STABLE AS $$
        SELECT id, organization_id FROM sessions WHERE token_hash = p_hash
    $$""",
    f"""
    CREATE FUNCTION prism_email_in_use(p_email text) RETURNS boolean
    {_DEFINER.format(lang="sql")} STABLE AS $$
        SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower(p_email))
    $$""",
    f"""
    CREATE FUNCTION prism_find_organization(p_ref text) RETURNS uuid
    {_DEFINER.format(lang="sql")} STABLE AS $$
        SELECT id FROM organizations
        WHERE id::text = lower(p_ref) OR lower(name) = lower(p_ref)
        ORDER BY (id::text = lower(p_ref)) DESC LIMIT 1
    $$""",
    f"""
    CREATE FUNCTION prism_ensure_audit_partitions(months_ahead integer) RETURNS integer
    {_DEFINER.format(lang="plpgsql")} AS $$
    DECLARE
        m date := date_trunc('month', now())::date;
        part text;
        made integer := 0;
    BEGIN
        FOR i IN 0..months_ahead LOOP
            part := format('audit_logs_%s', to_char(m, 'YYYY_MM'));
            IF to_regclass(part) IS NULL THEN
                BEGIN
                    EXECUTE format(
                        'CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                        part, m, (m + interval '1 month')::date);
                    made := made + 1;
                EXCEPTION
                    WHEN duplicate_table THEN NULL;  -- another process made it first
                    WHEN check_violation THEN
                        -- rows of that month already sit in the default partition
                        RAISE WARNING 'audit partition % not created: rows in default', part;
                END;
            END IF;
            m := (m + interval '1 month')::date;
        END LOOP;
        RETURN made;
    END $$""",
    *[f"REVOKE ALL ON FUNCTION {sig} FROM PUBLIC" for sig in FUNCTION_SIGNATURES],
    *[f"GRANT EXECUTE ON FUNCTION {sig} TO {APP_ROLE}" for sig in FUNCTION_SIGNATURES],
)
