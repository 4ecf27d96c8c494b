"""Passwords (argon2id), opaque tokens (random, checksummed, stored as sha256), JWTs, and
the key that encrypts secrets at rest (AES-256-GCM)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import string
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from prism.errors import BadUserInput, ServiceUnavailable, Unauthenticated

log = structlog.get_logger("prism.secrets")

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

API_TOKEN_PREFIX = "prism_pat_"
REFRESH_TOKEN_PREFIX = "prism_rt_"
PASSWORD_RESET_TOKEN_PREFIX = "prism_reset_"
_ALPHABET = string.ascii_letters + string.digits
_BODY_LENGTH = 32
_CHECKSUM_LENGTH = 6
PUBLIC_PREFIX_LENGTH = len(API_TOKEN_PREFIX) + 8


class Passwords:
    """argon2id; parameters come from settings so operators can size them for their CPUs."""

    def __init__(
        self,
        *,
        time_cost: int = 3,
        memory_kib: int = 65536,
        parallelism: int = 4,
        concurrent: int = 4,
    ) -> None:
        # At most `concurrent` hashes at once per process: a sign-in flood queues here
        # instead of exhausting memory (64 MiB each) and the thread pool.
        self._slots = asyncio.Semaphore(concurrent)
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        # Verified when the e-mail is unknown, so both failures take the same time.
        self._dummy = self._hasher.hash(secrets.token_hex(16))

    @staticmethod
    def validate(password: str, argument: str = "password") -> None:
        """The password policy (every password set: createUser, changePassword,
        resetPassword); ``argument`` names the input in the error."""
        if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
            raise BadUserInput(
                f"Passwords are {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long.",
                argument=argument,
            )

    def hash(self, password: str) -> str:
        self.validate(password)
        return self._hasher.hash(password)

    async def hash_async(self, password: str) -> str:
        self.validate(password)
        async with self._slots:
            return await asyncio.to_thread(self.hash, password)

    async def verify_async(self, stored_hash: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self.verify, stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True for a hash made with other parameters than today's: it is replaced at the
        next sign-in, so that every account costs the same to check (and as much as the
        stand-in checked for unknown addresses)."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(
                stored_hash or self._dummy, password[:MAX_PASSWORD_LENGTH]
            ) and (stored_hash is not None)
        except (VerificationError, InvalidHashError):
            return False


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode())
    digits = []
    for _ in range(_CHECKSUM_LENGTH):
        value, rem = divmod(value, len(_ALPHABET))
        digits.append(_ALPHABET[rem])
    return "".join(digits)


def new_api_token() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LENGTH))
    return f"{API_TOKEN_PREFIX}{body}{_checksum(body)}"


def api_token_well_formed(token: str) -> bool:
    """Checked before any database lookup: a typo or a forged token costs no query."""
    if not token.startswith(API_TOKEN_PREFIX):
        return False
    rest = token[len(API_TOKEN_PREFIX) :]
    if len(rest) != _BODY_LENGTH + _CHECKSUM_LENGTH or not all(c in _ALPHABET for c in rest):
        return False
    return _checksum(rest[:_BODY_LENGTH]) == rest[_BODY_LENGTH:]


def public_prefix(token: str) -> str:
    return token[:PUBLIC_PREFIX_LENGTH]


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_password_reset_token() -> str:
    """32 random bytes (base64url), with a prefix that says what it is."""
    return PASSWORD_RESET_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """Tokens are 190+ bits of randomness: a plain sha256 is the right stored form (a slow
    password hash would add nothing but latency to every request)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    organization_id: uuid.UUID
    # The refresh-token family (sign-in session) the token belongs to.
    session_id: uuid.UUID
    expires_at: datetime


class AccessTokens:
    """Short-lived HS256 JWTs. Algorithm, audience and issuer are pinned when decoding."""

    ALGORITHM = "HS256"
    ISSUER = "prism"
    AUDIENCE = "prism-api"

    def __init__(self, key: bytes, *, key_id: str, ttl: timedelta) -> None:
        if len(key) < 32:
            raise ValueError("the JWT key must be at least 32 bytes")
        self._key = key
        self._key_id = key_id
        self.ttl = ttl

    def issue(
        self, user_id: uuid.UUID, organization_id: uuid.UUID, session_id: uuid.UUID
    ) -> tuple[str, datetime]:
        now = datetime.now(UTC)
        expires = now + self.ttl
        claims = {
            "sub": str(user_id),
            "org": str(organization_id),
            "sid": str(session_id),
            "iss": self.ISSUER,
            "aud": self.AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(
            claims, self._key, algorithm=self.ALGORITHM, headers={"kid": self._key_id}
        )
        return token, expires

    def verify(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.ALGORITHM],
                audience=self.AUDIENCE,
                issuer=self.ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "sid"]},
            )
            return AccessClaims(
                user_id=uuid.UUID(claims["sub"]),
                organization_id=uuid.UUID(claims["org"]),
                session_id=uuid.UUID(claims["sid"]),
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        except (jwt.PyJWTError, KeyError, ValueError) as exc:
            raise Unauthenticated("The access token is invalid or has expired.") from exc


def load_or_create_key(path: Path) -> bytes:
    """A development key kept beside the data, created once with 0600 permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    key = secrets.token_bytes(32)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.hex())
    try:
        # link() fails if the key exists: of processes starting at once, one key wins and
        # nobody ever reads a half-written file.
        os.link(partial, path)
    except FileExistsError:
        key = bytes.fromhex(path.read_text().strip())
    finally:
        partial.unlink()
    return key


class SecretKeyUnavailable(ServiceUnavailable, ValueError):
    """A value sealed with a key this process does not hold (SERVICE_UNAVAILABLE)."""


class SecretBox:
    """AES-256-GCM for secrets stored in the database (MFA secrets).

    A sealed value is ``version (1) | key id (4) | nonce (12) | ciphertext+tag``. The key id
    names the key that sealed it, so keys rotate: new values use the current key, old ones
    open with the retired keys still listed. ``context`` is authenticated data binding a
    value to its row and purpose: a ciphertext copied onto another user's row does not open.
    """

    _VERSION = b"\x01"

    def __init__(self, current: bytes, retired: tuple[bytes, ...] = ()) -> None:
        for key in (current, *retired):
            if len(key) != 32:
                raise ValueError("encryption keys are 32 bytes")
        self._current_id = self.key_id(current)
        self._keys = {self.key_id(key): AESGCM(key) for key in (*retired, current)}
        self._digest_key = hmac.new(current, b"prism-digest", hashlib.sha256).digest()
        # Digests made before a rotation still match (MFA backup codes outlive a key).
        self._digest_keys = [
            hmac.new(key, b"prism-digest", hashlib.sha256).digest() for key in (current, *retired)
        ]

    @staticmethod
    def key_id(key: bytes) -> bytes:
        return hashlib.sha256(b"prism-key-id:" + key).digest()[:4]

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        sealed = self._keys[self._current_id].encrypt(nonce, plaintext, context)
        return self._VERSION + self._current_id + nonce + sealed

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if len(sealed) < 1 + 4 + 12 + 16 or sealed[:1] != self._VERSION:
            raise ValueError("not a sealed value")
        key = self._keys.get(sealed[1:5])
        if key is None:
            # A key rotated on another process first (PRISM_ENCRYPTION_RETIRED_KEYS not yet
            # rolled out here): an outage to report, not a bug and not bad input.
            log.error("secret sealed with a key that is not configured", key_id=sealed[1:5].hex())
            raise SecretKeyUnavailable(
                "Encrypted data cannot be opened right now; try again later."
            )
        try:
            return key.decrypt(sealed[5:17], sealed[17:], context)
        except InvalidTag as exc:
            raise ValueError("the sealed value was altered or belongs elsewhere") from exc

    def digests(self, purpose: bytes, value: str) -> list[bytes]:
        """``digest`` under the current key, then under each retired key: what a value
        stored before the last rotation of PRISM_ENCRYPTION_KEY may have been hashed with."""
        message = purpose + b"\x00" + value.encode()
        return [hmac.new(key, message, hashlib.sha256).digest() for key in self._digest_keys]

    def digest(self, purpose: bytes, value: str) -> bytes:
        """A keyed hash (HMAC-SHA256) for lookups that must not reveal their input."""
        return hmac.new(
            self._digest_key, purpose + b"\x00" + value.encode(), hashlib.sha256
        ).digest()
