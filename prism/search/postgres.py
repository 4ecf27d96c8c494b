"""Search with PostgreSQL full-text search: the embedded default, and the fallback.

Its index is ``document_sections.search_vector``, a stored tsvector of the masked search text
that PostgreSQL keeps in the same transaction as the text, under a GIN index. Visibility is
joined live from ``documents``, so a reclassified or deleted document is out of reach at once:
this backend has no lag to catch up on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from prism.errors import BadUserInput
from prism.models import documents as document_models
from prism.models.db import Database
from prism.models.documents import SEARCH_CONFIG, Document, Section
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
_CONFIG: sa.ColumnElement[str] = sa.literal_column(SEARCH_CONFIG)
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
        tsquery = sa.func.websearch_to_tsquery(_CONFIG, request.query)
        matching = [
            Section.search_vector.op("@@")(tsquery),
            visibility.sql(),
            *_user_filters(request),
        ]
        rank = sa.func.ts_rank(Section.search_vector, tsquery, RANK_NORMALIZATION, type_=sa.REAL)
        page_query = (
            sa.select(Section.id, Section.document_id, rank.label("rank"))
            .select_from(Section)
            .join(Document, Document.id == Section.document_id)
            .where(*matching)
            .order_by(rank.desc(), Section.id)
            .limit(request.first + 1)
        )
        if request.after is not None:
            score = sa.literal(request.after.score, sa.REAL)
            section_id = sa.literal(request.after.section_id, Section.id.type)
            page_query = page_query.where(
                sa.or_(rank < score, sa.and_(rank == score, Section.id > section_id))
            )
        facet_query = (
            sa.select(
                sa.func.grouping(
                    Document.classification, Document.document_type, Document.risk_level
                ),
                Document.classification,
                Document.document_type,
                Document.risk_level,
                sa.func.count(),
            )
            .select_from(Section)
            .join(Document, Document.id == Section.document_id)
            .where(*matching)
            .group_by(
                sa.text(
                    "GROUPING SETS ((), (documents.classification), "
                    "(documents.document_type), (documents.risk_level))"
                )
            )
        )
        async with self.db.transaction(visibility.organization_id) as session:
            rows = (await session.execute(page_query)).all()
            counted = (await session.execute(facet_query)).all()
            page_rows = rows[: request.first]
            headlines: dict[uuid.UUID, str] = {}
            if page_rows:
                headline = sa.func.ts_headline(
                    _CONFIG, Section.search_text, tsquery, HEADLINE_OPTIONS
                )
                headline_query = (
                    sa.select(Section.id, headline)
                    .select_from(Section)
                    .join(Document, Document.id == Section.document_id)
                    .where(visibility.sql(), Section.id.in_([r.id for r in page_rows]))
                )
                headlines = dict((await session.execute(headline_query)).tuples().all())
        total, facets = _facets(counted)
        hits = [
            Hit(
                section_id=row.id,
                document_id=row.document_id,
                score=float(row.rank),
                highlights=highlight_fragments(
                    headlines.get(row.id, "").split(BETWEEN), START, END
                ),
                cursor=request.encode(self.name, float(row.rank), row.id),
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


def _user_filters(request: SearchRequest) -> list[sa.ColumnElement[bool]]:
    f = request.filters
    clauses: list[sa.ColumnElement[bool]] = []
    if f.classification:
        clauses.append(Document.classification.in_(f.classification))
    if f.document_type:
        clauses.append(Document.document_type.in_(f.document_type))
    if f.risk_level:
        clauses.append(Document.risk_level.in_(f.risk_level))
    if f.document_id is not None:
        clauses.append(Section.document_id == f.document_id)
    return clauses


def _facets(rows: Sequence[Any]) -> tuple[int, list[Any]]:
    counts: dict[str, dict[str, int]] = {name: {} for name in FACET_FIELDS}
    total = 0
    for grouping, classification, document_type, risk_level, count in rows:
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
            counts[which][value.value] = int(count)
    return total, facets_in_order(counts)
