"""Sign-in, refresh and sign-out: the sessions of users. Each runs in transactions of its own
(the organization is not known before the credential is looked up) and writes its audit
event in the transaction that makes the change."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import Actor, RequestMeta
from prism.authn import throttle
from prism.authn.mfa import verify_second_factor
from prism.authn.secrets import AccessTokens, new_refresh_token, token_digest
from prism.db.engine import Database
from prism.db.faults import retry_collisions
from prism.errors import Unauthenticated
from prism.models import users as user_models
from prism.models.addresses import canonical_email
from prism.models.users import RefreshSession, User
from prism.services import Services

_INVALID_LOGIN = "Invalid email or password."


@dataclass(frozen=True)
class SignedIn:
    user: User
    access_token: str
    refresh_token: str
    expires_at: datetime


async def login(
    services: Services,
    meta: RequestMeta,
    *,
    email: str,
    password: str,
    totp: str | None,
) -> SignedIn:
    """Sign in. The attempt is counted first (``throttle``); the password is verified with no
    database connection held (argon2 is slow on purpose; holding a pooled connection through
    it would let a flood of sign-ins starve every other request); then the second factor, if
    the user has one, and the session, in a transaction of their own."""
    db, passwords, box = services.db, services.passwords, services.secrets
    if "\x00" in email or len(email) > 320:
        raise Unauthenticated(_INVALID_LOGIN)
    # Every spelling of an address is that address: one account, one throttle bucket. What
    # is not an address at all goes the same way as an unknown one (it matches no row).
    email = canonical_email(email) or email.strip()
    keys = throttle.SignInKeys.of(box, email, meta.ip_address)
    await throttle.reserve(db, keys)
    async with db.transaction(None) as session:
        found = await user_models.login_lookup(session, email)
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
            user = await user_models.read_user(session, found.user_id)
            if user is None or access_expired(user):
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
            signed_in = await _start_session(
                session, services.access_tokens, user, meta, services.refresh_ttl, uuid.uuid4()
            )
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
    await audit.record(
        session,
        None,
        meta,
        organization_id=organization_id,
        actor=Actor(user_id=user_id),
        event_type=event_type,
        category="authentication",
        description=description,
        resource_type="User",
        resource_id=user_id,
    )


def access_expired(user: User) -> bool:
    """The user's access ended (``accessExpiresAt`` passed): no sign-in, refresh or reset."""
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
        found = await user_models.refresh_lookup(session, token_digest(refresh_token))
    return (found.session_id, found.organization_id) if found else None


async def refresh(services: Services, meta: RequestMeta, *, refresh_token: str) -> SignedIn:
    """Rotate a refresh token. A replay of an already rotated token means it was stolen (or
    the client is broken): the whole family is revoked, committed, and the call refused."""
    db = services.db
    invalid = Unauthenticated("The refresh token is invalid or has expired.")
    found = await _find_refresh_session(db, refresh_token)
    if found is None:
        raise invalid
    session_id, organization_id = found

    async def rotate() -> SignedIn | None:
        async with db.transaction(organization_id, answers_client=True) as session:
            current = await user_models.lock_refresh_session(session, session_id)
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
            user = await user_models.read_user(session, current.user_id)
            if user is None or not user.is_active or access_expired(user):
                raise invalid
            current.rotated_at = now
            signed_in = await _start_session(
                session, services.access_tokens, user, meta, services.refresh_ttl, current.family_id
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


async def logout(services: Services, meta: RequestMeta, *, refresh_token: str) -> bool:
    db = services.db
    found = await _find_refresh_session(db, refresh_token)
    if found is None:
        return False
    session_id, organization_id = found

    async def end() -> bool:
        async with db.transaction(organization_id, answers_client=True) as session:
            current = await user_models.lock_refresh_session(session, session_id)
            if current is None or current.revoked_at is not None:
                return False
            await user_models.revoke_session_family(session, current.family_id)
            await _auth_event(
                session, organization_id, current.user_id, "auth.logout", "Signed out", meta
            )
        return True

    return await retry_collisions(end, what="sign-out")
