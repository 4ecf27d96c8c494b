"""Document and feedback mutations: authorize, change, audit, in the request's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy.ext.asyncio import AsyncSession

from prism.authz.policy import Action, Resource, require
from prism.authz.principal import Principal
from prism.documents import originals
from prism.errors import BadUserInput, Conflict, Forbidden, not_found
from prism.execution.context import Context
from prism.jobs import pipeline
from prism.models import analyses as analysis_models
from prism.models import documents as document_models
from prism.models import feedback as feedback_models
from prism.models.audit import Subject
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import Classification, DocumentType, FeedbackAction, WorkflowStatus
from prism.models.feedback import Feedback
from prism.models.jobs import Job
from prism.models.scope import Scope
from prism.privacy import gdpr


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


async def _subject_of_document(
    session: AsyncSession, scope: Scope, document_id: uuid.UUID
) -> Subject:
    rows = await document_models.read_documents_by_ids(session, scope, [document_id])
    return subject_of(rows[0]) if rows else Subject(classification=Classification.RESTRICTED)


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


@dataclass(frozen=True)
class DocumentChanges:
    document_type: DocumentType | None = None
    classification: Classification | None = None
    legal_hold: bool | None = None


async def update_document(
    ctx: Context, document_id: uuid.UUID, changes: DocumentChanges
) -> Document:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
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
            await ctx.services.envelope.apply_classification(session, document)
            # A stored original of CONFIDENTIAL or above is sealed too (never unsealed).
            await originals.apply_classification(
                session, ctx.services.objects, ctx.services.envelope, document
            )
        if changes.legal_hold is not None:
            document.legal_hold = changes.legal_hold
        after = snapshot(document)
        if after != before:
            document.updated_at = utcnow()
            await session.flush()
            held = before["legalHold"] != after["legalHold"]
            await ctx.audit(
                session,
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
            await pipeline.enqueue_index(session, ctx.services, document)
        if before["legalHold"] and not document.legal_hold:
            # Kept only for the hold: an erased uploader's document goes now.
            job = await gdpr.erase_released_document(
                session, document, max_attempts=ctx.services.settings.job_max_attempts
            )
            if job is not None:
                await ctx.audit(
                    session,
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


async def delete_document(ctx: Context, document_id: uuid.UUID) -> uuid.UUID:
    """Soft delete (the row stays for audit and retention; it disappears from every read)."""
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        document = await _document_for_update(session, principal, document_id)
        require(principal, Action.DOCUMENT_DELETE, resource_of(document))
        await document_models.soft_delete_document(session, document)
        await ctx.audit(
            session,
            event_type="document.delete",
            category="data_change",
            description=f"Document {document.filename!r} deleted",
            resource_type="Document",
            resource_id=document.id,
            before=snapshot(document),
            subject=subject_of(document),
        )
        await pipeline.enqueue_index(session, ctx.services, document)
        return document.id


@dataclass(frozen=True)
class FeedbackInput:
    analysis_id: uuid.UUID
    action: FeedbackAction
    item_id: str | None = None
    custom_text: str | None = None
    rating: int | None = None
    highlighted_text: str | None = None


MAX_TEXT = 10_000


async def submit_feedback(ctx: Context, data: FeedbackInput) -> Feedback:
    principal = ctx.require_principal()
    if data.rating is not None and not 1 <= data.rating <= 5:
        raise BadUserInput("`rating` is 1 to 5.", argument="rating")
    if (
        data.action in (FeedbackAction.CUSTOM, FeedbackAction.MODIFIED)
        and not (data.custom_text or "").strip()
    ):
        raise BadUserInput(
            f"{data.action.value} feedback needs `customText`.", argument="customText"
        )
    for name, text in (
        ("customText", data.custom_text),
        ("highlightedText", data.highlighted_text),
    ):
        if text is not None and len(text) > MAX_TEXT:
            raise BadUserInput(f"`{name}` is at most {MAX_TEXT} characters.", argument=name)
    require(principal, Action.FEEDBACK_SUBMIT)
    async with ctx.transaction.write() as session:
        scope = principal.scope()
        found = await analysis_models.read_analyses_by_ids(session, scope, [data.analysis_id])
        if not found:
            raise not_found("Analysis")
        analysis = found[0]
        await ctx.services.envelope.open_analyses(session, found)
        category = None
        if data.item_id is not None:
            item = next(
                (i for i in analysis.feedback_items if str(i.get("id")) == data.item_id), None
            )
            if item is None:
                raise BadUserInput(
                    "`itemId` is not a feedback item of that analysis.", argument="itemId"
                )
            category = item.get("category")
        feedback = await feedback_models.create_feedback(
            session,
            Feedback(
                organization_id=principal.organization_id,
                document_id=analysis.document_id,
                section_id=analysis.section_id,
                analysis_id=analysis.id,
                user_id=principal.user_id,
                item_id=data.item_id,
                action=data.action,
                category=category,
                rating=data.rating,
                custom_text=data.custom_text,
                highlighted_text=data.highlighted_text,
                workflow_status=WorkflowStatus.SUBMITTED,
            ),
        )
        await ctx.audit(
            session,
            event_type="feedback.submit",
            category="review",
            description=f"Feedback {data.action.value} on analysis item {data.item_id or '-'}",
            resource_type="Feedback",
            resource_id=feedback.id,
            after={"action": data.action.value, "itemId": data.item_id, "rating": data.rating},
            subject=await _subject_of_document(session, scope, analysis.document_id),
        )
        return feedback


async def review_feedback(ctx: Context, feedback_id: uuid.UUID, *, approve: bool) -> Feedback:
    principal = ctx.require_principal()
    require(principal, Action.FEEDBACK_REVIEW)
    async with ctx.transaction.write() as session:
        feedback = await feedback_models.read_feedback_for_update(
            session, principal.scope(), feedback_id
        )
        if feedback is None:
            raise not_found("Feedback")
        if principal.user_id is None:
            # Four eyes need two people: a service token is nobody in particular.
            raise Forbidden("Feedback is reviewed by a person (a user or a user's token).")
        if feedback.user_id == principal.user_id:
            raise Forbidden("Feedback is reviewed by someone other than its author.")
        if feedback.workflow_status is not WorkflowStatus.SUBMITTED:
            raise Conflict(f"The feedback was already {feedback.workflow_status.value.lower()}.")
        before = {"workflowStatus": feedback.workflow_status.value}
        feedback.workflow_status = WorkflowStatus.APPROVED if approve else WorkflowStatus.REJECTED
        feedback.approved_by = principal.user_id
        feedback.approved_at = utcnow()
        await session.flush()
        await ctx.audit(
            session,
            event_type="feedback.review",
            category="review",
            description=f"Feedback {feedback.workflow_status.value.lower()}",
            resource_type="Feedback",
            resource_id=feedback.id,
            before=before,
            after={"workflowStatus": feedback.workflow_status.value},
            subject=await _subject_of_document(session, principal.scope(), feedback.document_id),
        )
        return feedback


@dataclass(frozen=True)
class UploadInput:
    source: BinaryIO
    filename: str | None
    document_type: DocumentType | None
    classification: Classification | None
    analyze: bool


async def upload_document(ctx: Context, data: UploadInput) -> pipeline.Received:
    principal = ctx.require_principal()
    require(principal, Action.DOCUMENT_UPLOAD)
    async with ctx.transaction.write() as session:
        received = await pipeline.receive_upload(
            session,
            ctx.services,
            scope=principal.scope(),
            uploader_id=principal.user_id,
            department=principal.department,
            source=data.source,
            filename=data.filename,
            document_type=data.document_type,
            classification=data.classification,
            analyze=data.analyze,
            actor=ctx.actor,
            meta=ctx.meta,
        )
    if not received.deduplicated and received.document.storage_key:
        store, key = ctx.services.objects, received.document.storage_key
        ctx.transaction.on_rollback(lambda: store.delete(key))
    return received


async def analyze_document(
    ctx: Context, document_id: uuid.UUID, analyzer: str | None
) -> tuple[Document, Job]:
    principal = ctx.require_principal()
    require(principal, Action.ANALYSIS_RUN)
    ctx.services.analyzer(analyzer)  # an unknown name is bad input, said now
    async with ctx.transaction.write() as session:
        document = await _document_for_update(session, principal, document_id)
        job = await pipeline.request_analysis(session, ctx.services, document, analyzer)
        await ctx.audit(
            session,
            event_type="document.analyze",
            category="processing",
            description=f"Analysis of {document.filename!r} requested",
            resource_type="Document",
            resource_id=document.id,
            after={
                "analyzer": analyzer or ctx.services.settings.analyzer.value,
                "jobId": str(job.id),
            },
            subject=subject_of(document),
        )
        return document, job
