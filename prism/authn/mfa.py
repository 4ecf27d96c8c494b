"""Multi-factor sign-in: TOTP (RFC 6238) and one-time backup codes.

The TOTP secret is sealed with the server's key (bound to its user, see ``SecretBox``);
backup codes are stored as keyed hashes and spent once. A TOTP code is accepted for the
current 30-second step and one step either side (clock drift), and never twice: the last
accepted step is recorded, so a code (or an older one) seen over a shoulder cannot be
replayed within its window."""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
from datetime import UTC, datetime

import pyotp
from sqlalchemy.ext.asyncio import AsyncSession

from prism.authn.secrets import SecretBox
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.errors import BadUserInput, Conflict, not_found
from prism.models import users as user_models
from prism.models.audit import Actor, RequestMeta, record_event
from prism.models.users import User

ISSUER = "Prism"
DRIFT_STEPS = 1
BACKUP_CODES = 10
# 12 characters of 31 (no 0/o, 1/l/i): 59 bits each, spent once, behind the throttle.
_BACKUP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_BACKUP_LENGTH = 12
_TOTP = re.compile(r"^\d{6}$")


def _sealing_context(user_id: uuid.UUID) -> bytes:
    return b"mfa-secret:" + user_id.bytes


def matching_step(secret: str, code: str, now: datetime | None = None) -> int | None:
    """The time step whose code ``code`` is, within the allowed drift; None if none."""
    code = code.strip()
    if not _TOTP.match(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now or datetime.now(UTC))
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_backup_codes() -> list[str]:
    codes = []
    for _ in range(BACKUP_CODES):
        raw = "".join(secrets.choice(_BACKUP_ALPHABET) for _ in range(_BACKUP_LENGTH))
        codes.append("-".join(raw[i : i + 4] for i in range(0, _BACKUP_LENGTH, 4)))
    return codes


def normalize_backup_code(code: str) -> str | None:
    raw = re.sub(r"[\s-]", "", code).lower()
    if len(raw) != _BACKUP_LENGTH or any(c not in _BACKUP_ALPHABET for c in raw):
        return None
    return raw


def _backup_hash(box: SecretBox, normalized: str) -> bytes:
    return box.digest(b"mfa-backup", normalized)


async def verify_second_factor(
    session: AsyncSession, box: SecretBox, user: User, code: str
) -> bool:
    """A current TOTP code (spending its step) or an unused backup code (spending it)."""
    if not user.mfa_enabled or user.mfa_secret is None or len(code) > 64:
        return False
    if _TOTP.match(code.strip()):
        secret = box.open(user.mfa_secret, _sealing_context(user.id)).decode()
        step = matching_step(secret, code)
        return step is not None and await user_models.accept_totp_step(session, user.id, step)
    normalized = normalize_backup_code(code)
    if normalized is None:
        return False
    # Codes issued before PRISM_ENCRYPTION_KEY rotated were hashed with a now retired key.
    for code_hash in box.digests(b"mfa-backup", normalized):
        if await user_models.use_backup_code(session, user.id, code_hash):
            return True
    return False


async def _own_user(session: AsyncSession, principal: Principal) -> User:
    require(principal, Action.MFA_MANAGE)
    user = None
    if principal.user_id is not None:
        user = await user_models.lock_user(session, principal.organization_id, principal.user_id)
    if user is None:
        raise not_found("User")
    return user


async def _audit(
    session: AsyncSession,
    principal: Principal,
    user: User,
    event: str,
    text: str,
    meta: RequestMeta,
) -> None:
    await record_event(
        session,
        organization_id=user.organization_id,
        actor=Actor(user_id=principal.user_id, api_token_id=principal.api_token_id),
        event_type=event,
        category="security",
        description=text,
        resource_type="User",
        resource_id=user.id,
        meta=meta,
    )


async def begin_enrollment(
    session: AsyncSession, box: SecretBox, principal: Principal, *, meta: RequestMeta
) -> tuple[str, str]:
    """A new TOTP secret for the caller: (secret, otpauth:// URI for a QR code). MFA is not
    on until ``confirm_enrollment`` sees a code from it."""
    user = await _own_user(session, principal)
    if user.mfa_enabled:
        raise Conflict("MFA is already on. Turn it off before enrolling another authenticator.")
    secret = pyotp.random_base32()
    user.mfa_secret = box.seal(secret.encode(), _sealing_context(user.id))
    user.mfa_last_step = None
    await session.flush()
    await _audit(session, principal, user, "auth.mfa_enrolment", "MFA enrolment started", meta)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return secret, uri


async def confirm_enrollment(
    session: AsyncSession, box: SecretBox, principal: Principal, *, code: str, meta: RequestMeta
) -> tuple[list[str], User]:
    """Turn MFA on with a code from the new authenticator; returns the backup codes, shown
    this once."""
    user = await _own_user(session, principal)
    if user.mfa_enabled:
        raise Conflict("MFA is already on.")
    if user.mfa_secret is None:
        raise BadUserInput("Start with `beginMfaEnrollment`.", argument="code")
    secret = box.open(user.mfa_secret, _sealing_context(user.id)).decode()
    step = matching_step(secret, code)
    if step is None or not await user_models.accept_totp_step(session, user.id, step):
        raise BadUserInput(
            "The code does not match the new authenticator (check its clock).", argument="code"
        )
    user.mfa_enabled = True
    codes = await _new_backup_codes(session, box, user)
    await _audit(session, principal, user, "auth.mfa_enabled", "MFA turned on", meta)
    return codes, user


async def _new_backup_codes(session: AsyncSession, box: SecretBox, user: User) -> list[str]:
    codes = new_backup_codes()
    hashes = [_backup_hash(box, c.replace("-", "")) for c in codes]
    await user_models.replace_backup_codes(session, user, hashes)
    return codes


async def _check_code(session: AsyncSession, box: SecretBox, user: User, code: str) -> None:
    if not user.mfa_enabled:
        raise Conflict("MFA is not on.")
    if not await verify_second_factor(session, box, user, code):
        raise BadUserInput("The code is invalid or was already used.", argument="code")


async def regenerate_backup_codes(
    session: AsyncSession, box: SecretBox, principal: Principal, *, code: str, meta: RequestMeta
) -> tuple[list[str], User]:
    """New backup codes (the old ones stop working), with a current code as proof."""
    user = await _own_user(session, principal)
    await _check_code(session, box, user, code)
    codes = await _new_backup_codes(session, box, user)
    await _audit(session, principal, user, "auth.mfa_backup_codes", "New MFA backup codes", meta)
    return codes, user


async def disable(
    session: AsyncSession, box: SecretBox, principal: Principal, *, code: str, meta: RequestMeta
) -> User:
    """Turn the caller's MFA off, with a current code (or a backup code) as proof."""
    user = await _own_user(session, principal)
    await _check_code(session, box, user, code)
    await _clear(session, user)
    await _audit(session, principal, user, "auth.mfa_disabled", "MFA turned off", meta)
    return user


async def reset(
    session: AsyncSession, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta
) -> User:
    """An ADMIN turns off another user's MFA (a lost authenticator and no backup codes)."""
    require(principal, Action.USER_MFA_RESET)
    user = await user_models.lock_user(session, principal.organization_id, user_id)
    if user is None:
        raise not_found("User")
    await _clear(session, user)
    await _audit(session, principal, user, "auth.mfa_reset", f"MFA of {user.email} reset", meta)
    return user


async def _clear(session: AsyncSession, user: User) -> None:
    user.mfa_enabled = False
    user.mfa_secret = None
    user.mfa_last_step = None
    await user_models.replace_backup_codes(session, user, [])
