"""Personal-data exports (GDPR access and portability): their rows, and the reads that
collect one person's data within the requester's scope (``prism.privacy.export``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.audit import AuditEvent
from prism.models.base import Base, among, created_at, enum_column, org_fk, pk
from prism.models.documents import Document
from prism.models.enums import JobState
from prism.models.feedback import Feedback
from prism.models.scope import Scope, within_clearance
from prism.models.users import ApiToken, RefreshSession, User


class DataExport(Base):
    """A bundle of one person's data (GDPR access/portability), built by a job."""

    __tablename__ = "data_exports"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    subject_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    requested_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    state: Mapped[JobState] = enum_column(JobState, nullable=False, default=JobState.QUEUED)
    storage_key: Mapped[str | None] = mapped_column(sa.String(1024))
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at()
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (sa.Index("ix_data_exports_subject_id", "subject_id"),)


async def create_data_export(session: AsyncSession, export: DataExport) -> DataExport:
    session.add(export)
    await session.flush()
    return export


async def read_data_exports_by_ids(
    session: AsyncSession, organization_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> list[DataExport]:
    if not ids:
        return []
    query = sa.select(DataExport).where(
        DataExport.organization_id == organization_id, among(DataExport.id, ids)
    )
    return list(await session.scalars(query))


async def read_data_export(
    session: AsyncSession, export_id: uuid.UUID, *, for_update: bool = False
) -> DataExport | None:
    return await session.get(DataExport, export_id, with_for_update=for_update)


# --- one person's data -----------------------------------------------------------------------


async def read_api_tokens_of(session: AsyncSession, user_id: uuid.UUID) -> list[ApiToken]:
    return list(await session.scalars(sa.select(ApiToken).where(ApiToken.user_id == user_id)))


async def read_sessions_of(session: AsyncSession, user_id: uuid.UUID) -> list[RefreshSession]:
    return list(
        await session.scalars(sa.select(RefreshSession).where(RefreshSession.user_id == user_id))
    )


def _readable(scope: Scope) -> sa.ColumnElement[bool]:
    return within_clearance(scope, Document.classification, Document.department)


async def read_feedback_of(
    session: AsyncSession, user_id: uuid.UUID, scope: Scope
) -> list[tuple[Feedback, bool]]:
    """The person's feedback, each with whether ``scope`` may read it (feedback quotes the
    document it is on: readable only with that document)."""
    rows = await session.execute(
        sa.select(Feedback, _readable(scope))
        .join(Document, Document.id == Feedback.document_id)
        .where(Feedback.user_id == user_id)
        .order_by(Feedback.created_at, Feedback.id)
    )
    return [(f, bool(ok)) for f, ok in rows]


async def read_audit_events_of(
    session: AsyncSession, user_id: uuid.UUID, scope: Scope
) -> list[tuple[AuditEvent, bool]]:
    """Events the person acted or that are about them, each with whether ``scope`` may read
    it."""
    rows = await session.execute(
        sa.select(
            AuditEvent,
            within_clearance(
                scope, AuditEvent.classification, AuditEvent.department, unclassified_visible=True
            ),
        )
        .where(sa.or_(AuditEvent.actor_id == user_id, AuditEvent.resource_id == user_id))
        .order_by(AuditEvent.created_at, AuditEvent.id)
    )
    return [(e, bool(ok)) for e, ok in rows]


async def read_uploads_of(
    session: AsyncSession, user_id: uuid.UUID, scope: Scope
) -> list[tuple[Document, bool]]:
    """The documents the person uploaded, soft-deleted ones too, each with whether ``scope``
    may read it."""
    rows = await session.execute(
        sa.select(Document, _readable(scope))
        .where(Document.uploaded_by == user_id)
        .order_by(Document.created_at, Document.id)
    )
    return [(d, bool(ok)) for d, ok in rows]


async def read_export_subject(session: AsyncSession, export: DataExport) -> User | None:
    """The person an export is of (None once they are gone)."""
    if export.subject_id is None:
        return None
    return await session.get(User, export.subject_id)
