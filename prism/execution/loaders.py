"""Per-request DataLoaders (never module-level: a shared loader would serve one caller's rows
to another). Each batch is one SQL statement, whatever the number of keys."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from prism.crypto.envelope import Envelope
from prism.errors import Unauthenticated
from prism.models import analyses, audit, documents, exports, feedback, jobs, users
from prism.models.analyses import Analysis
from prism.models.documents import Section
from prism.models.pagination import Page, PageRequest
from prism.models.scope import Scope

if TYPE_CHECKING:
    from prism.execution.context import RequestTransaction

T = TypeVar("T")
PageKey = tuple[uuid.UUID, PageRequest]


class Loaders:
    def __init__(
        self, transaction: RequestTransaction, scope: Scope | None, envelope: Envelope
    ) -> None:
        self._tx = transaction
        self._scope = scope
        self._envelope = envelope
        self.document = self._by_id(documents.read_documents_by_ids)
        self.section = self._by_id(self._sections_by_ids)
        self.analysis = self._by_id(self._analyses_by_ids)
        self.feedback = self._by_id(feedback.read_feedback_by_ids)
        self.user = self._by_id(
            lambda s, sc, ids: users.read_users_by_ids(s, sc.organization_id, ids)
        )
        self.api_token = self._by_id(
            lambda s, sc, ids: users.read_api_tokens_by_ids(s, sc.organization_id, ids)
        )
        self.job = self._by_id(lambda s, sc, ids: jobs.read_jobs_by_ids(s, sc.organization_id, ids))
        self.audit_event = self._by_id(audit.read_audit_events_by_ids)
        self.data_export = self._by_id(
            lambda s, sc, ids: exports.read_data_exports_by_ids(s, sc.organization_id, ids)
        )
        self.analyses_by_section: DataLoader[uuid.UUID, list[Analysis]] = DataLoader(
            self._analyses_by_section
        )
        self.pii_summary: DataLoader[uuid.UUID, list[tuple[str, int]]] = DataLoader(
            self._pii_summary
        )
        self.section_page = self._pages(self._section_pages)
        self.analysis_page = self._pages(self._analysis_pages)
        self.feedback_page = self._pages(feedback.read_feedback_pages)

    async def _sections_by_ids(
        self, session: AsyncSession, scope: Scope, ids: Sequence[uuid.UUID]
    ) -> list[Section]:
        rows = await documents.read_sections_by_ids(session, scope, ids)
        await self._envelope.open_sections(session, rows)  # RESTRICTED text, decrypted
        return rows

    async def _section_pages(
        self,
        session: AsyncSession,
        scope: Scope,
        document_ids: Sequence[uuid.UUID],
        page: PageRequest,
    ) -> dict[uuid.UUID, Page[Section]]:
        pages = await documents.read_section_pages(session, scope, document_ids, page)
        await self._envelope.open_sections(session, (s for p in pages.values() for s in p.items))
        return pages

    async def _analyses_by_ids(
        self, session: AsyncSession, scope: Scope, ids: Sequence[uuid.UUID]
    ) -> list[Analysis]:
        rows = await analyses.read_analyses_by_ids(session, scope, ids)
        await self._envelope.open_analyses(session, rows)
        return rows

    async def _analysis_pages(
        self,
        session: AsyncSession,
        scope: Scope,
        document_ids: Sequence[uuid.UUID],
        page: PageRequest,
    ) -> dict[uuid.UUID, Page[Analysis]]:
        pages = await analyses.read_analysis_pages(session, scope, document_ids, page)
        await self._envelope.open_analyses(session, (a for p in pages.values() for a in p.items))
        return pages

    @property
    def scope(self) -> Scope:
        if self._scope is None:
            raise Unauthenticated("Sign in or send an API token.")
        return self._scope

    def _by_id(
        self,
        fetch: Callable[[AsyncSession, Scope, Sequence[uuid.UUID]], Awaitable[Sequence[T]]],
    ) -> DataLoader[uuid.UUID, T | None]:
        async def load(ids: list[uuid.UUID]) -> list[T | None]:
            async with self._tx.read() as session:
                rows = await fetch(session, self.scope, ids)
            found: dict[Any, T] = {row.id: row for row in rows}  # type: ignore[attr-defined]
            return [found.get(i) for i in ids]

        return DataLoader(load)

    def _pages(
        self,
        fetch: Callable[
            [AsyncSession, Scope, Sequence[uuid.UUID], PageRequest],
            Awaitable[dict[uuid.UUID, Page[T]]],
        ],
    ) -> DataLoader[PageKey, Page[T]]:
        async def load(keys: list[PageKey]) -> list[Page[T]]:
            # Parents asking for the same page shape share one statement.
            by_request: dict[PageRequest, list[uuid.UUID]] = defaultdict(list)
            for parent_id, request in keys:
                by_request[request].append(parent_id)
            results: dict[PageKey, Page[T]] = {}
            async with self._tx.read() as session:
                for request, parent_ids in by_request.items():
                    pages = await fetch(session, self.scope, parent_ids, request)
                    for parent_id, page in pages.items():
                        results[(parent_id, request)] = page
            return [results[key] for key in keys]

        return DataLoader(load)

    async def _analyses_by_section(self, section_ids: list[uuid.UUID]) -> list[list[Analysis]]:
        async with self._tx.read() as session:
            rows = await analyses.read_analyses_by_section_ids(session, self.scope, section_ids)
            await self._envelope.open_analyses(session, rows)
        grouped: dict[uuid.UUID, list[Analysis]] = defaultdict(list)
        for row in rows:
            grouped[row.section_id].append(row)
        return [grouped[i] for i in section_ids]

    async def _pii_summary(self, document_ids: list[uuid.UUID]) -> list[list[tuple[str, int]]]:
        async with self._tx.read() as session:
            found = await documents.read_pii_summaries(session, self.scope, document_ids)
        return [found[i] for i in document_ids]


K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")


def now_or_later(loader: DataLoader[K, V], key: K, build: Callable[[V], R]) -> R:
    """``build`` of the loader's value for ``key``: right away when the loader already holds
    it (a parent prefetched it), else an awaitable of it.

    Resolvers return this from a plain ``def``: GraphQL executes a value synchronously and
    awaits an awaitable, so a prefetched level costs no coroutine, task or future per row."""
    cached = loader.cache_map.get(key)
    if cached is not None and cached.done() and cached.exception() is None:
        return build(cached.result())

    async def later() -> R:
        return build(await loader.load(key))

    return cast(R, later())
