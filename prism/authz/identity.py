"""Sign-in, refresh, sign-out, API tokens and user management: the identity operations.

Each takes the caller's session (one transaction) and writes its audit event in it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from prism.authn import throttle
from prism.authn.mfa import verify_second_factor
from prism.authn.secrets import (
    AccessTokens,
    Passwords,
    SecretBox,
    api_token_well_formed,
    new_api_token,
    new_refresh_token,
    public_prefix,
    token_digest,
)
from prism.authz.policy import Action, Resource, may_read_token, require
from prism.authz.principal import SCOPES, Principal
from prism.db.engine import Database
from prism.db.faults import retry_collisions
from prism.errors import BadUserInput, Conflict, Forbidden, Unauthenticated, not_found
from prism.models import organizations as org_models
from prism.models import users as user_models
from prism.models.addresses import canonical_domain, canonical_email
from prism.models.audit import Actor, RequestMeta, record_event
from prism.models.enums import Classification, Role
from prism.models.users import ApiToken, RefreshSession, User

_INVALID_LOGIN = "Invalid email or password."


def actor_of(principal: Principal | None) -> Actor:
    if principal is None:
        return Actor()
    return Actor(user_id=principal.user_id, api_token_id=principal.api_token_id)


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


# --- who is calling ------------------------------------------------------------------------


async def authenticate_bearer(db: Database, access: AccessTokens, bearer: str) -> Principal:
    """The principal behind an ``Authorization: Bearer`` value, or Unauthenticated."""
    if bearer.startswith("prism_pat_"):
        if not api_token_well_formed(bearer):
            raise Unauthenticated("The API token is malformed.")
        return await _principal_of_api_token(db, token_digest(bearer))
    claims = access.verify(bearer)
    async with db.transaction(claims.organization_id) as session:
        # The session the token was issued in must still be open: signing out (or a
        # replayed refresh token) ends its access tokens on the next request, not at expiry.
        user = await user_models.user_of_live_session(session, claims.user_id, claims.session_id)
        if user is None or not user.is_active:
            raise Unauthenticated("The access token is invalid or has expired.")
        return _principal_of_user(user)


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


async def _principal_of_api_token(db: Database, digest: bytes) -> Principal:
    """One statement (a SECURITY DEFINER function: the organization is not known yet)."""
    found = await user_models.authenticate_api_token(db.engine, digest)
    if found is None:
        raise Unauthenticated("The API token is invalid, expired or revoked.")
    scopes = frozenset(found.scopes)
    if found.user_id is None:
        return Principal(
            organization_id=found.organization_id,
            user_id=None,
            api_token_id=found.token_id,
            role=Role(found.token_role),
            clearance=Classification(found.token_clearance),
            department=found.token_department,
            scopes=scopes,
        )
    if not found.user_active:
        raise Unauthenticated("The API token's user is no longer active.")
    expires = found.user_access_expires_at
    if expires is not None and expires <= datetime.now(UTC):
        raise Unauthenticated("Access has expired.")
    # A token bound to a user acts with that user's current rights.
    return Principal(
        organization_id=found.organization_id,
        user_id=found.user_id,
        api_token_id=found.token_id,
        role=Role(found.user_role),
        clearance=Classification(found.user_clearance),
        department=found.user_department,
        scopes=scopes,
        access_expires_at=expires,
    )


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


# --- sessions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    user: User
    access_token: str
    refresh_token: str
    expires_at: datetime


async def login(
    db: Database,
    passwords: Passwords,
    access: AccessTokens,
    box: SecretBox,
    *,
    email: str,
    password: str,
    totp: str | None,
    meta: RequestMeta,
    refresh_ttl: timedelta,
) -> SignedIn:
    """Sign in. The attempt is counted first (``throttle``); the password is verified with no
    database connection held (argon2 is slow on purpose; holding a pooled connection through
    it would let a flood of sign-ins starve every other request); then the second factor, if
    the user has one, and the session, in a transaction of their own."""
    if "\x00" in email or len(email) > 320:
        raise Unauthenticated(_INVALID_LOGIN)
    # Every spelling of an address is that address: one account, one throttle bucket. What
    # is not an address at all goes the same way as an unknown one (it matches no row).
    email = canonical_email(email) or email.strip()
    keys = throttle.SignInKeys.of(box, email, meta.ip_address)
    await throttle.reserve(db, keys)
    async with db.transaction(None) as session:
        found: sa.Row[Any] | None = (
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
    # Verified even for an unknown address, so both failures take the same time.
    ok = await passwords.verify_async(found.password_hash if found else None, password)
    if found is None or not ok:
        raise Unauthenticated(_INVALID_LOGIN)
    rehashed = (
        await passwords.hash_async(password)
        if passwords.needs_rehash(found.password_hash)
        else None
    )

    async def start() -> SignedIn:
        async with db.transaction(found.organization_id, answers_client=True) as session:
            user = await session.get(User, found.user_id)
            if user is None or _expired(user):
                # Same answer as a wrong password: a right password must not be confirmed.
                raise Unauthenticated(_INVALID_LOGIN)
            if user.mfa_enabled:
                if not totp:
                    raise Unauthenticated(
                        "Enter the code from your authenticator app (or a backup code).",
                        mfaRequired=True,
                    )
                if not await verify_second_factor(session, box, user, totp):
                    raise Unauthenticated(
                        "The authentication code is invalid or was already used.",
                        mfaRequired=True,
                    )
            if rehashed is not None:
                user.password_hash = rehashed
            await user_models.mark_login(session, user)
            signed_in = await _start_session(session, access, user, meta, refresh_ttl, uuid.uuid4())
            await _auth_event(
                session,
                user.organization_id,
                user.id,
                "auth.login",
                f"{user.email} signed in",
                meta,
            )
        return signed_in

    # The session is the server's own bookkeeping: a collision with a concurrent writer of
    # the organization (a worker recording its events) is retried here, never the client's.
    signed_in = await retry_collisions(start, what="sign-in")
    await throttle.succeeded(db, keys)
    return signed_in


async def _auth_event(
    session: AsyncSession,
    organization_id: uuid.UUID,
    user_id: uuid.UUID,
    event_type: str,
    description: str,
    meta: RequestMeta,
) -> None:
    """A sign-in, refresh or sign-out event: by the user, about the user."""
    await record_event(
        session,
        organization_id=organization_id,
        actor=Actor(user_id=user_id),
        event_type=event_type,
        category="authentication",
        description=description,
        resource_type="User",
        resource_id=user_id,
        meta=meta,
    )


def _expired(user: User) -> bool:
    return user.access_expires_at is not None and user.access_expires_at <= datetime.now(UTC)


async def _start_session(
    session: AsyncSession,
    access: AccessTokens,
    user: User,
    meta: RequestMeta,
    ttl: timedelta,
    family_id: uuid.UUID,
) -> SignedIn:
    refresh = new_refresh_token()
    await user_models.create_refresh_session(
        session,
        RefreshSession(
            organization_id=user.organization_id,
            user_id=user.id,
            family_id=family_id,
            token_hash=token_digest(refresh),
            expires_at=datetime.now(UTC) + ttl,
            ip_address=meta.ip_address,
            user_agent=(meta.user_agent or "")[:512] or None,
        ),
    )
    token, expires_at = access.issue(user.id, user.organization_id, family_id)
    return SignedIn(user=user, access_token=token, refresh_token=refresh, expires_at=expires_at)


async def _find_refresh_session(
    db: Database, refresh_token: str
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(session id, organization id) of a refresh token, looked up before the organization
    is known."""
    async with db.transaction(None) as session:
        found: sa.Row[Any] | None = (
            await session.execute(
                sa.select(sa.column("session_id"), sa.column("organization_id")).select_from(
                    sa.func.prism_refresh_lookup(token_digest(refresh_token)).table_valued(
                        "session_id", "organization_id"
                    )
                )
            )
        ).first()
    return (found.session_id, found.organization_id) if found else None


async def refresh(
    db: Database,
    access: AccessTokens,
    *,
    refresh_token: str,
    meta: RequestMeta,
    refresh_ttl: timedelta,
) -> SignedIn:
    """Rotate a refresh token. A replay of an already rotated token means it was stolen (or
    the client is broken): the whole family is revoked, committed, and the call refused."""
    invalid = Unauthenticated("The refresh token is invalid or has expired.")
    found = await _find_refresh_session(db, refresh_token)
    if found is None:
        raise invalid
    session_id, organization_id = found

    async def rotate() -> SignedIn | None:
        async with db.transaction(organization_id, answers_client=True) as session:
            current = await session.get(RefreshSession, session_id, with_for_update=True)
            now = datetime.now(UTC)
            if current is None or current.expires_at <= now or current.revoked_at is not None:
                raise invalid
            if current.rotated_at is not None:
                await user_models.revoke_session_family(session, current.family_id)
                await _auth_event(
                    session,
                    organization_id,
                    current.user_id,
                    "auth.refresh_reused",
                    "A rotated refresh token was replayed; its session family is revoked",
                    meta,
                )
                return None
            user = await session.get(User, current.user_id)
            if user is None or not user.is_active or _expired(user):
                raise invalid
            current.rotated_at = now
            signed_in = await _start_session(
                session, access, user, meta, refresh_ttl, current.family_id
            )
            await _auth_event(
                session,
                organization_id,
                user.id,
                "auth.refresh",
                f"{user.email} refreshed a session",
                meta,
            )
            return signed_in

    signed_in = await retry_collisions(rotate, what="refresh")
    # Outside the transaction: the revocation above is committed before we refuse.
    if signed_in is None:
        raise invalid
    return signed_in


async def logout(db: Database, *, refresh_token: str, meta: RequestMeta) -> bool:
    found = await _find_refresh_session(db, refresh_token)
    if found is None:
        return False
    session_id, organization_id = found

    async def end() -> bool:
        async with db.transaction(organization_id, answers_client=True) as session:
            current = await session.get(RefreshSession, session_id, with_for_update=True)
            if current is None or current.revoked_at is not None:
                return False
            await user_models.revoke_session_family(session, current.family_id)
            await _auth_event(
                session, organization_id, current.user_id, "auth.logout", "Signed out", meta
            )
        return True

    return await retry_collisions(end, what="sign-out")


# --- API tokens ------------------------------------------------------------------------------


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


async def create_api_token(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
    meta: RequestMeta,
) -> tuple[str, ApiToken]:
    """A token bound to the calling user (or, from a service token, one with its role)."""
    require(principal, Action.TOKEN_CREATE)
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise BadUserInput("A token name is 1 to 100 characters.", argument="name")
    if expires_at is not None and expires_at.tzinfo is None:
        raise BadUserInput("`expiresAt` needs a UTC offset.", argument="expiresAt")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise BadUserInput("`expiresAt` must be in the future.", argument="expiresAt")
    secret = new_api_token()
    token = await user_models.create_api_token(
        session,
        ApiToken(
            organization_id=principal.organization_id,
            user_id=principal.user_id,
            role=principal.role,
            clearance=principal.clearance,
            department=principal.department,
            name=name,
            prefix=public_prefix(secret),
            token_hash=token_digest(secret),
            scopes=validate_scopes(scopes, principal),
            expires_at=expires_at,
            created_by=principal.user_id,
        ),
    )
    await record_event(
        session,
        organization_id=principal.organization_id,
        actor=actor_of(principal),
        event_type="token.create",
        category="security",
        description=f"API token {token.name!r} ({token.prefix}…) created",
        resource_type="ApiToken",
        resource_id=token.id,
        after={
            "name": token.name,
            "prefix": token.prefix,
            "scopes": token.scopes,
            "expiresAt": expires_at.isoformat() if expires_at else None,
        },
        meta=meta,
    )
    return secret, token


async def revoke_api_token(
    session: AsyncSession, principal: Principal, *, token_id: uuid.UUID, meta: RequestMeta
) -> ApiToken:
    token = (
        await session.scalars(
            sa.select(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.organization_id == principal.organization_id)
            .with_for_update()
        )
    ).one_or_none()
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
        await record_event(
            session,
            organization_id=principal.organization_id,
            actor=actor_of(principal),
            event_type="token.revoke",
            category="security",
            description=f"API token {token.name!r} ({token.prefix}…) revoked",
            resource_type="ApiToken",
            resource_id=token.id,
            meta=meta,
        )
    return token


# --- users ---------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """The address as it is stored and looked up (createUser, login, operators)."""
    canonical = canonical_email(email)
    if canonical is None:
        raise BadUserInput("Not a valid e-mail address.", argument="email")
    return canonical


def domain_of(email: str) -> str:
    """The canonical domain of an address (``normalize_email`` first, or any spelling)."""
    domain = email.rsplit("@", 1)[1]
    return canonical_domain(domain) or domain.lower()


def normalize_domain(domain: str) -> str:
    canonical = canonical_domain(domain.strip().removeprefix("@"))
    if canonical is None:
        raise BadUserInput("Not a valid e-mail domain.", argument="domain")
    return canonical


async def check_address_owner(
    session: AsyncSession, principal: Principal | None, organization_id: uuid.UUID, email: str
) -> None:
    """Whether ``email`` may be given to a user of ``organization_id``.

    An ADMIN (or a token) creates users only in its organization's own e-mail domain, and an
    organization's domain has no users of any other organization (``prism org domain`` and
    operators' ``create_user`` keep it so). So what an ADMIN learns here, and from the
    uniqueness check after it, depends only on its own organization: an address elsewhere is
    refused with the same answer, after the same single read, whether or not it has an
    account (docs/decisions/0014). Operators (no principal) are the platform's own staff:
    they may use any domain that no other organization owns."""
    domain = domain_of(email)
    if principal is None:
        owner = await org_models.domain_owner(session, domain)
        if owner is not None and owner != organization_id:
            raise Conflict(f"{domain} is the e-mail domain of another organization.")
        return
    org = await org_models.read_organization(session, organization_id)
    own = org.domain.lower() if org is not None and org.domain else None
    if own is None:
        raise BadUserInput(
            "This organization has no e-mail domain yet: an operator sets it "
            "(`prism org domain`) before its users can be created here.",
            argument="email",
        )
    if domain != own:
        raise BadUserInput(
            f"Users of this organization have addresses in its domain, {own}.",
            argument="email",
        )


def _check_profile(**fields: str | None) -> None:
    for name, value in fields.items():
        if value is not None and (len(value) > 100 or "\x00" in value):
            raise BadUserInput(f"`{name}` is at most 100 characters of text.", argument=name)


def _check_clearance(principal: Principal | None, clearance: Classification | None) -> None:
    """Nobody hands out more clearance than they hold (ADMINs included)."""
    if (
        principal is not None
        and clearance is not None
        and clearance.rank > principal.clearance.rank
    ):
        raise Forbidden("You cannot grant a clearance above your own.")


async def create_user(
    session: AsyncSession,
    principal: Principal | None,
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
    meta: RequestMeta,
) -> User:
    """Create a user. ``principal`` is None only for operator commands (CLI, demo); the
    password is hashed by the caller before the transaction (see ``Passwords.hash_async``)."""
    if principal is not None:
        require(principal, Action.USER_CREATE)
    email = normalize_email(email)
    # Before anything else is looked at: an address outside the caller's domain is refused
    # the same way whether or not it exists anywhere.
    await check_address_owner(session, principal, organization_id, email)
    _check_profile(firstName=first_name, lastName=last_name, department=department)
    _check_clearance(principal, clearance or Classification.INTERNAL)
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
    await record_event(
        session,
        organization_id=organization_id,
        actor=actor_of(principal),
        event_type="user.create",
        category="user_management",
        description=f"User {user.email} created as {user.role.value}",
        resource_type="User",
        resource_id=user.id,
        after=user_snapshot(user),
        meta=meta,
    )
    return user


async def update_user(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: uuid.UUID,
    changes: dict[str, Any],
    meta: RequestMeta,
) -> User:
    """Apply ``changes`` (role, department, clearance, access_expires_at) to a user."""
    require(principal, Action.USER_UPDATE)
    user = await user_models.lock_user(session, principal.organization_id, user_id)
    if user is None:
        raise not_found("User")
    if user.id == principal.user_id and changes.get("role", Role.ADMIN) is not Role.ADMIN:
        raise BadUserInput("An ADMIN cannot remove their own ADMIN role.", argument="role")
    _check_profile(department=changes.get("department"))
    _check_clearance(principal, changes.get("clearance"))
    before = user_snapshot(user)
    for field, value in changes.items():
        setattr(user, field, value)
    await session.flush()
    await record_event(
        session,
        organization_id=principal.organization_id,
        actor=actor_of(principal),
        event_type="user.update",
        category="user_management",
        description=f"User {user.email} updated",
        resource_type="User",
        resource_id=user.id,
        before=before,
        after=user_snapshot(user),
        meta=meta,
    )
    return user
