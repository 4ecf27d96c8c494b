"""Registered operations: the safelist of GraphQL documents, stored by their sha256.

Not tenant data: an operation is a query text any organization may run (under its own
rules). Pushed by operators (``prism operations push``), read on every persisted request."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, created_at


class RegisteredOperation(Base):
    __tablename__ = "registered_operations"

    sha256: Mapped[str] = mapped_column(sa.CHAR(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    document: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_at: Mapped[datetime] = created_at()


def operation_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


async def find_operation(session: AsyncSession, sha256: str) -> RegisteredOperation | None:
    return await session.get(RegisteredOperation, sha256)


async def register_operations(
    session: AsyncSession, operations: Sequence[tuple[str, str]]
) -> list[tuple[str, str, bool]]:
    """Store (name, document) pairs; returns (name, sha256, newly stored) for each. The same
    text keeps its first name: a hash names exactly one document."""
    results = []
    for name, document in operations:
        digest = operation_hash(document)
        stored = await session.scalar(
            insert(RegisteredOperation)
            .values(sha256=digest, name=name, document=document)
            .on_conflict_do_nothing(index_elements=[RegisteredOperation.sha256])
            .returning(RegisteredOperation.sha256)
        )
        results.append((name, digest, stored is not None))
    return results


async def list_operations(session: AsyncSession) -> list[RegisteredOperation]:
    query = sa.select(RegisteredOperation).order_by(RegisteredOperation.name)
    return list(await session.scalars(query))


async def data_version(session: AsyncSession, organization_id: object) -> int:
    """A number that changes with every committed write of the organization's data (kept by
    triggers, see migration 0008): what cached answers are keyed on."""
    version = await session.scalar(
        sa.text("SELECT data_version FROM organizations WHERE id = :id"), {"id": organization_id}
    )
    return int(version or 0)
