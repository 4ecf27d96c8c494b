"""People, their API tokens and their refresh sessions (the identity aggregate)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.addresses import canonical_email
from prism.models.base import Base, among, created_at, enum_column, org_fk, pk, updated_at, utcnow
from prism.models.enums import Classification, Role
from prism.models.pagination import Page, PageRequest, keyset_page


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    email: Mapped[str] = mapped_column(sa.String(320), nullable=False)
    password_hash: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    first_name: Mapped[str | None] = mapped_column(sa.String(100))
    last_name: Mapped[str | None] = mapped_column(sa.String(100))
    role: Mapped[Role] = enum_column(Role, nullable=False)
    department: Mapped[str | None] = mapped_column(sa.String(100))
    clearance: Mapped[Classification] = enum_column(
        Classification, nullable=False, default=Classification.INTERNAL
    )
    is_active: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    mfa_enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    # The TOTP secret, sealed (AES-GCM); set at enrolment, in use once mfa_enabled is true.
    mfa_secret: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    # The last TOTP time step accepted: a code of that step or an earlier one is a replay.
    mfa_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)
    access_expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # Set by eraseUser: the row stays as a pseudonym that other rows (audit, feedback) name.
    erased_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()

    __table_args__ = (
        # Sign-in is by e-mail alone, so an address names one person across all organizations.
        sa.Index("uq_users_email", sa.func.lower(sa.column("email")), unique=True),
        sa.Index("ix_users_organization_id_created_at", "organization_id", "created_at", "id"),
    )


class ApiToken(Base):
    """A partner or automation credential: only a hash and a short public prefix are stored."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    # Tokens bound to a user act with that user's current role, clearance and department.
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE")
    )
    # Unbound (service) tokens carry their own role and clearance.
    role: Mapped[Role] = enum_column(Role, nullable=False, default=Role.VIEWER)
    clearance: Mapped[Classification] = enum_column(
        Classification, nullable=False, default=Classification.INTERNAL
    )
    department: Mapped[str | None] = mapped_column(sa.String(100))
    name: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    prefix: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    token_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32), nullable=False)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(sa.String(40)), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        sa.UniqueConstraint("token_hash"),
        sa.Index("ix_api_tokens_organization_id_created_at", "organization_id", "created_at"),
    )


class RefreshSession(Base):
    """A refresh token (hash only). Each use rotates it; the family links the rotations so a
    replayed old token can revoke them all."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    family_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    token_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    rotated_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    ip_address: Mapped[str | None] = mapped_column(sa.String(64))
    user_agent: Mapped[str | None] = mapped_column(sa.String(512))
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        sa.UniqueConstraint("token_hash"),
        sa.Index("ix_sessions_family_id", "family_id"),
        sa.Index("ix_sessions_user_id", "user_id"),
    )


class MfaBackupCode(Base):
    """A one-time code for when the authenticator is lost: only a keyed hash is stored."""

    __tablename__ = "mfa_backup_codes"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    code_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (sa.UniqueConstraint("user_id", "code_hash"),)


class PasswordReset(Base):
    """A password reset token sent by e-mail (its sha256 only): it works once, until
    ``expires_at``; using one voids the user's other outstanding ones."""

    __tablename__ = "password_resets"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    token_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    # Set when the token is used, or voided by another of the user's tokens being used.
    used_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        sa.UniqueConstraint("token_hash"),
        sa.Index("ix_password_resets_user_id", "user_id"),
    )


# --- users -------------------------------------------------------------------------------


async def read_users_by_ids(
    session: AsyncSession,
    organization_id: uuid.UUID,
    ids: Sequence[uuid.UUID],
    *,
    for_update: bool = False,
) -> list[User]:
    if not ids:
        return []
    query = sa.select(User).where(User.organization_id == organization_id, among(User.id, ids))
    if for_update:
        query = query.with_for_update()
    return list(await session.scalars(query))


async def read_users(
    session: AsyncSession, *, organization_id: uuid.UUID, page: PageRequest
) -> Page[User]:
    query = sa.select(User).where(User.organization_id == organization_id)
    return await keyset_page(session, query, (User.created_at, User.id), page)


async def create_user(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    email: str,
    password_hash: str,
    role: Role,
    clearance: Classification,
    first_name: str | None = None,
    last_name: str | None = None,
    department: str | None = None,
    access_expires_at: datetime | None = None,
) -> User:
    user = User(
        organization_id=organization_id,
        email=email,
        password_hash=password_hash,
        role=role,
        clearance=clearance,
        first_name=first_name,
        last_name=last_name,
        department=department,
        access_expires_at=access_expires_at,
    )
    session.add(user)
    await session.flush()
    return user


async def lock_user(
    session: AsyncSession, organization_id: uuid.UUID, user_id: uuid.UUID
) -> User | None:
    """The user, row-locked until the transaction ends (None: not in this organization)."""
    query = (
        sa.select(User)
        .where(User.id == user_id, User.organization_id == organization_id)
        .with_for_update()
    )
    found: User | None = (await session.scalars(query)).one_or_none()
    return found


async def share_lock_user_state(
    session: AsyncSession, organization_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[bool, datetime | None] | None:
    """Whether the user is active and when they were erased, their row share-locked until the
    transaction ends (None: not in this organization)."""
    row = (
        await session.execute(
            sa.select(User.is_active, User.erased_at)
            .where(User.organization_id == organization_id, User.id == user_id)
            .with_for_update(read=True)
        )
    ).one_or_none()
    return None if row is None else (row.is_active, row.erased_at)


async def user_of_live_session(
    session: AsyncSession, user_id: uuid.UUID, family_id: uuid.UUID
) -> User | None:
    """The user, if the sign-in session ``family_id`` is still open (not signed out, not
    revoked; its latest refresh token may have expired: access tokens are shorter-lived)."""
    live = (
        sa.select(RefreshSession.id)
        .where(
            RefreshSession.family_id == family_id,
            RefreshSession.user_id == user_id,
            RefreshSession.revoked_at.is_(None),
        )
        .exists()
    )
    found: User | None = await session.scalar(sa.select(User).where(User.id == user_id, live))
    return found


async def email_in_use(session: AsyncSession, email: str) -> bool:
    """True when any organization has this address (checked through a narrow function, as
    RLS hides other organizations' users)."""
    used = await session.scalar(sa.select(sa.func.prism_email_in_use(email)))
    return bool(used)


async def read_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The user (RLS: of the transaction's organization)."""
    return await session.get(User, user_id)


async def read_user_by_email(
    session: AsyncSession, organization_id: uuid.UUID, email: str
) -> User | None:
    """A user of the organization by any spelling of its address (``addresses``)."""
    address = canonical_email(email) or email.strip()
    found: User | None = await session.scalar(
        sa.select(User).where(
            User.organization_id == organization_id,
            sa.func.lower(User.email) == address.lower(),
        )
    )
    return found


async def login_lookup(session: AsyncSession, email: str) -> sa.Row[Any] | None:
    """(user_id, organization_id, password_hash) of an address, before the organization is
    known (a narrow SECURITY DEFINER function)."""
    return (
        await session.execute(
            sa.select(
                sa.column("user_id"), sa.column("organization_id"), sa.column("password_hash")
            ).select_from(
                sa.func.prism_login_lookup(email).table_valued(
                    "user_id", "organization_id", "password_hash"
                )
            )
        )
    ).first()


async def mark_login(session: AsyncSession, user: User) -> None:
    user.last_login_at = utcnow()
    await session.flush()


# --- API tokens ----------------------------------------------------------------------------


async def authenticate_api_token(engine: AsyncEngine, token_hash: bytes) -> sa.Row[Any] | None:
    """The token with this hash (live: not revoked, not expired) and its user's rights, in one
    statement on a connection of its own (see migration 0009)."""
    columns = (
        "token_id",
        "organization_id",
        "scopes",
        "token_role",
        "token_clearance",
        "token_department",
        "user_id",
        "user_active",
        "user_role",
        "user_clearance",
        "user_department",
        "user_access_expires_at",
        "token_expires_at",
    )
    query = sa.select(*(sa.column(c) for c in columns)).select_from(
        sa.func.prism_authenticate_api_token(token_hash).table_valued(*columns)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
        await conn.commit()
    return row


async def read_api_tokens(
    session: AsyncSession, *, organization_id: uuid.UUID, user_id: uuid.UUID | None
) -> list[ApiToken]:
    """Tokens of the organization, or only those bound to or created by ``user_id``."""
    query = sa.select(ApiToken).where(ApiToken.organization_id == organization_id)
    if user_id is not None:
        query = query.where(sa.or_(ApiToken.user_id == user_id, ApiToken.created_by == user_id))
    result = await session.scalars(query.order_by(ApiToken.created_at.desc(), ApiToken.id))
    return list(result)


async def revoke_personal_api_tokens(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Revoke every live token bound to the user (not the service tokens they made, which
    belong to the organization); how many."""
    revoked = await session.execute(
        sa.update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(ApiToken.id)
    )
    return len(revoked.all())


async def read_api_tokens_by_ids(
    session: AsyncSession, organization_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> list[ApiToken]:
    if not ids:
        return []
    query = sa.select(ApiToken).where(
        ApiToken.organization_id == organization_id, among(ApiToken.id, ids)
    )
    return list(await session.scalars(query))


async def read_live_api_tokens_named(
    session: AsyncSession, user_id: uuid.UUID, name: str
) -> list[ApiToken]:
    """The tokens bound to ``user_id`` called ``name`` that are not revoked."""
    query = sa.select(ApiToken).where(
        ApiToken.user_id == user_id,
        ApiToken.name == name,
        ApiToken.revoked_at.is_(None),
    )
    return list(await session.scalars(query))


async def create_api_token(session: AsyncSession, token: ApiToken) -> ApiToken:
    session.add(token)
    await session.flush()
    return token


async def lock_api_token(
    session: AsyncSession, organization_id: uuid.UUID, token_id: uuid.UUID
) -> ApiToken | None:
    """The token, row-locked until the transaction ends (None: not in this organization)."""
    found: ApiToken | None = (
        await session.scalars(
            sa.select(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.organization_id == organization_id)
            .with_for_update()
        )
    ).one_or_none()
    return found


async def revoke_api_token(session: AsyncSession, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        await session.flush()
    return token


# --- refresh sessions ------------------------------------------------------------------------


async def create_refresh_session(session: AsyncSession, row: RefreshSession) -> RefreshSession:
    session.add(row)
    await session.flush()
    return row


async def refresh_lookup(session: AsyncSession, token_hash: bytes) -> sa.Row[Any] | None:
    """(session_id, organization_id) of a refresh token's hash, before the organization is
    known (a narrow SECURITY DEFINER function)."""
    return (
        await session.execute(
            sa.select(sa.column("session_id"), sa.column("organization_id")).select_from(
                sa.func.prism_refresh_lookup(token_hash).table_valued(
                    "session_id", "organization_id"
                )
            )
        )
    ).first()


async def lock_refresh_session(
    session: AsyncSession, session_id: uuid.UUID
) -> RefreshSession | None:
    """The refresh session, row-locked until the transaction ends."""
    return await session.get(RefreshSession, session_id, with_for_update=True)


async def revoke_session_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        sa.update(RefreshSession)
        .where(RefreshSession.family_id == family_id, RefreshSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_user_sessions(
    session: AsyncSession, user_id: uuid.UUID, *, keep_family: uuid.UUID | None = None
) -> int:
    """End every open session of the user, but the family ``keep_family``; returns how many
    families were ended. Their access tokens stop working on their next request (the
    credential cache hears it: migration 0017)."""
    ended = await session.scalars(
        sa.update(RefreshSession)
        .where(
            RefreshSession.user_id == user_id,
            RefreshSession.revoked_at.is_(None),
            *([RefreshSession.family_id != keep_family] if keep_family is not None else []),
        )
        .values(revoked_at=utcnow())
        .returning(RefreshSession.family_id)
    )
    return len(set(ended))


# --- password resets -------------------------------------------------------------------------


async def create_password_reset(session: AsyncSession, row: PasswordReset) -> PasswordReset:
    """Store a new reset token; the user's used and expired ones are deleted on the way."""
    await session.execute(
        sa.delete(PasswordReset).where(
            PasswordReset.user_id == row.user_id,
            sa.or_(PasswordReset.used_at.is_not(None), PasswordReset.expires_at <= sa.func.now()),
        )
    )
    session.add(row)
    await session.flush()
    return row


async def password_reset_lookup(session: AsyncSession, token_hash: bytes) -> sa.Row[Any] | None:
    """(reset_id, organization_id) of a reset token's hash that is neither used nor expired,
    before the organization is known (a narrow SECURITY DEFINER function, migration 0019)."""
    return (
        await session.execute(
            sa.select(sa.column("reset_id"), sa.column("organization_id")).select_from(
                sa.func.prism_password_reset_lookup(token_hash).table_valued(
                    "reset_id", "organization_id"
                )
            )
        )
    ).first()


async def lock_password_reset(session: AsyncSession, reset_id: uuid.UUID) -> PasswordReset | None:
    """The reset token, row-locked until the transaction ends."""
    return await session.get(PasswordReset, reset_id, with_for_update=True)


async def use_password_resets(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Mark every outstanding reset token of the user used (one was)."""
    await session.execute(
        sa.update(PasswordReset)
        .where(PasswordReset.user_id == user_id, PasswordReset.used_at.is_(None))
        .values(used_at=utcnow())
    )


# --- MFA -----------------------------------------------------------------------------------


async def accept_totp_step(session: AsyncSession, user_id: uuid.UUID, step: int) -> bool:
    """Record ``step`` as used; False when it (or a later one) already was: a replay. One
    statement, so two requests racing with the same code cannot both win."""
    accepted = await session.scalar(
        sa.update(User)
        .where(
            User.id == user_id,
            sa.or_(User.mfa_last_step.is_(None), User.mfa_last_step < step),
        )
        .values(mfa_last_step=step)
        .returning(User.id)
    )
    return accepted is not None


async def replace_backup_codes(
    session: AsyncSession, user: User, code_hashes: Sequence[bytes]
) -> None:
    await session.execute(sa.delete(MfaBackupCode).where(MfaBackupCode.user_id == user.id))
    session.add_all(
        MfaBackupCode(organization_id=user.organization_id, user_id=user.id, code_hash=h)
        for h in code_hashes
    )
    await session.flush()


async def use_backup_code(session: AsyncSession, user_id: uuid.UUID, code_hash: bytes) -> bool:
    """Spend a backup code; False when it is unknown or already spent."""
    spent = await session.scalar(
        sa.update(MfaBackupCode)
        .where(
            MfaBackupCode.user_id == user_id,
            MfaBackupCode.code_hash == code_hash,
            MfaBackupCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .returning(MfaBackupCode.id)
    )
    return spent is not None


async def unused_backup_codes(session: AsyncSession, user_id: uuid.UUID) -> int:
    count = await session.scalar(
        sa.select(sa.func.count())
        .select_from(MfaBackupCode)
        .where(MfaBackupCode.user_id == user_id, MfaBackupCode.used_at.is_(None))
    )
    return int(count or 0)
