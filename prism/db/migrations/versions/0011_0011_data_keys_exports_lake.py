"""Data governance: wrapped per-organization data keys, sealed RESTRICTED sections and
analysis findings, personal
data exports, erased users, and the lake export's watermarks.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 23:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from prism.db.migrations.rls import (
    disable_tenant_rls,
    enable_tenant_rls,
    track_data_version,
    untrack_data_version,
)

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "DEAD")


def upgrade() -> None:
    op.add_column("users", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("document_sections", sa.Column("sealed", sa.LargeBinary(), nullable=True))
    op.add_column("analysis_results", sa.Column("sealed", sa.LargeBinary(), nullable=True))

    op.create_table(
        "data_keys",
        sa.Column("id", postgresql.UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()")),
        sa.Column("organization_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kek_id", sa.String(length=200), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_data_keys_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_keys")),
        sa.UniqueConstraint("organization_id", name=op.f("uq_data_keys_organization_id")),
    )
    enable_tenant_rls("data_keys", grants="SELECT, INSERT, UPDATE")

    op.create_table(
        "data_exports",
        sa.Column("id", postgresql.UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()")),
        sa.Column("organization_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("subject_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("requested_by", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                *JOB_STATES, name="jobstate", native_enum=False, create_constraint=True, length=32
            ),
            nullable=False,
        ),
        sa.Column("storage_key", sa.String(length=1024), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_data_exports_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["users.id"],
            name=op.f("fk_data_exports_subject_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["users.id"],
            name=op.f("fk_data_exports_requested_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_exports")),
    )
    op.create_index("ix_data_exports_subject_id", "data_exports", ["subject_id"])
    enable_tenant_rls("data_exports")
    track_data_version("data_exports")

    op.create_table(
        "lake_watermarks",
        sa.Column("organization_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows_exported", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_lake_watermarks_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "dataset", name=op.f("pk_lake_watermarks")),
    )
    enable_tenant_rls("lake_watermarks")


def downgrade() -> None:
    disable_tenant_rls("lake_watermarks")
    op.drop_table("lake_watermarks")
    untrack_data_version("data_exports")
    disable_tenant_rls("data_exports")
    op.drop_index("ix_data_exports_subject_id", table_name="data_exports")
    op.drop_table("data_exports")
    disable_tenant_rls("data_keys")
    op.drop_table("data_keys")
    op.drop_column("analysis_results", "sealed")
    op.drop_column("document_sections", "sealed")
    op.drop_column("users", "erased_at")
