"""Full-text search over sections: hits with highlights, facets and keyset cursors; the
search field of the root Query."""

from __future__ import annotations

from typing import Annotated

import strawberry

from prism.execution.ids import expect_id
from prism.resolvers import search as search_resolvers
from prism.schema.base import After, First, Info, PageInfo
from prism.schema.documents import Document, Section
from prism.schema.enums import Classification, DocumentType, RiskLevel
from prism.search import SearchFilters
from prism.search.types import MAX_FILTER_VALUES, MAX_QUERY_LENGTH


@strawberry.type(description="A section matching a search.")
class SearchHit:
    section: Section
    document: Document
    score: float = strawberry.field(
        description="Relevance (comparable within one search, not across backends)."
    )
    highlights: list[str] = strawberry.field(
        description="Up to 3 fragments of the section with the matched words in <em>…</em>; "
        "the text is HTML-escaped and PII-masked for every viewer."
    )


@strawberry.type
class SearchHitEdge:
    cursor: str
    node: SearchHit


@strawberry.type(description="How many hits have one value of a facet field.")
class FacetBucket:
    value: str
    count: int


@strawberry.type(
    description="Hit counts by value of one field: classification, documentType, riskLevel."
)
class SearchFacet:
    field: str
    buckets: list[FacetBucket]


@strawberry.type(description="A page of search hits, with the total and facets of all hits.")
class SearchConnection:
    edges: list[SearchHitEdge]
    page_info: PageInfo
    total_count: int = strawberry.field(description="Hits visible to the caller, all pages.")
    facets: list[SearchFacet]

    @classmethod
    def from_found(cls, found: search_resolvers.Found) -> SearchConnection:
        page = found.page
        edges = [
            SearchHitEdge(
                cursor=f.hit.cursor,
                node=SearchHit(
                    section=Section.from_row(f.section),
                    document=Document.from_row(f.document),
                    score=f.hit.score,
                    highlights=f.hit.highlights,
                ),
            )
            for f in found.hits
        ]
        return cls(
            edges=edges,
            page_info=PageInfo.of(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start=page.hits[0].cursor if page.hits else None,
                # The backend's last hit, even when it was dropped as stale: the next page
                # starts after it.
                end=page.hits[-1].cursor if page.hits else None,
            ),
            total_count=page.total_count,
            facets=[
                SearchFacet(
                    field=facet.field,
                    buckets=[FacetBucket(value=v, count=c) for v, c in facet.buckets],
                )
                for facet in page.facets
            ],
        )


@strawberry.input(
    description=f"Narrows a search; all given conditions must hold (lists: at most "
    f"{MAX_FILTER_VALUES} values)."
)
class SearchFilter:
    classification: list[Classification] | None = None
    document_type: list[DocumentType] | None = None
    risk_level: list[RiskLevel] | None = None
    document_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only this document's sections."
    )

    def to_filters(self) -> SearchFilters:
        return SearchFilters(
            classification=tuple(self.classification or ()),
            document_type=tuple(self.document_type or ()),
            risk_level=tuple(self.risk_level or ()),
            document_id=expect_id(self.document_id, "Document") if self.document_id else None,
        )


@strawberry.type
class SearchQuery:
    """``search`` of the root Query."""

    @strawberry.field(
        description="Full-text search over the sections the caller may read (`search:read`), "
        "best first. `query` follows web-search syntax: words must all match, "
        '`"a phrase"` in order, `OR` between two terms either, `-word` excludes. '
        "Personal data is masked in what is searched and shown."
    )
    async def search(
        self,
        info: Info,
        query: Annotated[
            str, strawberry.argument(description=f"1 to {MAX_QUERY_LENGTH} characters.")
        ],
        filter: SearchFilter | None = None,
        first: First = None,
        after: After = None,
    ) -> SearchConnection:
        filters = filter.to_filters() if filter else None
        found = await search_resolvers.search(info.context, query, filters, first, after)
        return SearchConnection.from_found(found)
