"""Full-text search: the PII-masked search text of each section, PostgreSQL's tsvector over it
with a GIN index, and a narrow function listing organizations for `prism search reindex`.

Sections that exist before this revision have no search text until `prism search reindex`
masks and indexes them (masking is Prism's Python code, not SQL).

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-26 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from prism.migrations.rls import APP_ROLE

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORGANIZATION_IDS = (
    """
    CREATE FUNCTION prism_organization_ids() RETURNS SETOF uuid
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp STABLE AS $$
        SELECT id FROM organizations ORDER BY created_at, id
    $$""",
    "REVOKE ALL ON FUNCTION prism_organization_ids() FROM PUBLIC",
    f"GRANT EXECUTE ON FUNCTION prism_organization_ids() TO {APP_ROLE}",
)


def upgrade() -> None:
    op.add_column("document_sections", sa.Column("search_text", sa.Text(), nullable=True))
    op.add_column(
        "document_sections",
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(
                "to_tsvector('english'::regconfig, coalesce(search_text, ''))", persisted=True
            ),
            nullable=True,
        ),
    )
    op.create_index(
        "ix_document_sections_search_vector",
        "document_sections",
        ["search_vector"],
        postgresql_using="gin",
    )
    for statement in ORGANIZATION_IDS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION prism_organization_ids()")
    op.drop_index(
        "ix_document_sections_search_vector",
        table_name="document_sections",
        postgresql_using="gin",
    )
    op.drop_column("document_sections", "search_vector")
    op.drop_column("document_sections", "search_text")
