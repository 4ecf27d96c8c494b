"""Search test stacks: the app and services on PostgreSQL search, or on a real OpenSearch
node under an alias of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from prism import bootstrap
from prism.config import SearchFallback, Settings
from prism.jobs.indexing import index_document
from prism.jobs.worker import Worker
from prism.models.documents import Document
from prism.services import Services
from prism.web.app import create_app
from tests.factories import gql

SEARCH = """query($q: String!, $f: SearchFilter, $first: Int, $after: String) {
  search(query: $q, filter: $f, first: $first, after: $after) {
    totalCount
    facets { field buckets { value count } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { score highlights
      section { id name content redacted } document { id classification documentType } } }
  }
}"""


def opensearch_settings(
    base: Settings,
    url: str,
    *,
    alias: str | None = None,
    fallback: SearchFallback = SearchFallback.NONE,
) -> Settings:
    return base.model_copy(
        update={
            "opensearch_url": SecretStr(url),
            "opensearch_index": alias or f"prism-test-{uuid.uuid4().hex[:10]}",
            "opensearch_replicas": 0,
            "opensearch_timeout_seconds": 5,
            "search_fallback": fallback,
        }
    )


@dataclass
class Stack:
    """One way of running Prism: its services (worker side) and an HTTP client (API side)."""

    name: str
    services: Services
    client: httpx.AsyncClient

    async def index(self, documents: list[Document]) -> None:
        """Index documents made by the test factories (which bypass the job queue)."""
        for document in documents:
            await index_document(
                self.services.db, self.services.search, document.organization_id, document.id
            )
        await self.refresh()

    async def run_jobs(self, *, refresh: bool = True) -> int:
        done = await Worker(self.services, concurrency=2).drain()
        if refresh:
            await self.refresh()
        return done

    async def refresh(self) -> None:
        """Make OpenSearch's latest writes searchable now rather than within its 1 s refresh
        interval (so a test can look right after a job)."""
        if self.services.search.opensearch is not None:
            await self.services.search.opensearch.refresh()

    async def search(self, token: str, query: str, **variables: Any) -> dict[str, Any]:
        return await gql(self.client, SEARCH, {"q": query, **variables}, token=token)

    async def search_all(
        self, token: str, query: str, page: int = 7, **variables: Any
    ) -> list[Any]:
        """Every hit, page by page."""
        edges: list[Any] = []
        after = None
        for _ in range(100):
            body = await self.search(token, query, first=page, after=after, **variables)
            assert body.get("errors") is None, body
            result = body["data"]["search"]
            edges.extend(result["edges"])
            if not result["pageInfo"]["hasNextPage"]:
                return edges
            after = result["pageInfo"]["endCursor"]
        raise AssertionError("paging did not end")


@asynccontextmanager
async def running(settings: Settings, database_url: str, name: str) -> AsyncIterator[Stack]:
    services = bootstrap.build_services(settings, database_url)
    app = create_app(settings, database_url=database_url)
    try:
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4711))
            async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as c:
                yield Stack(name=name, services=services, client=c)
    finally:
        if services.search.opensearch is not None:
            backend = services.search.opensearch
            await backend.client.indices.delete(
                index=f"{backend.alias}-*", params={"ignore_unavailable": "true"}
            )
            await backend.client.indices.delete_index_template(
                name=f"{backend.alias}-template", params={"ignore": 404}
            )
        await services.search.close()
        await services.db.dispose()
