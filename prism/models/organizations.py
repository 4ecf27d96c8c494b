"""Organizations: the tenants. Every other row belongs to exactly one."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, created_at, pk, updated_at


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = pk()
    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    domain: Mapped[str | None] = mapped_column(sa.String(253))
    subscription_tier: Mapped[str] = mapped_column(
        sa.String(32), nullable=False, default="standard", server_default="standard"
    )
    data_retention_days: Mapped[int] = mapped_column(
        sa.Integer, nullable=False, default=2555, server_default="2555"
    )
    # Bumped by triggers on every committed write of the organization's data.
    data_version: Mapped[int] = mapped_column(
        sa.BigInteger, nullable=False, default=0, server_default="0"
    )
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()

    __table_args__ = (
        sa.CheckConstraint("data_retention_days > 0", name="retention_positive"),
        sa.Index("uq_organizations_name", sa.func.lower(sa.column("name")), unique=True),
        # An e-mail domain belongs to one organization (docs/decisions/0014).
        sa.Index("uq_organizations_domain", sa.func.lower(sa.column("domain")), unique=True),
    )


async def read_organization(
    session: AsyncSession, organization_id: uuid.UUID
) -> Organization | None:
    """The caller's own organization (RLS shows no other)."""
    return await session.get(Organization, organization_id)


async def lock_organization(
    session: AsyncSession, organization_id: uuid.UUID
) -> Organization | None:
    """The organization, row-locked until the transaction ends."""
    return await session.get(Organization, organization_id, with_for_update=True)


async def find_organization(session: AsyncSession, ref: str) -> uuid.UUID | None:
    """An organization by id or (case-insensitive) name, whichever it is (a narrow SECURITY
    DEFINER function, RLS stays on)."""
    found = await session.scalar(sa.select(sa.func.prism_find_organization(ref)))
    return None if found is None else uuid.UUID(str(found))


async def create_organization(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    name: str,
    domain: str | None = None,
    subscription_tier: str = "standard",
) -> Organization:
    """The id is chosen by the caller: RLS only lets it insert the organization it is set to."""
    org = Organization(
        id=organization_id, name=name, domain=domain, subscription_tier=subscription_tier
    )
    session.add(org)
    await session.flush()
    return org


async def read_organization_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Every organization's id (operators' maintenance across tenants: a narrow SECURITY
    DEFINER function, RLS stays on)."""
    rows = await session.execute(sa.select(sa.func.prism_organization_ids()))
    return [uuid.UUID(str(row[0])) for row in rows]


async def domain_owner(session: AsyncSession, domain: str) -> uuid.UUID | None:
    """The organization that owns an e-mail domain, whichever it is (operators only: a narrow
    SECURITY DEFINER function, RLS stays on)."""
    found = await session.scalar(sa.select(sa.func.prism_domain_owner(domain)))
    return None if found is None else uuid.UUID(str(found))


async def domain_used_elsewhere(
    session: AsyncSession, domain: str, organization_id: uuid.UUID
) -> bool:
    """Whether users of other organizations have addresses in ``domain`` (operators only)."""
    used = await session.scalar(
        sa.select(sa.func.prism_domain_used_elsewhere(domain, organization_id))
    )
    return bool(used)
