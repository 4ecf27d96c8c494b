"""Multi-factor sign-in: TOTP (RFC 6238) and one-time backup codes, the mechanics (enrolment
and the rest of what a user does with them: ``prism.identity.mfa``).

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
from prism.models import users as user_models
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


def backup_hash(box: SecretBox, normalized: str) -> bytes:
    """What is stored of a backup code (keyed with the server's key)."""
    return box.digest(b"mfa-backup", normalized)


def backup_hashes(box: SecretBox, codes: list[str]) -> list[bytes]:
    return [backup_hash(box, c.replace("-", "")) for c in codes]


def new_secret() -> str:
    """A new TOTP secret (base32)."""
    return pyotp.random_base32()


def seal_secret(box: SecretBox, user_id: uuid.UUID, secret: str) -> bytes:
    return box.seal(secret.encode(), _sealing_context(user_id))


def open_secret(box: SecretBox, user_id: uuid.UUID, sealed: bytes) -> str:
    """A user's TOTP secret, from its sealed form (``User.mfa_secret``)."""
    return box.open(sealed, _sealing_context(user_id)).decode()


def provisioning_uri(secret: str, email: str) -> str:
    """The otpauth:// URI of a secret, for a QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


async def verify_second_factor(
    session: AsyncSession, box: SecretBox, user: User, code: str
) -> bool:
    """A current TOTP code (spending its step) or an unused backup code (spending it)."""
    if not user.mfa_enabled or user.mfa_secret is None or len(code) > 64:
        return False
    if _TOTP.match(code.strip()):
        step = matching_step(open_secret(box, user.id, user.mfa_secret), code)
        return step is not None and await user_models.accept_totp_step(session, user.id, step)
    normalized = normalize_backup_code(code)
    if normalized is None:
        return False
    # Codes issued before PRISM_ENCRYPTION_KEY rotated were hashed with a now retired key.
    for code_hash in box.digests(b"mfa-backup", normalized):
        if await user_models.use_backup_code(session, user.id, code_hash):
            return True
    return False
