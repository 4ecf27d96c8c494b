"""Changing a document: its type, classification and legal hold; its (soft) deletion; a request
for its analysis. Each checks the policy, changes the row (locked), records the audit event
and tells the search index, in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.authz.policy import Action, Resource, require
from prism.authz.principal import Principal
from prism.documents import originals
from prism.documents.processing import enqueue_index, request_analysis
from prism.errors import BadUserInput, not_found
from prism.models import documents as document_models
from prism.models.audit import RequestMeta, Subject
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import Classification, DocumentType
from prism.models.jobs import Job
from prism.services import Services


def resource_of(document: Document) -> Resource:
    return Resource(
        organization_id=document.organization_id,
        kind="Document",
        classification=document.classification,
        department=document.department,
        owner_id=document.uploaded_by,
        legal_hold=document.legal_hold,
    )


def subject_of(document: Document) -> Subject:
    return Subject(classification=document.classification, department=document.department)


def _rank(subject: Subject) -> int:
    return subject.classification.rank if subject.classification else -1


async def _document_for_update(
    session: AsyncSession, principal: Principal, document_id: uuid.UUID
) -> Document:
    """The document, locked for the change; NOT_FOUND when missing or not visible."""
    document = await document_models.read_document_for_update(
        session, principal.scope(), document_id
    )
    if document is None:
        raise not_found("Document")
    return document


def snapshot(document: Document) -> dict[str, Any]:
    return {
        "documentType": document.document_type.value,
        "classification": document.classification.value,
        "legalHold": document.legal_hold,
    }


class EraseReleased(Protocol):
    """What erases a document whose legal hold lifted, if its uploader was erased meanwhile
    (``prism.privacy.erasure.erase_released_document``): the cleanup job, or None."""

    def __call__(
        self, session: AsyncSession, document: Document, *, max_attempts: int
    ) -> Awaitable[Job | None]: ...


@dataclass(frozen=True)
class DocumentChanges:
    document_type: DocumentType | None = None
    classification: Classification | None = None
    legal_hold: bool | None = None


async def update_document(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    document_id: uuid.UUID,
    changes: DocumentChanges,
    *,
    erase_released: EraseReleased,
) -> Document:
    """Change the document's type, classification (sealing what the new level requires) or
    legal hold. ``erase_released`` is called once a hold lifts (privacy sits above this
    package, so the caller hands it in)."""
    document = await _document_for_update(session, principal, document_id)
    resource = resource_of(document)
    require(principal, Action.DOCUMENT_UPDATE, resource)
    if changes.classification is not None and changes.classification != document.classification:
        require(principal, Action.DOCUMENT_CLASSIFY, resource)
        if changes.classification.rank > principal.clearance.rank:
            raise BadUserInput(
                "A document cannot be classified above your own clearance.",
                argument="classification",
            )
    if changes.legal_hold is not None and changes.legal_hold != document.legal_hold:
        require(principal, Action.DOCUMENT_LEGAL_HOLD, resource)
    before = snapshot(document)
    was = subject_of(document)
    if changes.document_type is not None:
        document.document_type = changes.document_type
    if changes.classification is not None:
        document.classification = changes.classification
        # RESTRICTED text is sealed at rest; text of any other level is not.
        await services.envelope.apply_classification(session, document)
        # A stored original of CONFIDENTIAL or above is sealed too (never unsealed).
        await originals.apply_classification(session, services.objects, services.envelope, document)
    if changes.legal_hold is not None:
        document.legal_hold = changes.legal_hold
    after = snapshot(document)
    if after != before:
        document.updated_at = utcnow()
        await session.flush()
        held = before["legalHold"] != after["legalHold"]
        await audit.record(
            session,
            principal,
            meta,
            event_type="document.legal_hold" if held else "document.update",
            category="governance" if held else "data_change",
            description=f"Document {document.filename!r} updated",
            resource_type="Document",
            resource_id=document.id,
            before=before,
            after=after,
            # Readers must clear both the old and the new level to see the change.
            subject=max(was, subject_of(document), key=_rank),
        )
        await enqueue_index(session, services, document)
    if before["legalHold"] and not document.legal_hold:
        # Kept only for the hold: an erased uploader's document goes now.
        job = await erase_released(
            session, document, max_attempts=services.settings.job_max_attempts
        )
        if job is not None:
            await audit.record(
                session,
                principal,
                meta,
                event_type="document.erase",
                category="governance",
                description=f"Document {document.id} of erased user {document.uploaded_by} "
                "erased once its legal hold lifted",
                resource_type="Document",
                resource_id=document.id,
                after={"cleanupJobId": str(job.id)},
                subject=subject_of(document),
            )
    return document


async def delete_document(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    document_id: uuid.UUID,
) -> uuid.UUID:
    """Soft delete (the row stays for audit and retention; it disappears from every read)."""
    document = await _document_for_update(session, principal, document_id)
    require(principal, Action.DOCUMENT_DELETE, resource_of(document))
    await document_models.soft_delete_document(session, document)
    await audit.record(
        session,
        principal,
        meta,
        event_type="document.delete",
        category="data_change",
        description=f"Document {document.filename!r} deleted",
        resource_type="Document",
        resource_id=document.id,
        before=snapshot(document),
        subject=subject_of(document),
    )
    await enqueue_index(session, services, document)
    return document.id


async def analyze_document(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    document_id: uuid.UUID,
    analyzer: str | None,
) -> tuple[Document, Job]:
    """Queue a (re-)analysis of the document by ``analyzer`` (None: the configured one)."""
    require(principal, Action.ANALYSIS_RUN)
    services.analyzer(analyzer)  # an unknown name is bad input, said now
    document = await _document_for_update(session, principal, document_id)
    job = await request_analysis(session, services, document, analyzer)
    await audit.record(
        session,
        principal,
        meta,
        event_type="document.analyze",
        category="processing",
        description=f"Analysis of {document.filename!r} requested",
        resource_type="Document",
        resource_id=document.id,
        after={
            "analyzer": analyzer or services.settings.analyzer.value,
            "jobId": str(job.id),
        },
        subject=subject_of(document),
    )
    return document, job
