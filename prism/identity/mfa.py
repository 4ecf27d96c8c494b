"""What a user does with their second factor: enrol an authenticator, confirm it, replace the
backup codes, turn MFA off; and an ADMIN's reset of someone else's. The TOTP and backup-code
mechanics are ``prism.authn.mfa``; every change here is audited."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authn import mfa
from prism.authn.secrets import SecretBox
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.errors import BadUserInput, Conflict
from prism.identity.users import locked_user
from prism.models import users as user_models
from prism.models.users import User
from prism.services import Services


async def _own_user(session: AsyncSession, principal: Principal) -> User:
    require(principal, Action.MFA_MANAGE)
    return await locked_user(session, principal, principal.user_id)


async def _audit(
    session: AsyncSession,
    principal: Principal,
    user: User,
    event: str,
    text: str,
    meta: RequestMeta,
) -> None:
    await audit.record(
        session,
        principal,
        meta,
        organization_id=user.organization_id,
        event_type=event,
        category="security",
        description=text,
        resource_type="User",
        resource_id=user.id,
    )


async def begin_enrollment(
    session: AsyncSession, services: Services, principal: Principal, meta: RequestMeta
) -> tuple[str, str]:
    """A new TOTP secret for the caller: (secret, otpauth:// URI for a QR code). MFA is not
    on until ``confirm_enrollment`` sees a code from it."""
    user = await _own_user(session, principal)
    if user.mfa_enabled:
        raise Conflict("MFA is already on. Turn it off before enrolling another authenticator.")
    secret = mfa.new_secret()
    user.mfa_secret = mfa.seal_secret(services.secrets, user.id, secret)
    user.mfa_last_step = None
    await session.flush()
    await _audit(session, principal, user, "auth.mfa_enrolment", "MFA enrolment started", meta)
    return secret, mfa.provisioning_uri(secret, user.email)


async def confirm_enrollment(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    *,
    code: str,
) -> tuple[list[str], User]:
    """Turn MFA on with a code from the new authenticator; returns the backup codes, shown
    this once."""
    box = services.secrets
    user = await _own_user(session, principal)
    if user.mfa_enabled:
        raise Conflict("MFA is already on.")
    if user.mfa_secret is None:
        raise BadUserInput("Start with `beginMfaEnrollment`.", argument="code")
    secret = mfa.open_secret(box, user.id, user.mfa_secret)
    step = mfa.matching_step(secret, code)
    if step is None or not await user_models.accept_totp_step(session, user.id, step):
        raise BadUserInput(
            "The code does not match the new authenticator (check its clock).", argument="code"
        )
    user.mfa_enabled = True
    codes = await _new_backup_codes(session, box, user)
    await _audit(session, principal, user, "auth.mfa_enabled", "MFA turned on", meta)
    return codes, user


async def _new_backup_codes(session: AsyncSession, box: SecretBox, user: User) -> list[str]:
    codes = mfa.new_backup_codes()
    await user_models.replace_backup_codes(session, user, mfa.backup_hashes(box, codes))
    return codes


async def _check_code(session: AsyncSession, box: SecretBox, user: User, code: str) -> None:
    if not user.mfa_enabled:
        raise Conflict("MFA is not on.")
    if not await mfa.verify_second_factor(session, box, user, code):
        raise BadUserInput("The code is invalid or was already used.", argument="code")


async def regenerate_backup_codes(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    *,
    code: str,
) -> tuple[list[str], User]:
    """New backup codes (the old ones stop working), with a current code as proof."""
    box = services.secrets
    user = await _own_user(session, principal)
    await _check_code(session, box, user, code)
    codes = await _new_backup_codes(session, box, user)
    await _audit(session, principal, user, "auth.mfa_backup_codes", "New MFA backup codes", meta)
    return codes, user


async def disable(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    *,
    code: str,
) -> User:
    """Turn the caller's MFA off, with a current code (or a backup code) as proof."""
    user = await _own_user(session, principal)
    await _check_code(session, services.secrets, user, code)
    await _clear(session, user)
    await _audit(session, principal, user, "auth.mfa_disabled", "MFA turned off", meta)
    return user


async def reset(
    session: AsyncSession, principal: Principal, meta: RequestMeta, *, user_id: uuid.UUID
) -> User:
    """An ADMIN turns off another user's MFA (a lost authenticator and no backup codes)."""
    require(principal, Action.USER_MFA_RESET)
    user = await locked_user(session, principal, user_id)
    await _clear(session, user)
    await _audit(session, principal, user, "auth.mfa_reset", f"MFA of {user.email} reset", meta)
    return user


async def _clear(session: AsyncSession, user: User) -> None:
    user.mfa_enabled = False
    user.mfa_secret = None
    user.mfa_last_step = None
    await user_models.replace_backup_codes(session, user, [])
