"""Opening a document's original file, and previews of its pages, for a reader.

Allowed to whoever may read the document (``document(id:)``'s rule: organization,
clearance, department for RESTRICTED; deleted or erased documents are gone, NOT_FOUND), with
one more rule (``authz.policy.may_open_original``): a reader below CONFIDENTIAL clearance
sees personal data masked in text, and an original (or a page preview) cannot be masked, so
it is not served to them (FORBIDDEN), whatever PII detection found: detection reads text,
and an original holds what it cannot read (text in pictures, signatures, photographs).
Every download and preview is audited as a sensitive read (``document.original_read``,
``document.preview_read``), and so is every refused attempt (``document.original_refused``),
each in a transaction of its own committed before anything is served or refused. A sealed
original is opened on the fly (``originals.open_original``)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.authz.policy import Action, decide, may_open_original
from prism.authz.principal import Principal
from prism.crypto.sealed import SealedObjectError
from prism.documents import originals
from prism.errors import Forbidden, NotFound, PrismError, Unauthenticated
from prism.extraction.detect import Kind
from prism.extraction.extract import NoPreview, preview_isolated
from prism.models import documents as document_models
from prism.models.audit import RequestMeta, Subject
from prism.models.documents import Document
from prism.models.enums import Classification
from prism.services import Services

ORIGINAL = "original"
PREVIEW = "preview"


class Unreadable(Exception):
    """The stored original cannot be read back (altered, cut short); logged by the caller."""


@dataclass(frozen=True)
class OriginalFile:
    """A document's original, as the reader was allowed to open it."""

    document_id: uuid.UUID
    organization_id: uuid.UUID
    storage_key: str
    filename: str
    mime_type: str
    size: int
    sha256: str
    page_count: int | None
    classification: Classification
    department: str | None

    @property
    def kind(self) -> Kind | None:
        return Kind.of_mime_type(self.mime_type)


async def open_for_reader(
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    document_id: uuid.UUID,
    *,
    purpose: str = ORIGINAL,
    page: int | None = None,
) -> OriginalFile:
    """The document's original if ``principal`` may open it, the read audited; otherwise
    the refusal audited and raised (NOT_FOUND as ``document(id:)`` answers, FORBIDDEN,
    UNAUTHENTICATED)."""
    refusal: PrismError | None = None
    found: OriginalFile | None = None
    async with services.db.transaction(principal.organization_id) as session:
        try:
            found = await _allowed(session, services, principal, document_id, purpose, page)
        except (NotFound, Forbidden, Unauthenticated) as exc:
            refusal = exc
            await _record_refusal(session, principal, meta, document_id, purpose, exc)
        else:
            await _record_read(session, principal, meta, found, purpose, page)
    if found is None:
        raise refusal or NotFound("Document not found.")
    return found


async def _allowed(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    document_id: uuid.UUID,
    purpose: str,
    page: int | None,
) -> OriginalFile:
    decide(principal, Action.DOCUMENT_READ).raise_if_denied("Document")
    rows = await document_models.read_documents_by_ids(session, principal.scope(), [document_id])
    if not rows:
        raise NotFound("Document not found.")
    document = rows[0]
    if document.storage_key is None:
        raise NotFound("No original is stored for this document.")
    if purpose == PREVIEW and page is not None:
        _check_page(services, document, page)
    may_open_original(principal).raise_if_denied("Document")
    return OriginalFile(
        document_id=document.id,
        organization_id=document.organization_id,
        storage_key=document.storage_key,
        filename=document.filename,
        mime_type=document.mime_type,
        size=document.file_size,
        sha256=document.sha256,
        page_count=document.page_count,
        classification=document.classification,
        department=document.department,
    )


def _check_page(services: Services, document: Document, page: int) -> None:
    kind = Kind.of_mime_type(document.mime_type)
    if kind is None or not kind.has_pages:
        raise NotFound("Only PDFs and images have page previews.")
    last = services.settings.preview_max_pages
    if document.page_count is not None:
        last = min(last, document.page_count)
    if not 1 <= page <= last:
        raise NotFound(f"Page {page} has no preview (pages 1 to {last} have).")


async def _record_read(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    document: OriginalFile,
    purpose: str,
    page: int | None,
) -> None:
    what = f"page {page} preview" if purpose == PREVIEW else "original file"
    await audit.record(
        session,
        principal,
        meta,
        event_type=f"document.{purpose}_read",
        category="data_access",
        description=f"The {what} of {document.filename!r} opened",
        resource_type="Document",
        resource_id=document.document_id,
        subject=Subject(document.classification, document.department),
        after={"page": page} if page is not None else None,
    )


async def _record_refusal(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    document_id: uuid.UUID,
    purpose: str,
    refusal: PrismError,
) -> None:
    """The refused attempt, under the document's own classification when it exists in the
    caller's organization (so only auditors cleared for it see that it exists)."""
    existing = await document_models.read_document_any_state(
        session, principal.organization_id, document_id
    )
    subject = Subject(existing.classification, existing.department) if existing else None
    await audit.record(
        session,
        principal,
        meta,
        event_type="document.original_refused",
        category="data_access",
        description=f"Opening the {purpose} of a document was refused: {refusal.code}",
        resource_type="Document",
        resource_id=document_id,
        subject=subject,
        after={"purpose": purpose, "code": refusal.code},
    )


def stream_original(services: Services, original: OriginalFile) -> AsyncIterator[bytes]:
    """The original's bytes as stored (opened on the fly if sealed); raises
    ``SealedObjectError`` if they were altered, the store's errors if it cannot read them."""
    return originals.open_original(
        services.db,
        services.objects,
        services.envelope,
        original.organization_id,
        original.storage_key,
    )


async def render_preview(services: Services, original: OriginalFile, page: int) -> bytes:
    """Page ``page`` (1-based) as a PNG, rendered in a bounded child process from a private
    copy of the original (removed at once). Raises ``NotFound`` when the document has no
    such page or no previews, ``Unreadable`` when the stored bytes fail their check, and
    ``prism.extraction.extract.ExtractionError`` when the file cannot be rendered."""
    kind = original.kind
    if kind is None or not kind.has_pages:
        raise NotFound("Only PDFs and images have page previews.")
    with tempfile.TemporaryDirectory(prefix="prism-preview-") as directory:
        path = Path(directory) / "original"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            try:
                async for chunk in stream_original(services, original):
                    out.write(chunk)
            except SealedObjectError as exc:
                raise Unreadable(str(exc)) from exc
        try:
            return await preview_isolated(path, kind, page, services.extraction_limits)
        except NoPreview as exc:
            raise NotFound(str(exc)) from exc
