"""Registered operations (the safelist) and a per-organization data version that cached
answers are keyed on.

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-26 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from prism.db.migrations.rls import APP_ROLE, track_data_version, untrack_data_version

revision: str = "0008"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VERSIONED = (
    "users",
    "api_tokens",
    "documents",
    "document_sections",
    "analysis_results",
    "user_feedback",
)

BUMP = """
CREATE FUNCTION prism_bump_data_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        UPDATE organizations SET data_version = data_version + 1
        WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.organization_id
                        ELSE NEW.organization_id END;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE organizations SET data_version = data_version + 1
        WHERE id IN (SELECT DISTINCT organization_id FROM old_rows);
    ELSE
        UPDATE organizations SET data_version = data_version + 1
        WHERE id IN (SELECT DISTINCT organization_id FROM new_rows);
    END IF;
    RETURN NULL;
END $$"""


def upgrade() -> None:
    op.create_table(
        "registered_operations",
        sa.Column("sha256", sa.CHAR(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_registered_operations")),
    )
    op.execute(f"GRANT SELECT, INSERT ON registered_operations TO {APP_ROLE}")
    op.add_column(
        "organizations",
        sa.Column("data_version", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.execute(BUMP)
    for table in VERSIONED:
        track_data_version(table)
    track_data_version("audit_logs", per_row=True)


def downgrade() -> None:
    for table in (*VERSIONED, "audit_logs"):
        untrack_data_version(table)
    op.execute("DROP FUNCTION prism_bump_data_version()")
    op.drop_column("organizations", "data_version")
    op.drop_table("registered_operations")
