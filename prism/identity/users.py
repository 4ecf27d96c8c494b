"""Users: created by an ADMIN (in the organization's own domain) or by an operator, and
changed by an ADMIN; each change audited in its own transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authz.policy import Action, check_clearance, require
from prism.authz.principal import Principal
from prism.errors import BadUserInput, Conflict, NotFound, not_found
from prism.identity.organizations import check_address_owner, normalize_email
from prism.models import users as user_models
from prism.models.enums import Classification, Role
from prism.models.users import User
from prism.services import Services


def user_snapshot(user: User) -> dict[str, Any]:
    """What audit events record of a user (never the password hash)."""
    return {
        "email": user.email,
        "role": user.role.value,
        "clearance": user.clearance.value,
        "department": user.department,
        "accessExpiresAt": user.access_expires_at.isoformat() if user.access_expires_at else None,
        "isActive": user.is_active,
    }


def check_profile(**fields: str | None) -> None:
    for name, value in fields.items():
        if value is not None and (len(value) > 100 or "\x00" in value):
            raise BadUserInput(f"`{name}` is at most 100 characters of text.", argument=name)


async def create_user(
    session: AsyncSession,
    principal: Principal | None,
    meta: RequestMeta,
    *,
    organization_id: uuid.UUID,
    email: str,
    password_hash: str,
    role: Role,
    clearance: Classification | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    department: str | None = None,
    access_expires_at: datetime | None = None,
) -> User:
    """Create a user. ``principal`` is None only for operator commands (CLI, demo); the
    password is hashed by the caller before the transaction (see ``Passwords.hash_async``)."""
    if principal is not None:
        require(principal, Action.USER_CREATE)
    email = normalize_email(email)
    # Before anything else is looked at: an address outside the caller's domain is refused
    # the same way whether or not it exists anywhere.
    await check_address_owner(session, principal, organization_id, email)
    check_profile(firstName=first_name, lastName=last_name, department=department)
    check_clearance(principal, clearance or Classification.INTERNAL)
    # Inside the organization's own domain, the only holder can be this organization.
    if await user_models.email_in_use(session, email):
        raise Conflict("A user with this e-mail address already exists.")
    try:
        async with session.begin_nested():
            user = await user_models.create_user(
                session,
                organization_id=organization_id,
                email=email,
                password_hash=password_hash,
                role=role,
                clearance=clearance or Classification.INTERNAL,
                first_name=first_name,
                last_name=last_name,
                department=department,
                access_expires_at=access_expires_at,
            )
    except IntegrityError as exc:  # a concurrent sign-up with the same address
        raise Conflict("A user with this e-mail address already exists.") from exc
    await audit.record(
        session,
        principal,
        meta,
        organization_id=organization_id,
        event_type="user.create",
        category="user_management",
        description=f"User {user.email} created as {user.role.value}",
        resource_type="User",
        resource_id=user.id,
        after=user_snapshot(user),
    )
    return user


async def locked_user(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID | None
) -> User:
    """A user of the caller's organization, row-locked for the change; NOT_FOUND when there
    is none (or no user id: a service token is nobody)."""
    user = None
    if user_id is not None:
        user = await user_models.lock_user(session, principal.organization_id, user_id)
    if user is None:
        raise not_found("User")
    return user


async def update_user(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    *,
    user_id: uuid.UUID,
    changes: dict[str, Any],
) -> User:
    """Apply ``changes`` (role, department, clearance, access_expires_at) to a user."""
    require(principal, Action.USER_UPDATE)
    user = await locked_user(session, principal, user_id)
    if user.id == principal.user_id and changes.get("role", Role.ADMIN) is not Role.ADMIN:
        raise BadUserInput("An ADMIN cannot remove their own ADMIN role.", argument="role")
    check_profile(department=changes.get("department"))
    check_clearance(principal, changes.get("clearance"))
    before = user_snapshot(user)
    for field, value in changes.items():
        setattr(user, field, value)
    await session.flush()
    await audit.record(
        session,
        principal,
        meta,
        event_type="user.update",
        category="user_management",
        description=f"User {user.email} updated",
        resource_type="User",
        resource_id=user.id,
        before=before,
        after=user_snapshot(user),
    )
    return user


# --- operators -------------------------------------------------------------------------------


async def add_user(
    services: Services,
    meta: RequestMeta,
    organization_id: uuid.UUID,
    *,
    email: str,
    password: str,
    role: Role,
    clearance: Classification | None = None,
    department: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
) -> User:
    """An operator (CLI, demo) adds a user: the password hashed first, then ``create_user``
    with no principal in a transaction of the organization."""
    password_hash = await services.passwords.hash_async(password)
    async with services.db.transaction(organization_id) as session:
        return await create_user(
            session,
            None,
            meta,
            organization_id=organization_id,
            email=email,
            password_hash=password_hash,
            role=role,
            clearance=clearance,
            department=department,
            first_name=first_name,
            last_name=last_name,
        )


async def user_by_email(services: Services, organization_id: uuid.UUID, email: str) -> User:
    """A user by any spelling of its address (``prism.models.addresses``)."""
    async with services.db.transaction(organization_id) as session:
        user = await user_models.read_user_by_email(session, organization_id, email)
    if user is None:
        raise NotFound(f"No user {email!r} in that organization.")
    return user
