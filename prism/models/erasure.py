"""The SQL of a person's erasure (``prism.privacy.erasure``): what it locks, deletes and
blanks, the lake days it touches, the audit events it leaves, and its cleanup jobs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from prism.models.analyses import Analysis
from prism.models.audit import AuditEvent
from prism.models.documents import Document
from prism.models.exports import DataExport
from prism.models.feedback import Feedback
from prism.models.jobs import Job
from prism.models.users import ApiToken, MfaBackupCode, PasswordReset, RefreshSession, User


async def lock_uploads(session: AsyncSession, user_id: uuid.UUID) -> list[Document]:
    """The documents the person uploaded, locked (FOR UPDATE)."""
    return list(
        await session.scalars(
            sa.select(Document).where(Document.uploaded_by == user_id).with_for_update()
        )
    )


async def read_exports_of(session: AsyncSession, user_id: uuid.UUID) -> list[DataExport]:
    return list(
        await session.scalars(sa.select(DataExport).where(DataExport.subject_id == user_id))
    )


async def delete_documents(session: AsyncSession, ids: Sequence[uuid.UUID]) -> None:
    """Sections, analyses and everyone's feedback on these documents go with them (cascade)."""
    await session.execute(sa.delete(Document).where(Document.id.in_(ids)))


async def delete_exports(session: AsyncSession, ids: Sequence[uuid.UUID]) -> None:
    await session.execute(sa.delete(DataExport).where(DataExport.id.in_(ids)))


async def remove_personal_rows(session: AsyncSession, user_id: uuid.UUID) -> None:
    """The person's own text on feedback (the decision stays), their sessions, API tokens,
    MFA backup codes and password reset tokens."""
    await session.execute(
        sa.update(Feedback)
        .where(Feedback.user_id == user_id)
        .values(custom_text=None, highlighted_text=None)
    )
    await session.execute(sa.delete(RefreshSession).where(RefreshSession.user_id == user_id))
    await session.execute(sa.delete(ApiToken).where(ApiToken.user_id == user_id))
    await session.execute(sa.delete(MfaBackupCode).where(MfaBackupCode.user_id == user_id))
    await session.execute(sa.delete(PasswordReset).where(PasswordReset.user_id == user_id))


async def count_retained_events(
    session: AsyncSession, user_id: uuid.UUID, identifiers: Sequence[str]
) -> int:
    """Audit events acted by the person or that mention one of ``identifiers`` in their
    text (kept: the log is append-only)."""
    mentions = [
        sa.or_(
            AuditEvent.description.ilike(f"%{value}%"),
            sa.cast(AuditEvent.before, sa.Text).ilike(f"%{value}%"),
            sa.cast(AuditEvent.after, sa.Text).ilike(f"%{value}%"),
        )
        for value in identifiers
    ]
    return int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(sa.or_(AuditEvent.actor_id == user_id, *mentions))
        )
        or 0
    )


async def days_touched(
    session: AsyncSession, subject_id: uuid.UUID, document_ids: Sequence[uuid.UUID]
) -> set[date]:
    """The UTC creation days of the documents to delete, their analyses and feedback, and of
    the person's feedback elsewhere: the lake partitions that hold them."""

    def day(column: Any) -> Any:
        return sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), column), sa.Date)

    queries = [
        sa.select(day(Feedback.created_at)).where(Feedback.user_id == subject_id),
    ]
    if document_ids:
        queries += [
            sa.select(day(Document.created_at)).where(Document.id.in_(document_ids)),
            sa.select(day(Analysis.created_at)).where(Analysis.document_id.in_(document_ids)),
            sa.select(day(Feedback.created_at)).where(Feedback.document_id.in_(document_ids)),
        ]
    return set(await session.scalars(sa.union(*queries)))


async def read_cleanup_jobs(
    session: AsyncSession, organization_id: uuid.UUID, subject_id: uuid.UUID, kind: str
) -> list[Job]:
    """The cleanup jobs (``kind``) of a person's erasure, oldest first, then what they queued
    for the erased documents (their removal from an external search index)."""
    query = (
        sa.select(Job)
        .where(
            Job.organization_id == organization_id,
            Job.kind == kind,
            Job.payload["subjectId"].astext == str(subject_id),
        )
        .order_by(Job.created_at, Job.id)
    )
    cleanups = list(await session.scalars(query))
    documents = sorted({str(d) for j in cleanups for d in j.payload.get("documentIds", [])})
    if not documents:
        return cleanups
    # A deleted document has no jobs but those its erasure queued after the cleanup began.
    follow_ups = (
        sa.select(Job)
        .where(
            Job.organization_id == organization_id,
            Job.kind != kind,
            Job.payload["documentId"].astext.in_(documents),
            Job.created_at >= cleanups[0].created_at,
        )
        .order_by(Job.created_at, Job.id)
    )
    return cleanups + list(await session.scalars(follow_ups))


async def count_held_documents(session: AsyncSession, subject_id: uuid.UUID) -> int:
    """Documents of the person still kept for a legal hold."""
    return int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(Document)
            .where(Document.uploaded_by == subject_id, Document.legal_hold.is_(True))
        )
        or 0
    )


async def lock_uploader_shared(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """A document's uploader, share-locked (their erasure cannot start or finish meanwhile)."""
    found: User | None = await session.scalar(
        sa.select(User).where(User.id == user_id).with_for_update(read=True)
    )
    return found


async def delete_document(session: AsyncSession, document_id: uuid.UUID) -> None:
    await session.execute(
        sa.delete(Document)
        .where(Document.id == document_id)
        .execution_options(synchronize_session=False)
    )
