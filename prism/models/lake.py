"""The lake export's SQL (``prism.governance.lake``): its watermarks, its lock, which days of a
table changed, a day's rows, and what each exported column holds."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, TypeAlias, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB, insert
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, utcnow

ExportColumn: TypeAlias = "sa.Column[Any]"


class LakeWatermark(Base):
    """How far the lake export has read one table of one organization."""

    __tablename__ = "lake_watermarks"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        PG_UUID(as_uuid=True),
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    )
    dataset: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    watermark: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    rows_exported: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), nullable=False, default=utcnow
    )


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


async def lock_organization(session: AsyncSession, organization_id: uuid.UUID) -> None:
    """The organization's lake lock, held until ``session``'s transaction ends."""
    key = sa.func.hashtextextended(sa.literal(f"prism.lake:{organization_id}"), 0)
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


# --- a table's rows --------------------------------------------------------------------------


def export_columns(model: type[Base], excluded: set[str]) -> list[ExportColumn]:
    """The table's columns that leave Prism: neither ``excluded`` nor binary (sealed)."""
    table = cast(sa.Table, model.__table__)
    return [
        c
        for c in table.columns
        if c.name not in excluded and not isinstance(c.type, sa.LargeBinary)
    ]


def column_kind(column: ExportColumn) -> str:
    """What a column holds, by its type: timestamp, bool, int, float, decimal, array, json
    or string."""
    kind = column.type
    if isinstance(kind, sa.DateTime):
        return "timestamp"
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.Integer):  # SmallInteger and BigInteger included
        return "int"
    if isinstance(kind, sa.Float):
        return "float"
    if isinstance(kind, sa.Numeric):
        return "decimal"
    if isinstance(kind, ARRAY):
        return "array"
    if isinstance(kind, JSONB):
        return "json"
    if isinstance(kind, sa.String | sa.Enum | PG_UUID | INET | sa.Text):
        return "string"
    raise TypeError(f"no Arrow type for {column.name}: {kind!r}")


def _day_column(model: type[Base]) -> sa.ColumnElement[date]:
    created = model.__table__.c.created_at
    # A literal zone (not a bound parameter): GROUP BY must see the same expression.
    return sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), created), sa.Date)


async def changed_days(
    session: AsyncSession,
    model: type[Base],
    changed_column: str,
    organization_id: uuid.UUID,
    lower: datetime | None,
    upper: datetime,
) -> tuple[set[date], datetime | None]:
    """The creation days (UTC) of the organization's rows changed in (lower, upper), and the
    newest change among them."""
    table = model.__table__
    changed = table.c[changed_column]
    query = (
        sa.select(_day_column(model), sa.func.max(changed))
        .where(table.c.organization_id == organization_id, changed < upper)
        .group_by(_day_column(model))
    )
    if lower is not None:
        query = query.where(changed > lower)
    rows = (await session.execute(query)).all()
    newest = max((r[1] for r in rows), default=None)
    return {r[0] for r in rows}, newest


async def rows_of_day(
    session: AsyncSession,
    model: type[Base],
    columns: list[ExportColumn],
    organization_id: uuid.UUID,
    day: date,
) -> list[tuple[Any, ...]]:
    """The values of ``columns`` of the organization's rows created on ``day`` (UTC)."""
    table = model.__table__
    query = (
        sa.select(*columns)
        .where(table.c.organization_id == organization_id, _day_column(model) == day)
        .order_by(table.c.created_at, table.c.id)
    )
    return [tuple(row) for row in await session.execute(query)]
