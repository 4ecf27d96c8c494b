"""Languages: each section's language, and full-text search that analyses a section in it.

``document_sections.language_code`` (ISO 639-1) joins ``documents.language_code`` (in the
contract since the start, never set until now). ``prism_search_config(language)`` maps a
language to its text search configuration: ``english``, ``german``, ``french``; ``simple``
(words as written, lower-cased) for the other languages detected; ``english`` for a section
whose language is unknown (what every section had before). ``search_vector`` is regenerated
with its section's configuration, and ``prism_match_sections`` now takes the query text:
it parses it once per configuration and matches each section with its own language's query
(through the GIN index: a section matching its own query matches their union, which the
index answers).

Existing sections are backfilled here: their language is detected on their (PII-masked)
search text, and each document gets the language of most of its words (sections from before
search, with no search text, stay unknown until ``prism search reindex``).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 07:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from prism.db.migrations.rls import APP_ROLE

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000

SEARCH_CONFIG = """
CREATE FUNCTION prism_search_config(p_language text) RETURNS regconfig
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_language IS NULL THEN 'pg_catalog.english'
        WHEN p_language = 'en' THEN 'pg_catalog.english'
        WHEN p_language = 'de' THEN 'pg_catalog.german'
        WHEN p_language = 'fr' THEN 'pg_catalog.french'
        ELSE 'pg_catalog.simple'
    END::regconfig
$$"""

# As 0006's, with the policy's condition written out (see there why it runs as the owner).
MATCH_SECTIONS = (
    """
    CREATE FUNCTION prism_match_sections(p_query text)
    RETURNS TABLE (section_id uuid, document_id uuid, rank real)
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp STABLE AS $$
        SELECT s.id, s.document_id, ts_rank(s.search_vector, q.query, 1)
        FROM document_sections s
        JOIN (
            SELECT c AS config, websearch_to_tsquery(c, p_query) AS query
            FROM unnest(ARRAY['english', 'german', 'french', 'simple']::regconfig[]) AS c
        ) q ON q.config = prism_search_config(s.language_code)
        WHERE s.search_vector @@ (
                websearch_to_tsquery('english'::regconfig, p_query)
                || websearch_to_tsquery('german'::regconfig, p_query)
                || websearch_to_tsquery('french'::regconfig, p_query)
                || websearch_to_tsquery('simple'::regconfig, p_query)
              )
          AND s.search_vector @@ q.query
          AND s.organization_id = nullif(current_setting('prism.org_id', true), '')::uuid
    $$""",
    "REVOKE ALL ON FUNCTION prism_match_sections(text) FROM PUBLIC",
    f"GRANT EXECUTE ON FUNCTION prism_match_sections(text) TO {APP_ROLE}",
)

OLD_MATCH_SECTIONS = (
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

DOCUMENT_LANGUAGES = """
UPDATE documents d SET language_code = l.language_code
FROM (
    SELECT DISTINCT ON (document_id) document_id, language_code
    FROM (
        SELECT document_id, language_code, sum(word_count) AS words
        FROM document_sections WHERE language_code IS NOT NULL
        GROUP BY document_id, language_code
    ) counted
    ORDER BY document_id, words DESC, language_code
) l
WHERE d.id = l.document_id AND d.language_code IS NULL"""


def _search_vector(expression: str) -> None:
    op.drop_index(
        "ix_document_sections_search_vector",
        table_name="document_sections",
        postgresql_using="gin",
    )
    op.drop_column("document_sections", "search_vector")
    op.add_column(
        "document_sections",
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(expression, persisted=True),
            nullable=True,
        ),
    )
    op.create_index(
        "ix_document_sections_search_vector",
        "document_sections",
        ["search_vector"],
        postgresql_using="gin",
    )


def _backfill_languages() -> None:
    # Imported here: detection builds its models on import (0.1 s), which only this
    # revision's upgrade needs.
    from prism.extraction.language import detect

    connection = op.get_bind()
    after = None
    while True:
        rows = connection.execute(
            sa.text(
                "SELECT id, search_text FROM document_sections "
                "WHERE search_text IS NOT NULL AND (CAST(:after AS uuid) IS NULL OR id > :after) "
                "ORDER BY id LIMIT :batch"
            ),
            {"after": after, "batch": BATCH},
        ).all()
        if not rows:
            break
        updates = [
            {"id": row.id, "language": language}
            for row in rows
            if (language := detect(row.search_text)) is not None
        ]
        if updates:
            connection.execute(
                sa.text("UPDATE document_sections SET language_code = :language WHERE id = :id"),
                updates,
            )
        after = rows[-1].id
    connection.execute(sa.text(DOCUMENT_LANGUAGES))


def upgrade() -> None:
    op.add_column("document_sections", sa.Column("language_code", sa.String(16), nullable=True))
    op.execute(SEARCH_CONFIG)
    _backfill_languages()
    # The vector is computed once, after the languages are known.
    _search_vector("to_tsvector(prism_search_config(language_code), coalesce(search_text, ''))")
    op.execute("DROP FUNCTION prism_match_sections(tsquery)")
    for statement in MATCH_SECTIONS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION prism_match_sections(text)")
    for statement in OLD_MATCH_SECTIONS:
        op.execute(statement)
    _search_vector("to_tsvector('english'::regconfig, coalesce(search_text, ''))")
    op.execute("DROP FUNCTION prism_search_config(text)")
    op.drop_column("document_sections", "language_code")
