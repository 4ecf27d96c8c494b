"""Data governance rows: organizations' wrapped data keys, personal-data exports and the
lake export's watermarks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, created_at, enum_column, org_fk, pk, utcnow
from prism.models.enums import JobState


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


class LakeWatermark(Base):
    """How far the lake export has read one table of one organization."""

    __tablename__ = "lake_watermarks"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    )
    dataset: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    watermark: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    rows_exported: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), nullable=False, default=utcnow
    )


# --- data keys -------------------------------------------------------------------------------


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


# --- exports ---------------------------------------------------------------------------------


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
        DataExport.organization_id == organization_id, DataExport.id.in_(ids)
    )
    return list(await session.scalars(query))


# --- lake ------------------------------------------------------------------------------------


async def read_watermark(
    session: AsyncSession, organization_id: uuid.UUID, dataset: str
) -> datetime | None:
    found: datetime | None = await session.scalar(
        sa.select(LakeWatermark.watermark).where(
            LakeWatermark.organization_id == organization_id, LakeWatermark.dataset == dataset
        )
    )
    return found


async def advance_watermark(
    session: AsyncSession, organization_id: uuid.UUID, dataset: str, watermark: datetime, rows: int
) -> None:
    statement = insert(LakeWatermark).values(
        organization_id=organization_id,
        dataset=dataset,
        watermark=watermark,
        rows_exported=rows,
        updated_at=utcnow(),
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[LakeWatermark.organization_id, LakeWatermark.dataset],
            set_={
                "watermark": statement.excluded.watermark,
                "rows_exported": LakeWatermark.rows_exported + statement.excluded.rows_exported,
                "updated_at": statement.excluded.updated_at,
            },
        )
    )
