"""Organizations' data keys, stored wrapped (``prism.crypto.envelope``), and the rows of a
document they seal."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from prism.models.analyses import Analysis
from prism.models.base import Base, created_at, org_fk, pk, utcnow
from prism.models.documents import Section


class DataKey(Base):
    """An organization's data key (AES-256), stored only wrapped by a key-encryption key
    (the local keyring's or AWS KMS's): ``kek_id`` names the one that wrapped it."""

    __tablename__ = "data_keys"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    kek_id: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    wrapped_key: Mapped[bytes] = mapped_column(sa.LargeBinary, nullable=False)
    created_at: Mapped[datetime] = created_at()
    rewrapped_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (sa.UniqueConstraint("organization_id"),)


async def read_data_key(
    session: AsyncSession, organization_id: uuid.UUID, *, for_update: bool = False
) -> DataKey | None:
    query = sa.select(DataKey).where(DataKey.organization_id == organization_id)
    if for_update:
        query = query.with_for_update()
    found: DataKey | None = await session.scalar(query)
    return found


async def insert_data_key(
    session: AsyncSession, *, organization_id: uuid.UUID, kek_id: str, wrapped_key: bytes
) -> DataKey:
    """The organization's data key: this one, or the one a concurrent writer stored first."""
    await session.execute(
        insert(DataKey)
        .values(
            id=uuid.uuid4(), organization_id=organization_id, kek_id=kek_id, wrapped_key=wrapped_key
        )
        .on_conflict_do_nothing(index_elements=[DataKey.organization_id])
    )
    stored = await read_data_key(session, organization_id)
    assert stored is not None
    return stored


async def rewrap_data_key(
    session: AsyncSession, key: DataKey, *, kek_id: str, wrapped_key: bytes
) -> None:
    key.kek_id = kek_id
    key.wrapped_key = wrapped_key
    key.rewrapped_at = utcnow()
    await session.flush()


# --- sealed rows -----------------------------------------------------------------------------


async def read_sealable_rows(
    session: AsyncSession, document_id: uuid.UUID
) -> tuple[list[Section], list[Analysis]]:
    """A document's sections and analyses: what its classification seals or unseals."""
    sections = list(
        await session.scalars(sa.select(Section).where(Section.document_id == document_id))
    )
    analyses = list(
        await session.scalars(sa.select(Analysis).where(Analysis.document_id == document_id))
    )
    return sections, analyses


def set_loaded(row: Any, name: str, value: Any) -> None:
    """Give a loaded row's attribute a value for this read only: not marked changed, so it is
    never flushed back (what was decrypted stays out of the database)."""
    set_committed_value(row, name, value)
