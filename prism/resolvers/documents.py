"""Documents and feedback: the reads of ``documents`` and ``document``; the mutations, each
running one use case of ``prism.documents`` in the request's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Protocol

from strawberry.types.nodes import Selection

from prism.authz.policy import Action, require
from prism.documents import editing, intake, review
from prism.documents.editing import DocumentChanges
from prism.documents.intake import Received, UploadInput
from prism.documents.review import FeedbackInput
from prism.errors import NotFound
from prism.execution.context import Context
from prism.execution.ids import expect_id
from prism.execution.prefetch import prefetch_documents, under
from prism.models import documents as document_models
from prism.models.documents import Document
from prism.models.feedback import Feedback
from prism.models.jobs import Job
from prism.models.pagination import Page, PageRequest
from prism.privacy.erasure import erase_released_document

__all__ = [
    "DocumentChanges",
    "DocumentFilterArgument",
    "FeedbackInput",
    "UploadInput",
    "analyze_document",
    "delete_document",
    "read_document",
    "read_documents",
    "review_feedback",
    "submit_feedback",
    "update_document",
    "upload_document",
]


class DocumentFilterArgument(Protocol):
    """The ``filter`` argument of ``documents``: read (its IDs decoded) only once the caller
    may list documents and the page arguments are valid."""

    def to_model(self) -> document_models.DocumentFilter: ...


async def read_documents(
    ctx: Context,
    filter: DocumentFilterArgument | None,
    *,
    field: str,
    descending: bool,
    first: int | None,
    after: str | None,
    selections: Iterable[Selection],
) -> tuple[Page[Document], document_models.DocumentFilter | None]:
    """A page of the documents the caller may see (and the filter it was read with); what
    ``selections`` asks below ``edges { node }`` is prefetched for the whole page."""
    principal = ctx.require_principal()
    require(principal, Action.DOCUMENT_READ)
    page_request = PageRequest.parse(
        first,
        after,
        ordering=f"documents:{field}:{'desc' if descending else 'asc'}",
        descending=descending,
    )
    flt = filter.to_model() if filter else None
    async with ctx.transaction.read() as session:
        page = await document_models.read_documents(
            session, principal.scope(), flt=flt, page=page_request, ordering=field
        )
    await prefetch_documents(ctx, page.items, under(selections, "edges", "node"))
    return page, flt


async def read_document(ctx: Context, document_id: str) -> Document:
    """One document; NOT_FOUND if it does not exist or is not visible."""
    principal = ctx.require_principal()
    require(principal, Action.DOCUMENT_READ)
    row = await ctx.loaders.document.load(expect_id(document_id, "Document"))
    if row is None:
        raise NotFound("Document not found.")
    return row


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
