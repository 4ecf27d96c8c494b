"""The `search` field: authorize, validate, ask the search service within the caller's
mandatory filter, then keep only hits the caller can still read in PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

from prism.authz.policy import Action, require
from prism.execution.context import Context
from prism.models.documents import Document, Section
from prism.search import Hit, SearchFilters, SearchPage, SearchRequest, mandatory_filter


@dataclass(frozen=True)
class FoundHit:
    hit: Hit
    section: Section
    document: Document


@dataclass(frozen=True)
class Found:
    page: SearchPage
    hits: list[FoundHit]


async def search(
    ctx: Context,
    query: str,
    filters: SearchFilters | None,
    first: int | None,
    after: str | None,
) -> Found:
    principal = ctx.require_principal()
    require(principal, Action.SEARCH)
    request = SearchRequest.parse(query, filters=filters, first=first, after=after)
    page = await ctx.services.search.search(mandatory_filter(principal.scope()), request)
    notice: dict[str, object] = {"backend": page.backend}
    if page.fallback_reason is not None:
        notice |= {"fallback": True, "reason": page.fallback_reason}
    ctx.response_extensions["search"] = notice
    # The index may lag behind PostgreSQL by a job: a hit whose document was deleted or
    # reclassified since is dropped here, by the same scoped loaders as every other read.
    sections = await ctx.loaders.section.load_many([h.section_id for h in page.hits])
    documents = await ctx.loaders.document.load_many([h.document_id for h in page.hits])
    hits = [
        FoundHit(hit=hit, section=section, document=document)
        for hit, section, document in zip(page.hits, sections, documents, strict=True)
        if section is not None and document is not None and section.document_id == document.id
    ]
    return Found(page=page, hits=hits)
