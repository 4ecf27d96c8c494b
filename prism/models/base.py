"""Declarative base, naming convention and the column helpers every table uses."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, QueryableAttribute, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


# Tables whose rows belong to one organization: each has organization_id NOT NULL and a
# row-level security policy keyed on prism.org_id (see migrations and tests/test_rls.py).
TENANT_TABLES: tuple[str, ...] = (
    "users",
    "api_tokens",
    "sessions",
    "documents",
    "document_sections",
    "analysis_results",
    "user_feedback",
    "audit_logs",
    "audit_chain_heads",
    "jobs",
    "mfa_backup_codes",
    "password_resets",
    "retention_policies",
    "data_quality_runs",
    "data_keys",
    "data_exports",
    "lake_watermarks",
    "bi_document_daily",
    "bi_analysis_daily",
    "bi_feedback_daily",
    "bi_reviewer_daily",
    "bi_activity_hourly",
    "bi_activity_daily",
    "bi_invalidations",
    "organization_operations",
    "outbox_events",
    "outbox_cursors",
    "webhook_endpoints",
    "webhook_deliveries",
)


_UUIDS = ARRAY(UUID(as_uuid=True))


def among(
    column: sa.ColumnElement[Any] | QueryableAttribute[Any], ids: Iterable[uuid.UUID]
) -> sa.ColumnElement[bool]:
    """``column = ANY($n)`` with the ids as one array value: the statement's text is the same
    for any number of ids, so SQLAlchemy compiles it once and asyncpg prepares it once (an
    expanding ``IN`` renders a new statement, and a new prepared one, per count of ids)."""
    values = sa.bindparam(None, list(ids), type_=_UUIDS)
    return column == sa.any_(values)


def utcnow() -> datetime:
    return datetime.now(UTC)


def pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True),
        primary_key=True,
        default=uuid.uuid4,
        server_default=sa.text("gen_random_uuid()"),
    )


def org_fk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True),
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=False,
    )


def created_at() -> Mapped[datetime]:
    return mapped_column(
        sa.DateTime(timezone=True), nullable=False, default=utcnow, server_default=sa.func.now()
    )


def updated_at() -> Mapped[datetime]:
    return mapped_column(
        sa.DateTime(timezone=True),
        nullable=False,
        default=utcnow,
        onupdate=utcnow,
        server_default=sa.func.now(),
    )


def enum_column(enum: type[Enum], **kwargs: Any) -> Any:
    """A text column kept inside ``enum`` by a CHECK constraint (no PostgreSQL enum types:
    adding a value is then a constraint change, not an ALTER TYPE that cannot run in a
    transaction)."""
    return mapped_column(
        sa.Enum(
            enum,
            native_enum=False,
            create_constraint=True,
            length=32,
            name=enum.__name__.lower(),
            validate_strings=True,
        ),
        **kwargs,
    )
