"""API tokens: a partner's or an automation's credential, bound to a user (acting with that
user's current rights) or a service token with its own role; listed, issued and revoked
here, each change audited in its transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authn.secrets import new_api_token, public_prefix, token_digest
from prism.authz.policy import Action, Resource, check_clearance, may_read_token, require
from prism.authz.principal import SCOPES, Principal
from prism.errors import BadUserInput, Forbidden, NotFound, not_found
from prism.models import users as user_models
from prism.models.enums import Classification, Role
from prism.models.users import ApiToken
from prism.services import Services


def validate_scopes(scopes: list[str], principal: Principal) -> list[str]:
    unknown = sorted(set(scopes) - SCOPES)
    if not scopes or unknown:
        raise BadUserInput(
            f"Unknown or missing scopes: {', '.join(unknown) or '(none given)'}. "
            f"Known scopes: {', '.join(sorted(SCOPES))}.",
            argument="scopes",
        )
    wider = sorted(set(scopes) - principal.granted_scopes)
    if wider:
        raise BadUserInput(
            f"A token cannot grant scopes its creator lacks: {', '.join(wider)}.", argument="scopes"
        )
    return sorted(set(scopes))


async def list_api_tokens(session: AsyncSession, principal: Principal) -> list[ApiToken]:
    """The caller's own tokens, or all of the organization's for who may read them all."""
    all_of_them = may_read_token(principal, None, None)
    rows = await user_models.read_api_tokens(
        session,
        organization_id=principal.organization_id,
        user_id=None if all_of_them else principal.user_id,
    )
    if not all_of_them and principal.user_id is None:
        rows = [r for r in rows if r.id == principal.api_token_id]
    return rows


async def create_api_token(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
) -> tuple[str, ApiToken]:
    """A token bound to the calling user (or, for an operator's principal, one with its
    role). A service token may not issue tokens: a copy would outlive its revocation (service
    tokens are made by an ADMIN, signed in: ``create_service_token``)."""
    require(principal, Action.TOKEN_CREATE)
    if principal.user_id is None and principal.api_token_id is not None:
        raise Forbidden(
            "A service token cannot issue tokens: an ADMIN issues service tokens from a "
            "signed-in session (createServiceToken)."
        )
    return await _issue(
        session,
        principal,
        meta,
        ApiToken(
            organization_id=principal.organization_id,
            user_id=principal.user_id,
            role=principal.role,
            clearance=principal.clearance,
            department=principal.department,
            scopes=validate_scopes(scopes, principal),
        ),
        name=name,
        expires_at=expires_at,
    )


async def create_service_token(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    *,
    name: str,
    role: Role,
    clearance: Classification,
    department: str | None,
    scopes: list[str],
    expires_at: datetime | None,
) -> tuple[str, ApiToken]:
    """A token that belongs to the organization, not to a person (a partner's integration):
    it keeps working when whoever made it leaves or is erased, with its own role, clearance
    and department, never above the ADMIN's who makes it (signed in, not with a token)."""
    require(principal, Action.TOKEN_CREATE_SERVICE)
    check_clearance(principal, clearance)
    if department is not None:
        department = department.strip()
        if not 1 <= len(department) <= 100:
            raise BadUserInput("A department is 1 to 100 characters.", argument="department")
    return await _issue(
        session,
        principal,
        meta,
        ApiToken(
            organization_id=principal.organization_id,
            user_id=None,
            role=role,
            clearance=clearance,
            department=department,
            scopes=validate_scopes(scopes, principal),
        ),
        name=name,
        expires_at=expires_at,
    )


async def _issue(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    token: ApiToken,
    *,
    name: str,
    expires_at: datetime | None,
) -> tuple[str, ApiToken]:
    """Store ``token`` (its owner, rights and scopes decided) under a new secret, audited."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise BadUserInput("A token name is 1 to 100 characters.", argument="name")
    if expires_at is not None and expires_at.tzinfo is None:
        raise BadUserInput("`expiresAt` needs a UTC offset.", argument="expiresAt")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise BadUserInput("`expiresAt` must be in the future.", argument="expiresAt")
    secret = new_api_token()
    token.name = name
    token.prefix = public_prefix(secret)
    token.token_hash = token_digest(secret)
    token.expires_at = expires_at
    token.created_by = principal.user_id
    token = await user_models.create_api_token(session, token)
    after: dict[str, object] = {
        "name": token.name,
        "prefix": token.prefix,
        "scopes": token.scopes,
        "expiresAt": expires_at.isoformat() if expires_at else None,
    }
    if token.user_id is None:
        after |= {
            "service": True,
            "role": token.role.value,
            "clearance": token.clearance.value,
            "department": token.department,
        }
    await audit.record(
        session,
        principal,
        meta,
        event_type="token.create",
        category="security",
        description=f"API token {token.name!r} ({token.prefix}…) created",
        resource_type="ApiToken",
        resource_id=token.id,
        after=after,
    )
    return secret, token


async def revoke_api_token(
    session: AsyncSession, principal: Principal, meta: RequestMeta, *, token_id: uuid.UUID
) -> ApiToken:
    token = await user_models.lock_api_token(session, principal.organization_id, token_id)
    if token is None or not may_read_token(principal, token.user_id, token.created_by):
        raise not_found("ApiToken")
    owner = token.user_id or token.created_by
    require(
        principal,
        Action.TOKEN_REVOKE,
        Resource(organization_id=token.organization_id, kind="ApiToken", owner_id=owner),
    )
    if token.revoked_at is None:
        await user_models.revoke_api_token(session, token)
        await audit.record(
            session,
            principal,
            meta,
            event_type="token.revoke",
            category="security",
            description=f"API token {token.name!r} ({token.prefix}…) revoked",
            resource_type="ApiToken",
            resource_id=token.id,
        )
    return token


# --- operators -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedToken:
    secret: str
    token: ApiToken


async def create_token(
    services: Services,
    meta: RequestMeta,
    organization_id: uuid.UUID,
    *,
    name: str,
    scopes: list[str],
    user_email: str | None = None,
    role: Role = Role.VIEWER,
    clearance: Classification = Classification.INTERNAL,
    expires_in_days: int | None = None,
) -> CreatedToken:
    """An operator (CLI, demo) issues a token bound to ``user_email`` (acting with that
    user's rights) or a service token with its own role and clearance."""
    if user_email is not None:
        async with services.db.transaction(organization_id) as session:
            user = await user_models.read_user_by_email(session, organization_id, user_email)
        if user is None:
            raise NotFound(f"No user {user_email!r} in that organization.")
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
        secret, token = await create_api_token(
            session, creator, meta, name=name, scopes=scopes, expires_at=expires_at
        )
    return CreatedToken(secret=secret, token=token)
