"""Which backend answers: OpenSearch when configured, else PostgreSQL; and what happens when
OpenSearch is down (SERVICE_UNAVAILABLE, or PostgreSQL's answer when the fallback is on)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from prism.config import SearchFallback, Settings
from prism.db.engine import Database
from prism.db.faults import RETRY_AFTER_SECONDS
from prism.errors import ServiceUnavailable
from prism.search.backend import SearchBackend, SearchUnavailable
from prism.search.postgres import PostgresBackend
from prism.search.types import SearchPage, SearchRequest
from prism.search.visibility import MandatoryFilter

if TYPE_CHECKING:
    from prism.search.opensearch import OpenSearchBackend

log = structlog.get_logger("prism.search")


@dataclass
class Search:
    postgres: PostgresBackend
    # None: PostgreSQL is the search index (the embedded default).
    opensearch: OpenSearchBackend | None
    fallback: SearchFallback = SearchFallback.NONE

    @property
    def primary(self) -> SearchBackend:
        return self.opensearch if self.opensearch is not None else self.postgres

    @property
    def needs_index_jobs(self) -> bool:
        """PostgreSQL's index follows its rows by itself; an external index must be told."""
        return self.opensearch is not None

    async def search(self, visibility: MandatoryFilter, request: SearchRequest) -> SearchPage:
        if self.opensearch is None:
            return await self.postgres.search(visibility, request)
        try:
            return await self.opensearch.search(visibility, request)
        except SearchUnavailable as exc:
            log.warning("opensearch unavailable", error=str(exc))
            if self.fallback is not SearchFallback.POSTGRES:
                # Said like a database outage: the HTTP answer is 503 with Retry-After, and
                # the error carries the same number for clients that read only the body.
                raise ServiceUnavailable(
                    "Search is unavailable right now; retry later.",
                    retryable=True,
                    retryAfter=RETRY_AFTER_SECONDS,
                ) from exc
            page = await self.postgres.search(visibility, request)
            page.fallback_reason = str(exc)
            return page

    async def close(self) -> None:
        if self.opensearch is not None:
            await self.opensearch.close()


def build_search(settings: Settings, db: Database) -> Search:
    opensearch = None
    if settings.opensearch_url is not None:
        # Imported here: the client library costs half a second to import, which commands
        # and deployments without OpenSearch need not pay.
        from prism.search.opensearch import OpenSearchBackend

        opensearch = OpenSearchBackend(
            settings.opensearch_url.get_secret_value(),
            alias=settings.opensearch_index,
            shards=settings.opensearch_shards,
            replicas=settings.opensearch_replicas,
            timeout_seconds=settings.opensearch_timeout_seconds,
        )
    return Search(
        postgres=PostgresBackend(db), opensearch=opensearch, fallback=settings.search_fallback
    )
