"""Full-text search over document sections: one ``SearchBackend`` protocol, a PostgreSQL
backend (the embedded default) and an OpenSearch backend, and the one function that turns a
caller's ``Scope`` into the filter every search query carries (``visibility``)."""

from prism.search.backend import SearchBackend, SearchUnavailable
from prism.search.service import Search, build_search
from prism.search.types import (
    Facet,
    Hit,
    SearchFilters,
    SearchPage,
    SearchRequest,
    SectionDocument,
)
from prism.search.visibility import MandatoryFilter, mandatory_filter

__all__ = [
    "Facet",
    "Hit",
    "MandatoryFilter",
    "Search",
    "SearchBackend",
    "SearchFilters",
    "SearchPage",
    "SearchRequest",
    "SearchUnavailable",
    "SectionDocument",
    "build_search",
    "mandatory_filter",
]
