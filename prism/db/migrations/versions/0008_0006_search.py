"""Full-text search: the PII-masked search text of each section, PostgreSQL's tsvector over it
with a GIN index, the function that matches sections through that index under row-level
security, and a narrow function listing organizations for `prism search reindex`.

Sections that exist before this revision have no search text until `prism search reindex`
masks and indexes them (masking is Prism's Python code, not SQL).

Revision ID: 0006
Revises: 0009
Create Date: 2026-11-26 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from prism.db.migrations.rls import APP_ROLE

revision: str = "0006"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Row-level security keeps a query's own conditions from running before the policy's unless
# they are LEAKPROOF, and `@@` is not: under RLS the GIN index is never used and every
# search scans every section (95 ms for a word in 58 of 100,000 sections). This function
# matches as the owner, with the policy's own condition written out, so the index is used;
# it returns ids and ranks only, and nothing without an organization set.
MATCH_SECTIONS = (
    """
    CREATE FUNCTION prism_match_sections(p_query tsquery)
    RETURNS TABLE (section_id uuid, document_id uuid, rank real)
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp STABLE AS $$
        SELECT s.id, s.document_id, ts_rank(s.search_vector, p_query, 1)
        FROM document_sections s
        WHERE s.search_vector @@ p_query
          AND s.organization_id = nullif(current_setting('prism.org_id', true), '')::uuid
    $$""",
    "REVOKE ALL ON FUNCTION prism_match_sections(tsquery) FROM PUBLIC",
    f"GRANT EXECUTE ON FUNCTION prism_match_sections(tsquery) TO {APP_ROLE}",
)

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
    for statement in (*MATCH_SECTIONS, *ORGANIZATION_IDS):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION prism_organization_ids()")
    op.execute("DROP FUNCTION prism_match_sections(tsquery)")
    op.drop_index(
        "ix_document_sections_search_vector",
        table_name="document_sections",
        postgresql_using="gin",
    )
    op.drop_column("document_sections", "search_vector")
    op.drop_column("document_sections", "search_text")
