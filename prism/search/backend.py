"""The protocol both search backends implement."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from prism.search.types import SearchPage, SearchRequest, SectionDocument
from prism.search.visibility import MandatoryFilter


class SearchUnavailable(Exception):
    """The backend cannot answer now (down, timing out, overloaded); retrying later can help."""


class SearchBackend(Protocol):
    name: str

    async def index(
        self,
        organization_id: uuid.UUID,
        document_id: uuid.UUID,
        sections: Sequence[SectionDocument],
    ) -> None:
        """Make the index hold exactly ``sections`` for the document (searchable within the
        index's refresh interval)."""

    async def delete(self, organization_id: uuid.UUID, document_id: uuid.UUID) -> None:
        """Remove the document's sections from the index (same delay)."""

    async def bulk(self, sections: Sequence[SectionDocument]) -> int:
        """Write many sections at once (reindexing); returns how many were written."""

    async def search(self, visibility: MandatoryFilter, request: SearchRequest) -> SearchPage:
        """One page of hits with facets and the total, within ``visibility``."""

    async def close(self) -> None:
        """Release connections."""
