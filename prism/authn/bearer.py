"""Who a bearer credential is: an access token (JWT of a signed-in session) or an API token,
turned into the ``Principal`` the policy decides for."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prism.authn.cache import CredentialCache, Verified
from prism.authn.secrets import AccessTokens, api_token_well_formed, token_digest
from prism.authz.principal import Principal
from prism.db.engine import Database
from prism.errors import Unauthenticated
from prism.models import users as user_models
from prism.models.enums import Classification, Role
from prism.models.users import ApiToken, User


async def authenticate_bearer(
    db: Database, access: AccessTokens, bearer: str, cache: CredentialCache | None = None
) -> Principal:
    """The principal behind an ``Authorization: Bearer`` value, or Unauthenticated. With a
    ``cache``, a credential verified moments ago is not looked up again (``CredentialCache``
    says when that is safe)."""
    if bearer.startswith("prism_pat_"):
        if not api_token_well_formed(bearer):
            raise Unauthenticated("The API token is malformed.")
        digest = token_digest(bearer)
        if cache is None:
            return (await _principal_of_api_token(db, digest)).principal
        return await cache.principal(b"t" + digest, lambda: _principal_of_api_token(db, digest))
    claims = access.verify(bearer)

    async def verify() -> Verified:
        async with db.transaction(claims.organization_id) as session:
            # The session the token was issued in must still be open: signing out (or a
            # replayed refresh token) ends its access tokens on the next request, not at
            # expiry.
            user = await user_models.user_of_live_session(
                session, claims.user_id, claims.session_id
            )
            if user is None or not user.is_active:
                raise Unauthenticated("The access token is invalid or has expired.")
            return Verified(_principal_of_user(user), user.access_expires_at)

    if cache is None:
        return (await verify()).principal
    key = b"s" + claims.user_id.bytes + claims.session_id.bytes
    return await cache.principal(key, verify)


def _principal_of_user(
    user: User, scopes: frozenset[str] | None = None, token_id: uuid.UUID | None = None
) -> Principal:
    if user.access_expires_at is not None and user.access_expires_at <= datetime.now(UTC):
        raise Unauthenticated("Access has expired.")
    return principal_for(user, scopes, token_id)


def principal_for(
    user: User, scopes: frozenset[str] | None = None, token_id: uuid.UUID | None = None
) -> Principal:
    """The principal a user (or a token acting for them) is, expired or not."""
    return Principal(
        organization_id=user.organization_id,
        user_id=user.id,
        api_token_id=token_id,
        role=user.role,
        clearance=user.clearance,
        department=user.department,
        scopes=scopes,
        access_expires_at=user.access_expires_at,
    )


async def _principal_of_api_token(db: Database, digest: bytes) -> Verified:
    """One statement (a SECURITY DEFINER function: the organization is not known yet)."""
    found = await user_models.authenticate_api_token(db.engine, digest)
    if found is None:
        raise Unauthenticated("The API token is invalid, expired or revoked.")
    scopes = frozenset(found.scopes)
    if found.user_id is None:
        return Verified(
            Principal(
                organization_id=found.organization_id,
                user_id=None,
                api_token_id=found.token_id,
                role=Role(found.token_role),
                clearance=Classification(found.token_clearance),
                department=found.token_department,
                scopes=scopes,
            ),
            found.token_expires_at,
        )
    if not found.user_active:
        raise Unauthenticated("The API token's user is no longer active.")
    expires = found.user_access_expires_at
    if expires is not None and expires <= datetime.now(UTC):
        raise Unauthenticated("Access has expired.")
    # A token bound to a user acts with that user's current rights.
    principal = Principal(
        organization_id=found.organization_id,
        user_id=found.user_id,
        api_token_id=found.token_id,
        role=Role(found.user_role),
        clearance=Classification(found.user_clearance),
        department=found.user_department,
        scopes=scopes,
        access_expires_at=expires,
    )
    ends = [moment for moment in (expires, found.token_expires_at) if moment is not None]
    return Verified(principal, min(ends) if ends else None)


def service_principal(token: ApiToken) -> Principal:
    """An unbound (service) token: its own role, clearance and department."""
    return Principal(
        organization_id=token.organization_id,
        user_id=None,
        api_token_id=token.id,
        role=token.role,
        clearance=token.clearance,
        department=token.department,
        scopes=frozenset(token.scopes),
    )
