"""Registered operations: the safelist of GraphQL documents, stored by their sha256.

Two kinds. An operator's *global* ones (``registered_operations``, pushed with ``prism
operations push``) are not tenant data: any organization may run them, under its own rules.
An organization's own (``organization_operations``, registered by its ADMIN over GraphQL,
row-level secured like every tenant table) are run only by that organization, until retired.
Both are looked up by the sha256 of their text, or by the sha256 of its normalized form
(what a query sent as text is matched on)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from graphql import GraphQLSyntaxError, strip_ignored_characters
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, created_at, org_fk, pk, utcnow


class RegisteredOperation(Base):
    __tablename__ = "registered_operations"

    sha256: Mapped[str] = mapped_column(sa.CHAR(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    document: Mapped[str] = mapped_column(sa.Text, nullable=False)
    normalized_sha256: Mapped[str] = mapped_column(sa.CHAR(64), nullable=False, index=True)
    created_at: Mapped[datetime] = created_at()


class OrganizationOperation(Base):
    __tablename__ = "organization_operations"
    __table_args__ = (sa.UniqueConstraint("organization_id", "sha256"),)

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    sha256: Mapped[str] = mapped_column(sa.CHAR(64), nullable=False)
    normalized_sha256: Mapped[str] = mapped_column(sa.CHAR(64), nullable=False)
    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    document: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = created_at()
    retired_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


sa.Index(
    "ix_organization_operations_organization_id_normalized_sha256",
    OrganizationOperation.organization_id,
    OrganizationOperation.normalized_sha256,
)


def operation_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def normalized_hash(document: str) -> str | None:
    """The sha256 of the document without what does not count (whitespace, commas,
    comments); None when it does not even tokenize. Linear in the text."""
    try:
        return operation_hash(strip_ignored_characters(document))
    except GraphQLSyntaxError:
        return None


async def find_operation(session: AsyncSession, sha256: str) -> RegisteredOperation | None:
    return await session.get(RegisteredOperation, sha256)


async def register_operations(
    session: AsyncSession, operations: Sequence[tuple[str, str]]
) -> list[tuple[str, str, bool]]:
    """Store global (name, document) pairs; returns (name, sha256, newly stored) for each.
    The same text keeps its first name: a hash names exactly one document."""
    results = []
    for name, document in operations:
        digest = operation_hash(document)
        stored = await session.scalar(
            insert(RegisteredOperation)
            .values(
                sha256=digest,
                name=name,
                document=document,
                normalized_sha256=normalized_hash(document) or digest,
            )
            .on_conflict_do_nothing(index_elements=[RegisteredOperation.sha256])
            .returning(RegisteredOperation.sha256)
        )
        results.append((name, digest, stored is not None))
    return results


async def list_operations(session: AsyncSession) -> list[RegisteredOperation]:
    query = sa.select(RegisteredOperation).order_by(RegisteredOperation.name)
    return list(await session.scalars(query))


async def find_by_normalized_hash(session: AsyncSession, normalized: str) -> tuple[str, str] | None:
    """(document, sha256) of an operation whose normalized text has this hash: the
    organization's own (in the transaction's organization, not retired) first, then a global
    one."""
    own = await session.execute(
        sa.select(OrganizationOperation.document, OrganizationOperation.sha256)
        .where(
            OrganizationOperation.normalized_sha256 == normalized,
            OrganizationOperation.retired_at.is_(None),
        )
        .order_by(OrganizationOperation.created_at)
        .limit(1)
    )
    found = (
        own.first()
        or (
            await session.execute(
                sa.select(RegisteredOperation.document, RegisteredOperation.sha256)
                .where(RegisteredOperation.normalized_sha256 == normalized)
                .limit(1)
            )
        ).first()
    )
    return (found[0], found[1]) if found else None


async def find_organization_operation(session: AsyncSession, sha256: str) -> str | None:
    """The text of the transaction's organization's operation with this hash, not retired."""
    document: str | None = await session.scalar(
        sa.select(OrganizationOperation.document).where(
            OrganizationOperation.sha256 == sha256, OrganizationOperation.retired_at.is_(None)
        )
    )
    return document


async def add_organization_operations(
    session: AsyncSession,
    organization_id: uuid.UUID,
    created_by: uuid.UUID | None,
    operations: Sequence[tuple[str, str]],
) -> list[tuple[OrganizationOperation, bool]]:
    """Register (name, document) pairs for the organization: (row, newly stored) for each.
    Registering a retired operation's text again brings it back, under the new name."""
    results: list[tuple[OrganizationOperation, bool]] = []
    for name, document in operations:
        digest = operation_hash(document)
        row = await session.scalar(
            sa.select(OrganizationOperation)
            .where(
                OrganizationOperation.organization_id == organization_id,
                OrganizationOperation.sha256 == digest,
            )
            .with_for_update()
        )
        if row is not None and row.retired_at is None:
            results.append((row, False))
            continue
        if row is None:
            row = OrganizationOperation(
                organization_id=organization_id,
                sha256=digest,
                normalized_sha256=normalized_hash(document) or digest,
                document=document,
            )
            session.add(row)
        row.name, row.created_by, row.retired_at = name, created_by, None
        await session.flush()
        results.append((row, True))
    return results


async def list_organization_operations(
    session: AsyncSession, *, include_retired: bool
) -> list[OrganizationOperation]:
    query = sa.select(OrganizationOperation).order_by(
        OrganizationOperation.name, OrganizationOperation.created_at
    )
    if not include_retired:
        query = query.where(OrganizationOperation.retired_at.is_(None))
    return list(await session.scalars(query))


async def count_live_organization_operations(session: AsyncSession) -> int:
    count = await session.scalar(
        sa.select(sa.func.count()).where(OrganizationOperation.retired_at.is_(None))
    )
    return int(count or 0)


async def read_organization_operation(
    session: AsyncSession, operation_id: uuid.UUID
) -> OrganizationOperation | None:
    return await session.get(OrganizationOperation, operation_id, with_for_update=True)


def retire(row: OrganizationOperation) -> bool:
    """Retire the operation; False when it already was."""
    if row.retired_at is not None:
        return False
    row.retired_at = utcnow()
    return True


async def data_version(session: AsyncSession, organization_id: object) -> int:
    """A number that changes with every committed write of the organization's data (kept by
    triggers, see migration 0008): what cached answers are keyed on."""
    version = await session.scalar(
        sa.text("SELECT data_version FROM organizations WHERE id = :id"), {"id": organization_id}
    )
    return int(version or 0)
