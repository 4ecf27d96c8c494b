"""Operator commands (CLI, demo): the same identity and model functions the API uses, run
without a request principal, each in its own organization-bound transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from prism.authz import identity
from prism.authz.principal import SCOPES, Principal
from prism.errors import BadUserInput, Conflict, NotFound
from prism.models import organizations as org_models
from prism.models.addresses import canonical_email
from prism.models.audit import Actor, RequestMeta, record_event
from prism.models.enums import Classification, Role
from prism.models.organizations import Organization
from prism.models.users import ApiToken, User
from prism.services import Services

CLI = RequestMeta(user_agent="prism-cli")


async def find_organization(services: Services, ref: str) -> uuid.UUID:
    """An organization by id or (case-insensitive) name."""
    async with services.db.transaction(None) as session:
        found = await session.scalar(sa.select(sa.func.prism_find_organization(ref)))
    if found is None:
        raise NotFound(f"No organization {ref!r}.")
    return uuid.UUID(str(found))


async def _check_domain_free(session: AsyncSession, domain: str, org_id: uuid.UUID) -> None:
    """An organization's domain is its own: no other organization owns it or has users in it
    (what keeps an ADMIN's createUser from learning anything about other organizations)."""
    owner = await org_models.domain_owner(session, domain)
    if owner is not None and owner != org_id:
        raise Conflict(f"{domain} is the e-mail domain of another organization.")
    if await org_models.domain_used_elsewhere(session, domain, org_id):
        raise Conflict(
            f"Users of other organizations have addresses in {domain}: it cannot become "
            "this organization's domain until they are moved or erased."
        )


async def create_organization(
    services: Services, name: str, *, domain: str | None = None, tier: str = "standard"
) -> Organization:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise BadUserInput("An organization name is 1 to 200 characters.")
    domain = identity.normalize_domain(domain) if domain is not None else None
    org_id = uuid.uuid4()
    async with services.db.transaction(None) as session:
        if await session.scalar(sa.select(sa.func.prism_find_organization(name))) is not None:
            raise Conflict(f"An organization named {name!r} exists already.")
        if domain is not None:
            await _check_domain_free(session, domain, org_id)
    async with services.db.transaction(org_id) as session:
        try:
            async with session.begin_nested():
                org = await org_models.create_organization(
                    session,
                    organization_id=org_id,
                    name=name,
                    domain=domain,
                    subscription_tier=tier,
                )
        except IntegrityError as exc:  # a concurrent claim of the same name or domain
            raise Conflict("That organization name or domain was taken meanwhile.") from exc
        await record_event(
            session,
            organization_id=org_id,
            actor=Actor(),
            event_type="organization.create",
            category="administration",
            description=f"Organization {name!r} created",
            resource_type="Organization",
            resource_id=org_id,
            after={"name": name},
            meta=CLI,
        )
    return org


async def set_domain(services: Services, organization_id: uuid.UUID, domain: str) -> Organization:
    """Give an organization its e-mail domain (after checking, outside Prism, that it holds
    it): its ADMINs then create users in it, and nobody else can."""
    domain = identity.normalize_domain(domain)
    async with services.db.transaction(organization_id) as session:
        await _check_domain_free(session, domain, organization_id)
        org = await session.get(Organization, organization_id, with_for_update=True)
        if org is None:
            raise NotFound("No such organization.")
        before = org.domain
        try:
            async with session.begin_nested():
                org.domain = domain
                await session.flush()
        except IntegrityError as exc:
            raise Conflict(f"{domain} was claimed by another organization meanwhile.") from exc
        await record_event(
            session,
            organization_id=organization_id,
            actor=Actor(),
            event_type="organization.domain",
            category="administration",
            description=f"E-mail domain set to {domain}",
            resource_type="Organization",
            resource_id=organization_id,
            before={"domain": before},
            after={"domain": domain},
            meta=CLI,
        )
    return org


async def create_user(
    services: Services,
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
    password_hash = await services.passwords.hash_async(password)
    async with services.db.transaction(organization_id) as session:
        return await identity.create_user(
            session,
            None,
            organization_id=organization_id,
            email=email,
            password_hash=password_hash,
            role=role,
            clearance=clearance,
            department=department,
            first_name=first_name,
            last_name=last_name,
            meta=CLI,
        )


async def user_by_email(services: Services, organization_id: uuid.UUID, email: str) -> User:
    """A user by any spelling of its address (``prism.models.addresses``)."""
    address = canonical_email(email) or email.strip()
    async with services.db.transaction(organization_id) as session:
        user = await session.scalar(
            sa.select(User).where(
                User.organization_id == organization_id,
                sa.func.lower(User.email) == address.lower(),
            )
        )
    if user is None:
        raise NotFound(f"No user {email!r} in that organization.")
    return user


@dataclass(frozen=True)
class CreatedToken:
    secret: str
    token: ApiToken


async def create_token(
    services: Services,
    organization_id: uuid.UUID,
    *,
    name: str,
    scopes: list[str],
    user_email: str | None = None,
    role: Role = Role.VIEWER,
    clearance: Classification = Classification.INTERNAL,
    expires_in_days: int | None = None,
) -> CreatedToken:
    """A token bound to ``user_email`` (acting with that user's rights) or a service token
    with its own role and clearance."""
    if user_email is not None:
        user = await user_by_email(services, organization_id, user_email)
        creator = Principal(
            organization_id=organization_id,
            user_id=user.id,
            api_token_id=None,
            role=user.role,
            clearance=user.clearance,
            department=user.department,
            scopes=None,
        )
    else:
        creator = Principal(
            organization_id=organization_id,
            user_id=None,
            api_token_id=None,
            role=role,
            clearance=clearance,
            department=None,
            scopes=SCOPES,
        )
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    async with services.db.transaction(organization_id) as session:
        secret, token = await identity.create_api_token(
            session, creator, name=name, scopes=scopes, expires_at=expires_at, meta=CLI
        )
    return CreatedToken(secret=secret, token=token)
