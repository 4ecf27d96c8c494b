"""Document and feedback mutations: each runs one use case of ``prism.documents`` in the
request's transaction."""

from __future__ import annotations

import uuid

from prism.documents import editing, intake, review
from prism.documents.editing import DocumentChanges
from prism.documents.intake import Received, UploadInput
from prism.documents.review import FeedbackInput
from prism.execution.context import Context
from prism.models.documents import Document
from prism.models.feedback import Feedback
from prism.models.jobs import Job
from prism.privacy.erasure import erase_released_document

__all__ = [
    "DocumentChanges",
    "FeedbackInput",
    "UploadInput",
    "analyze_document",
    "delete_document",
    "review_feedback",
    "submit_feedback",
    "update_document",
    "upload_document",
]


async def update_document(
    ctx: Context, document_id: uuid.UUID, changes: DocumentChanges
) -> Document:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await editing.update_document(
            session,
            ctx.services,
            principal,
            ctx.meta,
            document_id,
            changes,
            erase_released=erase_released_document,
        )


async def delete_document(ctx: Context, document_id: uuid.UUID) -> uuid.UUID:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await editing.delete_document(
            session, ctx.services, principal, ctx.meta, document_id
        )


async def submit_feedback(ctx: Context, data: FeedbackInput) -> Feedback:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await review.submit_feedback(session, ctx.services, principal, ctx.meta, data)


async def review_feedback(ctx: Context, feedback_id: uuid.UUID, *, approve: bool) -> Feedback:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await review.review_feedback(
            session, ctx.services, principal, ctx.meta, feedback_id, approve=approve
        )


async def upload_document(ctx: Context, data: UploadInput) -> Received:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await intake.upload_document(
            session,
            ctx.services,
            principal,
            ctx.meta,
            data,
            on_rollback=ctx.transaction.on_rollback,
        )


async def analyze_document(
    ctx: Context, document_id: uuid.UUID, analyzer: str | None
) -> tuple[Document, Job]:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await editing.analyze_document(
            session, ctx.services, principal, ctx.meta, document_id, analyzer
        )
