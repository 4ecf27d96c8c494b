"""Reviewers' feedback on AI analyses, with its approval workflow."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, among, created_at, enum_column, org_fk, pk, updated_at
from prism.models.documents import Document, visible_documents
from prism.models.enums import FeedbackAction, WorkflowStatus
from prism.models.pagination import Page, PageRequest, window_pages
from prism.models.scope import Scope


class Feedback(Base):
    __tablename__ = "user_feedback"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    document_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    )
    section_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("document_sections.id", ondelete="CASCADE")
    )
    analysis_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("analysis_results.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    item_id: Mapped[str | None] = mapped_column(sa.String(64))
    action: Mapped[FeedbackAction] = enum_column(FeedbackAction, nullable=False)
    category: Mapped[str | None] = mapped_column(sa.String(100))
    rating: Mapped[int | None] = mapped_column(sa.SmallInteger)
    custom_text: Mapped[str | None] = mapped_column(sa.Text)
    highlighted_text: Mapped[str | None] = mapped_column(sa.Text)
    workflow_status: Mapped[WorkflowStatus] = enum_column(
        WorkflowStatus, nullable=False, default=WorkflowStatus.SUBMITTED
    )
    approved_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    approved_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()

    __table_args__ = (
        sa.CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name="rating_range"),
        sa.Index("ix_user_feedback_document_id_created_at", "document_id", "created_at", "id"),
        sa.Index("ix_user_feedback_analysis_id", "analysis_id"),
        sa.Index(
            "ix_user_feedback_organization_id_workflow_status", "organization_id", "workflow_status"
        ),
    )


FEEDBACK_KEY = (Feedback.created_at, Feedback.id)


def _visible(scope: Scope) -> sa.Select[tuple[Feedback]]:
    return (
        sa.select(Feedback)
        .join(Document, Document.id == Feedback.document_id)
        .where(visible_documents(scope))
    )


async def read_feedback_by_ids(
    session: AsyncSession, scope: Scope, ids: Sequence[uuid.UUID]
) -> list[Feedback]:
    if not ids:
        return []
    return list(await session.scalars(_visible(scope).where(among(Feedback.id, ids))))


async def read_feedback_for_update(
    session: AsyncSession, scope: Scope, feedback_id: uuid.UUID
) -> Feedback | None:
    query = _visible(scope).where(Feedback.id == feedback_id).with_for_update(of=Feedback)
    return (await session.scalars(query)).one_or_none()


async def read_feedback_pages(
    session: AsyncSession, scope: Scope, document_ids: Sequence[uuid.UUID], page: PageRequest
) -> dict[uuid.UUID, Page[Feedback]]:
    return await window_pages(
        session,
        _visible(scope),
        Feedback,
        Feedback.document_id,
        document_ids,
        FEEDBACK_KEY,
        page,
        lambda f: (f.created_at, f.id),
    )


async def create_feedback(session: AsyncSession, feedback: Feedback) -> Feedback:
    session.add(feedback)
    await session.flush()
    return feedback
