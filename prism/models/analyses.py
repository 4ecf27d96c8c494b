"""AI analysis results: one row per analysed section, with its feedback items."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, among, created_at, enum_column, org_fk, pk
from prism.models.documents import Document, visible_documents
from prism.models.enums import RiskLevel
from prism.models.pagination import Page, PageRequest, window_pages
from prism.models.scope import Scope


class Analysis(Base):
    __tablename__ = "analysis_results"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    document_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    )
    section_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        sa.ForeignKey("document_sections.id", ondelete="CASCADE"),
        nullable=False,
    )
    model: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    model_version: Mapped[str | None] = mapped_column(sa.String(100))
    started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    completed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    duration_seconds: Mapped[float] = mapped_column(sa.Float, nullable=False)
    risk_level: Mapped[RiskLevel | None] = enum_column(RiskLevel)
    confidence: Mapped[float | None] = mapped_column(sa.Float)
    tokens_used: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(sa.Numeric(14, 6), nullable=False, default=0)
    # [{"id", "category", "description", "suggestion", "riskLevel", "confidence", "quote"}]
    feedback_items: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, default=list, server_default=sa.text("'[]'::jsonb")
    )
    # RESTRICTED documents: feedback_items sealed with the organization's data key (its
    # quotes are excerpts of the text); ``feedback_items`` then holds [].
    sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    # How many findings: never sealed, so counts (BI, the lake) hold for RESTRICTED rows too.
    # A database trigger sets it from ``feedback_items`` whenever they are in clear; a sealed
    # row keeps the count its writer gave (NULL: a row sealed before the column existed, until
    # the ``bi.count_findings`` job has opened it).
    finding_count: Mapped[int | None] = mapped_column(sa.Integer)
    # The job that produced the row: a re-run of the same job skips sections it already did,
    # so a worker killed mid-document resumes without duplicates.
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        sa.UniqueConstraint("section_id", "job_id"),
        sa.CheckConstraint("confidence IS NULL OR confidence BETWEEN 0 AND 1", name="confidence"),
        sa.CheckConstraint("tokens_used >= 0 AND cost_usd >= 0", name="usage_nonnegative"),
        sa.CheckConstraint(
            "finding_count IS NULL OR finding_count >= 0", name="finding_count_nonnegative"
        ),
        sa.Index("ix_analysis_results_section_id", "section_id"),
        sa.Index("ix_analysis_results_document_id_created_at", "document_id", "created_at", "id"),
        sa.Index(
            "ix_analysis_results_organization_id_completed_at", "organization_id", "completed_at"
        ),
    )


ANALYSIS_KEY = (Analysis.created_at, Analysis.id)


def _visible(scope: Scope) -> sa.Select[tuple[Analysis]]:
    return (
        sa.select(Analysis)
        .join(Document, Document.id == Analysis.document_id)
        .where(visible_documents(scope))
    )


async def read_analyses_by_ids(
    session: AsyncSession, scope: Scope, ids: Sequence[uuid.UUID]
) -> list[Analysis]:
    if not ids:
        return []
    return list(await session.scalars(_visible(scope).where(among(Analysis.id, ids))))


async def read_analyses_by_section_ids(
    session: AsyncSession, scope: Scope, section_ids: Sequence[uuid.UUID]
) -> list[Analysis]:
    if not section_ids:
        return []
    query = _visible(scope).where(among(Analysis.section_id, section_ids)).order_by(*ANALYSIS_KEY)
    return list(await session.scalars(query))


async def read_analysis_pages(
    session: AsyncSession, scope: Scope, document_ids: Sequence[uuid.UUID], page: PageRequest
) -> dict[uuid.UUID, Page[Analysis]]:
    return await window_pages(
        session,
        _visible(scope),
        Analysis,
        Analysis.document_id,
        document_ids,
        ANALYSIS_KEY,
        page,
        lambda a: (a.created_at, a.id),
    )


async def insert_analysis(session: AsyncSession, values: dict[str, Any]) -> None:
    """One analysis row; nothing if the same job already analysed the same section."""
    await session.execute(
        insert(Analysis)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[Analysis.section_id, Analysis.job_id])
    )


async def read_analyses_of_run(
    session: AsyncSession, document_id: uuid.UUID, job_id: uuid.UUID | None
) -> list[Analysis]:
    """The analyses one job made of the document (``job_id`` None: those made without one)."""
    query = sa.select(Analysis).where(Analysis.document_id == document_id)
    query = query.where(Analysis.job_id.is_(None) if job_id is None else Analysis.job_id == job_id)
    return list(await session.scalars(query.order_by(Analysis.created_at, Analysis.id)))


async def read_analyzed_section_ids(session: AsyncSession, job_id: uuid.UUID) -> set[uuid.UUID]:
    """The sections the job has analysed so far."""
    return set(
        await session.scalars(sa.select(Analysis.section_id).where(Analysis.job_id == job_id))
    )


async def read_flagged_analyses(session: AsyncSession) -> list[Analysis]:
    """The analyses with at least one feedback item that the session sees (row-level
    security scopes it to the transaction's organization), by document then age."""
    query = (
        sa.select(Analysis)
        .where(Analysis.feedback_items != sa.text("'[]'::jsonb"))
        .order_by(Analysis.document_id, Analysis.created_at)
    )
    return list(await session.scalars(query))
