"""Key-encryption keys (KEKs): they wrap each organization's data key and nothing else.

Two providers behind one protocol:

- ``LocalKeyring`` (default): AES-256 keys with ids. Either from the environment
  (``PRISM_ENCRYPTION_KEY`` current, ``PRISM_ENCRYPTION_RETIRED_KEYS`` still able to unwrap),
  or from ``PRISM_DATA_DIR/keyring.json``, created on first run with 0600 permissions and
  seeded with the server key (``encryption.key``) so that there is one key store, not two.
  ``prism keys rotate --new-kek`` adds a key to the file and makes it current.
- ``KmsKeys``: AWS KMS (``PRISM_KMS_KEY_ID``) through aioboto3: the data key is encrypted by
  KMS with the organization as encryption context; the key never leaves KMS.

A wrapped data key names the KEK that wrapped it (``kek_id``), so old and new KEKs unwrap
side by side while ``prism keys rotate`` re-wraps: no downtime, no re-encryption of data.

Rotation is online: a file keyring re-reads its file when it changed (a cheap ``stat`` before
each wrap and whenever a data key names a KEK this process does not hold), so running API and
worker processes pick up ``prism keys rotate --new-kek`` without a restart. A key that truly
cannot be found is ``KeyUnavailable``: a ``SERVICE_UNAVAILABLE`` answer with the reason logged,
never an internal error.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import aioboto3
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from prism.config import Settings
from prism.errors import ServiceUnavailable

KEYRING_FILE = "keyring.json"
log = structlog.get_logger("prism.keyring")


class KeyUnavailable(ServiceUnavailable):
    """The KEK a data key was wrapped with is not configured (or refuses to unwrap it). The
    client sees SERVICE_UNAVAILABLE with a generic message; ``reason`` is for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__("Encrypted data cannot be opened right now; try again later.")
        self.reason = reason


class KeyEncryptionKeys(Protocol):
    @property
    def current_id(self) -> str: ...

    async def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """Wrap with the current KEK: (its id, the wrapped key)."""
        ...

    async def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes: ...


def key_id(key: bytes) -> str:
    """Derived from the key (the same derivation as SecretBox's key ids), so a key has one id
    whether it comes from the environment or the keyring file."""
    return "local:" + hashlib.sha256(b"prism-key-id:" + key).digest()[:4].hex()


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when the keyring file is replaced (``add_key`` renames a new file in)."""
    found = path.stat()
    return found.st_ino, found.st_mtime_ns, found.st_size


class LocalKeyring:
    """AES-256-GCM KEKs held by this process. ``path`` is None for an environment keyring
    (changed only by a restart); a file keyring follows its file (``refresh``)."""

    def __init__(
        self,
        current: bytes,
        others: tuple[bytes, ...] = (),
        path: Path | None = None,
        stamp: tuple[int, int, int] | None = None,
    ):
        """``stamp`` is the file's change stamp taken *before* ``current``/``others`` were read
        from it (so a rotation in between is noticed by the next ``refresh``)."""
        self.path = path
        self._stamp = stamp if stamp is not None or path is None else _stamp(path)
        self._use(current, others)

    def _use(self, current: bytes, others: tuple[bytes, ...]) -> None:
        _check_lengths((current, *others))
        self._current = key_id(current)
        self._keys = {key_id(k): AESGCM(k) for k in (*others, current)}

    def refresh(self) -> bool:
        """Re-read the keyring file if it changed since it was read (True if it did). Keys
        are only ever added to the file, but a key this process held stays usable anyway.

        The whole file is validated before anything is adopted: a file that cannot be read or
        parsed, or holds a key of the wrong length, is logged once (per change of the file)
        and the keys held are kept."""
        if self.path is None:
            return False
        try:
            stamp = _stamp(self.path)  # before the read: a later change is seen next time
        except OSError as exc:
            log.warning("keyring file unreadable; keeping the keys held", error=str(exc))
            return False
        if stamp == self._stamp:
            return False
        try:
            current, others = _parse(_read_file(self.path))
            _check_lengths((current, *others))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._stamp = stamp  # not re-read (nor re-logged) until it changes again
            log.error("keyring file invalid; keeping the keys held", error=str(exc))
            return False
        fresh = {key_id(k): AESGCM(k) for k in (*others, current)}
        self._keys = {**self._keys, **fresh}
        self._current = key_id(current)
        self._stamp = stamp
        log.info("keyring reloaded", current=self._current, keys=len(self._keys))
        return True

    @property
    def current_id(self) -> str:
        """The current KEK, as the keyring file says now (a file keyring is refreshed first)."""
        self.refresh()
        return self._current

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    async def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        self.refresh()  # a new data key is wrapped with the KEK that is current now
        nonce = os.urandom(12)
        return self._current, nonce + self._keys[self._current].encrypt(nonce, data_key, context)

    async def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        kek = self._keys.get(kek_id)
        if kek is None and self.refresh():
            kek = self._keys.get(kek_id)  # rotated by another process since this one read it
        if kek is None:
            raise KeyUnavailable(f"key-encryption key {kek_id} is not in the keyring")
        try:
            return kek.decrypt(wrapped[:12], wrapped[12:], context)
        except (InvalidTag, ValueError) as exc:
            raise KeyUnavailable(f"data key does not unwrap with {kek_id}") from exc


def _check_lengths(keys: tuple[bytes, ...]) -> None:
    for key in keys:
        if len(key) != 32:
            raise ValueError("key-encryption keys are 32 bytes")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock (``flock`` on ``keyring.json.lock`` beside the file) held by every
    writer of the keyring file around its read-modify-write: two ``prism keys rotate
    --new-kek`` at once both add their key, one after the other."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with 0600 permissions, atomically (rename into place)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def _read_file(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def file_keyring(path: Path, seed: bytes) -> LocalKeyring:
    """The keyring file, created (seeded with ``seed``, the server key) if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with _locked(path):
            if not path.exists():  # of processes starting at once, one seeds the file
                body = json.dumps({"current": key_id(seed), "keys": {key_id(seed): seed.hex()}})
                _write_private(path, body)
    stamp = _stamp(path)  # before the read, so a rotation in between is noticed
    current, others = _parse(_read_file(path))
    return LocalKeyring(current, others, path=path, stamp=stamp)


def _parse(data: dict[str, Any]) -> tuple[bytes, tuple[bytes, ...]]:
    keys = {kid: bytes.fromhex(hexkey) for kid, hexkey in data["keys"].items()}
    current = keys[data["current"]]
    return current, tuple(k for kid, k in keys.items() if kid != data["current"])


def add_key(path: Path) -> str:
    """A new current KEK in the keyring file (the old ones stay, to unwrap until re-wrapped
    and to open MFA secrets sealed under the server key). Returns its id. The read, change and
    (atomic) write happen under the keyring's lock, so concurrent rotations both keep their
    key."""
    key = secrets.token_bytes(32)
    with _locked(path):
        data = _read_file(path)
        _parse(data)  # never extend a file that is not a keyring
        data["keys"][key_id(key)] = key.hex()
        data["current"] = key_id(key)
        _write_private(path, json.dumps(data))
    return key_id(key)


class KmsKeys:
    """AWS KMS as the KEK: Encrypt/Decrypt of the 32-byte data key, with the organization in
    the encryption context (a wrapped key copied to another organization does not decrypt)."""

    def __init__(self, key_id: str, *, region: str, endpoint_url: str | None = None) -> None:
        self.key_id = key_id
        self.region = region
        self.endpoint_url = endpoint_url
        self._session = aioboto3.Session()

    @property
    def current_id(self) -> str:
        return "kms:" + self.key_id

    def _client(self) -> Any:
        return self._session.client("kms", region_name=self.region, endpoint_url=self.endpoint_url)

    @staticmethod
    def _context(context: bytes) -> dict[str, str]:
        return {"prism": context.hex()}

    async def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        try:
            async with self._client() as kms:
                answer = await kms.encrypt(
                    KeyId=self.key_id, Plaintext=data_key, EncryptionContext=self._context(context)
                )
        except (BotoCoreError, ClientError) as exc:
            raise KeyUnavailable(f"KMS refused to wrap with {self.key_id}: {exc}") from exc
        return self.current_id, bytes(answer["CiphertextBlob"])

    async def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        if not kek_id.startswith("kms:"):
            raise KeyUnavailable(f"{kek_id} is not a KMS key; unwrap it with the local keyring")
        try:
            async with self._client() as kms:
                answer = await kms.decrypt(
                    KeyId=kek_id[len("kms:") :],
                    CiphertextBlob=wrapped,
                    EncryptionContext=self._context(context),
                )
        except (BotoCoreError, ClientError) as exc:
            raise KeyUnavailable(f"KMS refused to unwrap with {kek_id}: {exc}") from exc
        return bytes(answer["Plaintext"])


class ChainedKeys:
    """KMS for new wraps, the local keyring for keys wrapped before KMS was switched on (so
    moving from the local keyring to KMS is one `prism keys rotate`)."""

    def __init__(self, primary: KmsKeys, fallback: LocalKeyring) -> None:
        self.primary = primary
        self.fallback = fallback

    @property
    def current_id(self) -> str:
        return self.primary.current_id

    async def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        return await self.primary.wrap(data_key, context)

    async def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        if kek_id.startswith("kms:"):
            return await self.primary.unwrap(kek_id, wrapped, context)
        return await self.fallback.unwrap(kek_id, wrapped, context)


def local_keyring(
    settings: Settings, server_key: bytes, retired: tuple[bytes, ...] = ()
) -> LocalKeyring:
    """From the environment when PRISM_ENCRYPTION_KEY is set, else the keyring file."""
    if settings.encryption_key is not None:
        return LocalKeyring(server_key, retired)
    return file_keyring(settings.data_dir / KEYRING_FILE, server_key)


def key_encryption_keys(
    settings: Settings, server_key: bytes, retired: tuple[bytes, ...] = ()
) -> KeyEncryptionKeys:
    local = local_keyring(settings, server_key, retired)
    if settings.kms_key_id:
        kms = KmsKeys(
            settings.kms_key_id, region=settings.kms_region, endpoint_url=settings.kms_endpoint_url
        )
        return ChainedKeys(kms, local)
    return local
