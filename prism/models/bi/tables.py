"""BI rollups: daily (and hourly) aggregates of documents, analyses, feedback and user activity,
kept per organization *and per visibility bucket*, read by the BI fields instead of the base
tables.

A bucket is (classification, department), the department only for RESTRICTED rows ('' for
every other level, and for a RESTRICTED row without department): exactly the attributes the
read rule looks at. A caller's numbers are the sum of the buckets ``within_clearance`` lets it
see, so clearance and the RESTRICTED department rule hold for aggregates as they do for rows.

Maintenance (docs/decisions/0009-bi-rollups.md): statement-level triggers on the base tables
append (organization, kind, day) markers to ``bi_invalidations`` in the writer's transaction;
a ``bi.refresh`` job recomputes the marked day slices from the base tables. Recomputing a
slice replaces it, so folding is idempotent and indifferent to the order of changes (inserts,
reclassifications, soft and hard deletes, cascades alike).

Text dimensions use '' for "none" (they are part of primary keys).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, enum_column
from prism.models.enums import (
    Classification,
    DocumentType,
    FeedbackAction,
    ProcessingStatus,
    WorkflowStatus,
)
from prism.models.feedback import Feedback
from prism.models.jobs import Job

REFRESH_JOB = "bi.refresh"


class Kind(StrEnum):
    """What a marker invalidates: one kind per base table, each feeding its rollups."""

    DOCUMENTS = "documents"
    ANALYSES = "analyses"
    FEEDBACK = "feedback"
    ACTIVITY = "activity"


def _org_key() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True),
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    )


def _day_key() -> Mapped[date]:
    return mapped_column(sa.Date, primary_key=True)


def _user_key() -> Mapped[uuid.UUID]:
    # No foreign key: a deleted user's past activity still counts (as it does in the audit log).
    return mapped_column(UUID(as_uuid=True), primary_key=True)


def _text_key(length: int) -> Mapped[str]:
    return mapped_column(sa.String(length), primary_key=True)


def _count() -> Mapped[int]:
    return mapped_column(sa.BigInteger, nullable=False)


class DocumentRollup(Base):
    """Live (not deleted) documents by the UTC day they were uploaded."""

    __tablename__ = "bi_document_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    document_type: Mapped[DocumentType] = enum_column(DocumentType, primary_key=True)
    processing_status: Mapped[ProcessingStatus] = enum_column(ProcessingStatus, primary_key=True)
    risk_level: Mapped[str] = _text_key(16)
    documents: Mapped[int] = _count()


class AnalysisRollup(Base):
    """Analyses of live documents by the UTC day they completed."""

    __tablename__ = "bi_analysis_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    document_type: Mapped[DocumentType] = enum_column(DocumentType, primary_key=True)
    model: Mapped[str] = _text_key(200)
    analyses: Mapped[int] = _count()
    duration_seconds: Mapped[float] = mapped_column(sa.Float, nullable=False)
    cost_usd: Mapped[Decimal] = mapped_column(sa.Numeric(20, 6), nullable=False)
    tokens_used: Mapped[int] = _count()
    confidence_sum: Mapped[float] = mapped_column(sa.Float, nullable=False)
    confidences: Mapped[int] = _count()
    feedback_items: Mapped[int] = _count()


class FeedbackRollup(Base):
    """Reviewer feedback on live documents by the UTC day it was given."""

    __tablename__ = "bi_feedback_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    category: Mapped[str] = _text_key(100)
    model: Mapped[str] = _text_key(200)
    action: Mapped[FeedbackAction] = enum_column(FeedbackAction, primary_key=True)
    workflow_status: Mapped[WorkflowStatus] = enum_column(WorkflowStatus, primary_key=True)
    feedback: Mapped[int] = _count()
    rated: Mapped[int] = _count()
    rating_sum: Mapped[int] = _count()
    satisfied: Mapped[int] = _count()


class ReviewerRollup(Base):
    """Feedback per author and day: distinct reviewers do not add up across buckets, so the
    author is a key here."""

    __tablename__ = "bi_reviewer_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    user_id: Mapped[uuid.UUID] = _user_key()
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    feedback: Mapped[int] = _count()
    satisfied: Mapped[int] = _count()


class ActivityHourlyRollup(Base):
    """Audit events made by users, per user, hour and event category (the hourly
    user-activity table). Events about nothing classified count as PUBLIC: visible to all."""

    __tablename__ = "bi_activity_hourly"

    organization_id: Mapped[uuid.UUID] = _org_key()
    hour: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = _user_key()
    category: Mapped[str] = _text_key(50)
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    events: Mapped[int] = _count()


class ActivityDailyRollup(Base):
    """The same events per day: distinct users over weeks read this, not 24× the rows."""

    __tablename__ = "bi_activity_daily"

    organization_id: Mapped[uuid.UUID] = _org_key()
    day: Mapped[date] = _day_key()
    user_id: Mapped[uuid.UUID] = _user_key()
    category: Mapped[str] = _text_key(50)
    classification: Mapped[Classification] = enum_column(Classification, primary_key=True)
    department: Mapped[str] = _text_key(100)
    events: Mapped[int] = _count()


class Invalidation(Base):
    """A day slice of one kind whose rollups are stale, appended by triggers in the writer's
    transaction. Append-only for writers, so concurrent writers never wait on each other.

    No foreign key to organizations: deleting an organization cascades into its base tables,
    whose triggers then mark slices of an organization that no longer exists, and a foreign
    key check would fail the deletion. The scheduler drops such markers."""

    __tablename__ = "bi_invalidations"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    day: Mapped[date] = mapped_column(sa.Date, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )

    __table_args__ = (
        sa.Index("ix_bi_invalidations_organization_id_kind_day", "organization_id", "kind", "day"),
    )


# Indexes on other aggregates' tables that only the rollups need: the refresh reads a day of
# feedback of one organization, and the scheduler looks for an open refresh job.
sa.Index(
    "ix_user_feedback_organization_id_created_at", Feedback.organization_id, Feedback.created_at
)
sa.Index(
    "ix_jobs_bi_refresh",
    Job.organization_id,
    postgresql_where=sa.text("kind = 'bi.refresh' AND state IN ('QUEUED', 'RUNNING', 'FAILED')"),
)

ROLLUPS: tuple[type[Base], ...] = (
    DocumentRollup,
    AnalysisRollup,
    FeedbackRollup,
    ReviewerRollup,
    ActivityHourlyRollup,
    ActivityDailyRollup,
)


# --- maintenance -------------------------------------------------------------------------------


def utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def first_columns(n: int) -> list[sa.ColumnElement[Any]]:
    """GROUP BY 1, ..., n: the key expressions carry bound parameters, and written out twice
    they would not be recognised as the SELECT's own."""
    return [sa.literal_column(str(i)) for i in range(1, n + 1)]
