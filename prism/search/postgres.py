"""Search with PostgreSQL full-text search: the embedded default, and the fallback.

Its index is ``document_sections.search_vector``, a stored tsvector of the masked search text
analysed in the section's language (``prism_search_config``: english, german, french, or
simple), that PostgreSQL keeps in the same transaction as the text, under a GIN index, matched
by ``prism_match_sections`` (the current organization's sections only; the query is parsed
in each language and a section matches with its own language's). Visibility is joined
live from ``documents``, so a reclassified or deleted document is out of reach at once: this
backend has no lag to catch up on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from prism.db.engine import Database
from prism.errors import BadUserInput
from prism.models import documents as document_models
from prism.models.documents import Document, Section
from prism.search.types import (
    FACET_FIELDS,
    Hit,
    SearchPage,
    SearchRequest,
    SectionDocument,
    facets_in_order,
    highlight_fragments,
)
from prism.search.visibility import MandatoryFilter

# ts_headline markers: private-use characters, stripped from every search text, so they mark
# nothing but matches; the answer turns them into <em>…</em> after HTML-escaping the text.
START, END, BETWEEN = "\ue000", "\ue001", "\ue002"
HEADLINE_OPTIONS = (
    f'StartSel="{START}", StopSel="{END}", FragmentDelimiter="{BETWEEN}", '
    "MaxFragments=3, MaxWords=24, MinWords=8"
)
# Normalization 1: rank / (1 + log(length)), so long sections do not win by length alone.
RANK_NORMALIZATION = 1
# grouping() of (classification, document_type, risk_level) for each grouping set.
_GROUPING = {3: "classification", 5: "documentType", 6: "riskLevel", 7: "total"}


class PostgresBackend:
    name = "postgres"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def index(
        self,
        organization_id: uuid.UUID,
        document_id: uuid.UUID,
        sections: Sequence[SectionDocument],
    ) -> None:
        await self.bulk(sections)

    async def delete(self, organization_id: uuid.UUID, document_id: uuid.UUID) -> None:
        """Nothing to remove: the live join on documents hides a deleted document at once,
        and its sections stay for audit and retention with the document row."""

    async def bulk(self, sections: Sequence[SectionDocument]) -> int:
        """Write the masked search text (PostgreSQL recomputes the tsvector and the GIN
        entries in the same statement)."""
        by_org: dict[uuid.UUID, dict[uuid.UUID, str]] = {}
        for doc in sections:
            by_org.setdefault(doc.organization_id, {})[doc.section_id] = doc.text
        for organization_id, texts in by_org.items():
            async with self.db.transaction(organization_id) as session:
                await document_models.write_search_texts(session, texts)
        return len(sections)

    async def close(self) -> None:
        """The database engine belongs to the services, not to search."""

    async def search(self, visibility: MandatoryFilter, request: SearchRequest) -> SearchPage:
        if request.after is not None and request.after.backend != self.name:
            raise BadUserInput(
                "`after` was made by another search backend; search again without it.",
                argument="after",
            )
        # Sections of the current organization matching the query, through the GIN index
        # (see migrations 0006 and 0021: under row-level security `@@` could not use it).
        match = (
            sa.func.prism_match_sections(sa.cast(request.query, sa.Text))
            .table_valued(
                sa.column("section_id", Section.id.type),
                sa.column("document_id", Section.document_id.type),
                sa.column("rank", sa.REAL),
            )
            .render_derived(name="m")
        )
        # One statement, so the match runs once: the visible matches (a CTE used twice, so
        # materialized), the page of them after the cursor, and the facet counts of all.
        visible = (
            sa.select(
                match.c.section_id,
                match.c.document_id,
                match.c.rank,
                sa.cast(Document.classification, sa.String).label("classification"),
                sa.cast(Document.document_type, sa.String).label("document_type"),
                sa.cast(Document.risk_level, sa.String).label("risk_level"),
            )
            .select_from(match)
            .join(Document, Document.id == match.c.document_id)
            .where(visibility.sql(), *_user_filters(request, match))
            .cte("v")
        )
        page = sa.select(visible.c.section_id, visible.c.document_id, visible.c.rank)
        if request.after is not None:
            score = sa.literal(request.after.score, sa.REAL)
            after_id = sa.literal(request.after.section_id, Section.id.type)
            page = page.where(
                sa.or_(
                    visible.c.rank < score,
                    sa.and_(visible.c.rank == score, visible.c.section_id > after_id),
                )
            )
        paged = (
            page.order_by(visible.c.rank.desc(), visible.c.section_id)
            .limit(request.first + 1)
            .subquery("p")
        )
        no_text = sa.cast(sa.null(), sa.String)
        hits_part = sa.select(
            sa.literal(-1).label("grouping"),
            paged.c.section_id,
            paged.c.document_id,
            paged.c.rank,
            no_text.label("classification"),
            no_text.label("document_type"),
            no_text.label("risk_level"),
            sa.literal(0, sa.BigInteger).label("hits"),
        )
        facets_part = sa.select(
            sa.func.grouping(
                visible.c.classification, visible.c.document_type, visible.c.risk_level
            ),
            sa.cast(sa.null(), Section.id.type),
            sa.cast(sa.null(), Section.id.type),
            sa.cast(sa.null(), sa.REAL),
            visible.c.classification,
            visible.c.document_type,
            visible.c.risk_level,
            sa.func.count(),
        ).group_by(
            sa.text("GROUPING SETS ((), (v.classification), (v.document_type), (v.risk_level))")
        )
        statement = sa.union_all(hits_part, facets_part)
        async with self.db.transaction(visibility.organization_id) as session:
            result = (await session.execute(statement)).all()
            rows = sorted(
                (r for r in result if r.grouping == -1),
                key=lambda r: (-r.rank, r.section_id),
            )
            counted = [r for r in result if r.grouping != -1]
            page_rows = rows[: request.first]
            headlines: dict[uuid.UUID, str] = {}
            if page_rows:
                config = sa.func.prism_search_config(Section.language_code)
                headline = sa.func.ts_headline(
                    config,
                    Section.search_text,
                    sa.func.websearch_to_tsquery(config, request.query),
                    HEADLINE_OPTIONS,
                )
                headline_query = (
                    sa.select(Section.id, headline)
                    .select_from(Section)
                    .join(Document, Document.id == Section.document_id)
                    .where(visibility.sql(), Section.id.in_([r.section_id for r in page_rows]))
                )
                headlines = dict((await session.execute(headline_query)).tuples().all())
        total, facets = _facets(counted)
        hits = [
            Hit(
                section_id=row.section_id,
                document_id=row.document_id,
                score=float(row.rank),
                highlights=highlight_fragments(
                    headlines.get(row.section_id, "").split(BETWEEN), START, END
                ),
                cursor=request.encode(self.name, float(row.rank), row.section_id),
            )
            for row in page_rows
        ]
        return SearchPage(
            hits=hits,
            has_next_page=len(rows) > request.first,
            has_previous_page=request.after is not None,
            total_count=total,
            facets=facets,
            backend=self.name,
        )


def _user_filters(request: SearchRequest, match: Any) -> list[sa.ColumnElement[bool]]:
    f = request.filters
    clauses: list[sa.ColumnElement[bool]] = []
    if f.classification:
        clauses.append(Document.classification.in_(f.classification))
    if f.document_type:
        clauses.append(Document.document_type.in_(f.document_type))
    if f.risk_level:
        clauses.append(Document.risk_level.in_(f.risk_level))
    if f.document_id is not None:
        clauses.append(match.c.document_id == f.document_id)
    return clauses


def _facets(rows: Sequence[Any]) -> tuple[int, list[Any]]:
    counts: dict[str, dict[str, int]] = {name: {} for name in FACET_FIELDS}
    total = 0
    for row in rows:
        grouping, classification, document_type, risk_level, count = (
            row.grouping,
            row.classification,
            row.document_type,
            row.risk_level,
            row.hits,
        )
        which = _GROUPING[grouping]
        if which == "total":
            total = int(count)
            continue
        value = {
            "classification": classification,
            "documentType": document_type,
            "riskLevel": risk_level,
        }[which]
        if value is not None:
            counts[which][str(value)] = int(count)
    return total, facets_in_order(counts)
