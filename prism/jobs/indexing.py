"""Keeping search indexes in step with PostgreSQL: the index job (one document, enqueued in
the transaction of the change) and the reindex (every section of one or all organizations,
in batches, into a new index that replaces the old one in one alias swap)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prism.db.engine import Database
from prism.documents.processing import INDEX, search_text
from prism.extraction.pii import scan
from prism.jobs.handlers import JobRun, complete
from prism.models import documents as document_models
from prism.models import organizations as org_models
from prism.models.base import utcnow
from prism.models.documents import IndexRow
from prism.search import Search, SearchUnavailable, SectionDocument

BATCH = 1000
# A reindex re-reads documents changed since it began, minus this margin (clock skew of the
# processes that write updated_at).
CATCH_UP_MARGIN = timedelta(seconds=60)


def section_document(row: IndexRow) -> tuple[SectionDocument, bool]:
    """The section as indexes hold it, and whether its stored search text was stale. Sealed
    (RESTRICTED) text is not readable here: its masked search text, made from the clear text
    when it was stored or sealed, stands."""
    if row.sealed:
        text = row.search_text or ""
    else:
        text = search_text(row.name, row.content, row.pii_findings)
    return _section_document(row, text)


def rescanned_section_document(
    row: IndexRow,
) -> tuple[SectionDocument, bool, list[dict[str, Any]] | None]:
    """As ``section_document``, with the section's text scanned for PII again (the reindex:
    sections extracted before the scanner learnt a type get it masked, names included); the
    new findings when they differ from the stored ones. Sealed text keeps its findings."""
    if row.sealed:
        return (*section_document(row), None)
    findings = [f.as_json() for f in scan(row.content)]
    document, stale = _section_document(row, search_text(row.name, row.content, findings))
    return document, stale, findings if findings != row.pii_findings else None


def _section_document(row: IndexRow, text: str) -> tuple[SectionDocument, bool]:
    return (
        SectionDocument(
            section_id=row.section_id,
            document_id=row.document_id,
            organization_id=row.organization_id,
            ord=row.ord,
            text=text,
            classification=row.classification,
            department=row.department,
            document_type=row.document_type,
            risk_level=row.risk_level,
            legal_hold=row.legal_hold,
            document_created_at=row.document_created_at,
            language=row.language_code,
        ),
        text != row.search_text,
    )


async def index_document(
    db: Database, search: Search, organization_id: uuid.UUID, document_id: uuid.UUID
) -> None:
    """Write the document's current state to the external index (or remove it). Runs of one
    document take turns on an advisory lock held while writing, so the last state read is
    the last one written."""
    backend = search.opensearch
    async with db.transaction(organization_id) as session:
        await document_models.lock_document_for_indexing(session, document_id)
        document = await document_models.read_document_any_state(
            session, organization_id, document_id
        )
        if document is None or document.deleted_at is not None:
            if backend is not None:
                await backend.delete(organization_id, document_id)
            return
        rows = await document_models.read_index_rows(
            session, organization_id, document_ids=[document_id]
        )
        built = [section_document(row) for row in rows]
        stale = {doc.section_id: doc.text for doc, changed in built if changed}
        # Sections from before search (no search text yet) get theirs now.
        await document_models.write_search_texts(session, stale)
        if backend is not None:
            await backend.index(organization_id, document_id, [doc for doc, _ in built])


async def handle_index(run: JobRun) -> None:
    """The index job. OpenSearch being down fails it like any error: the worker retries it
    with backoff (``PRISM_SEARCH_INDEX_MAX_ATTEMPTS``) until the node is back."""
    services = run.services
    await index_document(services.db, services.search, run.job.organization_id, run.document_id)
    async with services.db.transaction(run.job.organization_id) as session:
        await complete(session, run)


HANDLERS = {INDEX: handle_index}


# --- reindex -------------------------------------------------------------------------------------


@dataclass
class ReindexProgress:
    total: int = 0
    done: int = 0
    organizations: int = 0
    index: str | None = None
    replaced: Sequence[str] = ()
    caught_up: int = 0
    removed: int = 0


Report = Callable[[ReindexProgress], None]


async def reindex(
    db: Database,
    search: Search,
    *,
    organization_id: uuid.UUID | None = None,
    batch: int = BATCH,
    report: Report | None = None,
) -> ReindexProgress:
    """Scan every readable section for PII again and re-mask its search text (PostgreSQL's
    index follows) and, with OpenSearch, rebuild its index. All organizations: into a new
    index, then the alias swaps to it and the old index is deleted. One organization
    (``organization_id``): in place, then that organization's sections left over from before
    are deleted. The full rebuild also repairs whatever state the index is in (alias lost, an
    index squatting its name, template gone, indices of an interrupted reindex); in place
    needs the alias to be there."""
    progress = ReindexProgress()
    started = utcnow()
    async with db.transaction(None) as session:
        organizations = (
            [organization_id]
            if organization_id is not None
            else await org_models.read_organization_ids(session)
        )
    progress.organizations = len(organizations)
    for org in organizations:
        async with db.transaction(org) as session:
            progress.total += await document_models.count_index_rows(session, org)
    backend = search.opensearch
    target: str | None = None
    if backend is not None and organization_id is not None and not await backend.alias_in_place():
        # In place needs the index in place: one organization cannot refill a lost index.
        raise SearchUnavailable(
            "The OpenSearch index is missing or damaged; run `prism search reindex` for all "
            "organizations to rebuild it."
        )
    if backend is not None and organization_id is None:
        target = await backend.create_index()
        progress.index = target
    if report:
        report(progress)
    for org in organizations:
        after: uuid.UUID | None = None
        while True:
            async with db.transaction(org) as session:
                rows = await document_models.read_index_rows(session, org, after=after, limit=batch)
                if not rows:
                    break
                rescanned = [rescanned_section_document(row) for row in rows]
                stale = {doc.section_id: doc.text for doc, changed, _ in rescanned if changed}
                await document_models.write_search_texts(session, stale)
                await document_models.write_pii_findings(
                    session,
                    {doc.section_id: found for doc, _, found in rescanned if found is not None},
                )
            if backend is not None:
                await backend.bulk([doc for doc, _, _ in rescanned], index=target)
            after = rows[-1].section_id
            progress.done += len(rows)
            if report:
                report(progress)
    if backend is not None:
        if target is not None:
            await backend.finish_index(target)
            progress.replaced = await backend.swap_alias(target)
        else:
            assert organization_id is not None
            progress.removed = await backend.delete_stale(organization_id, started)
        # Changes made while the batches ran may have been written to the old index: write
        # the current state of every document changed since the start.
        progress.caught_up = await catch_up(db, search, organizations, started - CATCH_UP_MARGIN)
        await backend.refresh()
    if report:
        report(progress)
    return progress


async def catch_up(
    db: Database, search: Search, organizations: Sequence[uuid.UUID], since: datetime
) -> int:
    done = 0
    for org in organizations:
        async with db.transaction(org) as session:
            changed = await document_models.read_changed_document_ids(session, org, since)
        for document_id in changed:
            await index_document(db, search, org, document_id)
            done += 1
    return done
