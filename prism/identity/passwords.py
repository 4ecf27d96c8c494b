"""Passwords: changed by their owner from a signed-in session, or reset with a token sent by
e-mail. Like sign-in, each runs in transactions of its own, is throttled (``throttle``) and
hashes with no database connection held; every change is audited in its own transaction.

A reset request answers the same (``true``), in the same time, whether or not the address has
an account: the request only counts the attempt; looking the address up, storing the token's
digest and sending the e-mail happen after the answer (``Mailer.later``), and the token
itself exists only in that task's memory and in the e-mail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import Actor, RequestMeta
from prism.authn import throttle
from prism.authn.secrets import (
    PASSWORD_RESET_TOKEN_PREFIX,
    new_password_reset_token,
    token_digest,
)
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.config import Settings
from prism.db.faults import retry_collisions
from prism.errors import BadUserInput, Conflict, Forbidden, Unauthenticated, not_found
from prism.identity.sessions import access_expired
from prism.mail import Message
from prism.models import users as user_models
from prism.models.addresses import canonical_email
from prism.models.users import PasswordReset, User
from prism.services import Services

INVALID_RESET = "The password reset token is invalid, expired or already used."
# A token is the prefix and 43 characters; anything much longer is not one (no lookup).
_MAX_TOKEN_LENGTH = 128


async def change_password(
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    *,
    session_id: uuid.UUID | None,
    current_password: str,
    new_password: str,
) -> int:
    """Change the caller's password; every other session of theirs ends (the one of
    ``session_id``, the caller's, goes on). Returns how many sessions ended. A wrong current
    password counts as a failed sign-in of the account from the caller's address."""
    require(principal, Action.PASSWORD_CHANGE)
    if principal.user_id is None or session_id is None:
        raise Forbidden("password:change needs a signed-in session, not an API token.")
    db, passwords = services.db, services.passwords
    passwords.validate(new_password, "newPassword")
    async with db.transaction(principal.organization_id) as session:
        user = await user_models.read_user(session, principal.user_id)
    if user is None:
        raise not_found("User")
    email, stored_hash = user.email, user.password_hash
    keys = throttle.SignInKeys.of(services.secrets, email, meta.ip_address)
    await throttle.reserve(db, keys)
    if not await passwords.verify_async(stored_hash, current_password):
        raise BadUserInput("The current password is not right.", argument="currentPassword")
    if new_password == current_password:
        raise BadUserInput("The new password is the current one.", argument="newPassword")
    new_hash = await passwords.hash_async(new_password)
    user_id = principal.user_id

    async def save() -> int:
        async with db.transaction(principal.organization_id, answers_client=True) as session:
            user = await user_models.lock_user(session, principal.organization_id, user_id)
            if user is None:
                raise not_found("User")
            if user.password_hash != stored_hash:
                raise Conflict("The password was changed meanwhile; sign in again.")
            user.password_hash = new_hash
            ended = await user_models.revoke_user_sessions(session, user.id, keep_family=session_id)
            # A reset token asked for before the change must not undo it.
            await user_models.use_password_resets(session, user.id)
            await _event(
                session,
                user,
                meta,
                "auth.password_changed",
                f"{user.email} changed their password; {ended} other sessions ended",
                actor=Actor(user_id=user.id),
                after={"otherSessionsEnded": ended},
            )
        return ended

    ended = await retry_collisions(save, what="password change")
    await throttle.succeeded(db, keys)
    return ended


async def request_password_reset(services: Services, meta: RequestMeta, *, email: str) -> bool:
    """Send a reset token to ``email`` if it is an active user's; True either way (and after
    the same work: the attempt is counted, the rest happens after the answer)."""
    address = canonical_email(email) or email.strip()
    keys = throttle.ResetRequestKeys.of(services.secrets, address, meta.ip_address)
    await throttle.reserve(services.db, keys)
    if "\x00" not in address and len(address) <= 320:

        async def compose() -> Message | None:
            return await _issue_reset(services, meta, address)

        services.mail.later(compose, what="password reset")
    return True


async def _issue_reset(services: Services, meta: RequestMeta, email: str) -> Message | None:
    """Store a new token's digest for the user of ``email`` and return the e-mail that
    carries it; None (nothing stored, nothing sent) when there is no such active user."""
    db, settings = services.db, services.settings
    async with db.transaction(None) as session:
        found = await user_models.login_lookup(session, email)
    if found is None:
        return None
    token = new_password_reset_token()
    minutes = settings.password_reset_minutes

    async def issue() -> User | None:
        async with db.transaction(found.organization_id) as session:
            user = await user_models.read_user(session, found.user_id)
            if user is None or not user.is_active or access_expired(user):
                return None
            expires_at = datetime.now(UTC) + timedelta(minutes=minutes)
            await user_models.create_password_reset(
                session,
                PasswordReset(
                    organization_id=user.organization_id,
                    user_id=user.id,
                    token_hash=token_digest(token),
                    expires_at=expires_at,
                ),
            )
            # Asked for by whoever knew the address: nobody is the actor.
            await _event(
                session,
                user,
                meta,
                "auth.password_reset_requested",
                f"A password reset was requested for {user.email}",
                actor=Actor(),
                after={"expiresAt": expires_at.isoformat()},
            )
            return user

    user = await retry_collisions(issue, what="password reset request")
    if user is None:
        return None
    return reset_message(settings, user.email, token)


def reset_message(settings: Settings, to: str, token: str) -> Message:
    minutes = settings.password_reset_minutes
    if settings.password_reset_url:
        how = "Choose a new password here:\n\n" + settings.password_reset_url.replace(
            "{token}", token
        )
    else:
        how = (
            f"Your reset token is:\n\n    {token}\n\n"
            "Send it with your new password to Prism's GraphQL API:\n\n"
            f'    mutation {{ resetPassword(input: {{token: "{token}", '
            'newPassword: "..."}) }'
        )
    text = (
        f"Someone asked to reset the password of the Prism account {to}.\n\n"
        f"{how}\n\n"
        f"This works once, within {minutes} minutes, and signs you out everywhere. If you did "
        "not ask for it, ignore this message: your password stays as it is.\n"
    )
    return Message(to=to, subject="Reset your Prism password", text=text)


async def reset_password(
    services: Services, meta: RequestMeta, *, token: str, new_password: str
) -> int:
    """Set a new password with a reset token: the token and the user's other outstanding ones
    stop working, every session of the user ends (returned: how many) and every API token
    bound to the user is revoked (account recovery: whoever knew the old password may have
    made some). An unknown, used
    or expired token is one answer (UNAUTHENTICATED), counted against the caller's address."""
    db = services.db
    services.passwords.validate(new_password, "newPassword")
    keys = throttle.ResetTokenKeys.of(services.secrets, meta.ip_address)
    await throttle.reserve(db, keys)
    found = None
    if token.startswith(PASSWORD_RESET_TOKEN_PREFIX) and len(token) <= _MAX_TOKEN_LENGTH:
        async with db.transaction(None) as session:
            found = await user_models.password_reset_lookup(session, token_digest(token))
    if found is None:
        raise Unauthenticated(INVALID_RESET)
    new_hash = await services.passwords.hash_async(new_password)

    async def reset() -> int:
        async with db.transaction(found.organization_id, answers_client=True) as session:
            row = await user_models.lock_password_reset(session, found.reset_id)
            if row is None or row.used_at is not None or row.expires_at <= datetime.now(UTC):
                raise Unauthenticated(INVALID_RESET)
            user = await user_models.lock_user(session, found.organization_id, row.user_id)
            if user is None or not user.is_active:
                raise Unauthenticated(INVALID_RESET)
            user.password_hash = new_hash
            await user_models.use_password_resets(session, user.id)
            ended = await user_models.revoke_user_sessions(session, user.id)
            # Account recovery: whoever knew the old password may have made tokens with it.
            tokens = await user_models.revoke_personal_api_tokens(session, user.id)
            await _event(
                session,
                user,
                meta,
                "auth.password_reset",
                f"The password of {user.email} was reset by e-mail; {ended} sessions ended, "
                f"{tokens} API tokens revoked",
                actor=Actor(user_id=user.id),
                after={"sessionsEnded": ended, "apiTokensRevoked": tokens},
            )
        return ended

    ended = await retry_collisions(reset, what="password reset")
    await throttle.succeeded(db, keys)
    return ended


async def _event(
    session: AsyncSession,
    user: User,
    meta: RequestMeta,
    event_type: str,
    description: str,
    *,
    actor: Actor,
    after: dict[str, object],
) -> None:
    await audit.record(
        session,
        None,
        meta,
        organization_id=user.organization_id,
        actor=actor,
        event_type=event_type,
        category="authentication",
        description=description,
        resource_type="User",
        resource_id=user.id,
        after=after,
    )
