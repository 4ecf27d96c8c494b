"""Sealed objects: a stored file encrypted as a stream of AES-256-GCM segments, so that a
file of any size is sealed and opened in constant memory (one 64 KiB segment at a time).

Layout: ``MAGIC (8) | data key id (16) | salt (32)`` then segments of ``SEGMENT`` plaintext
bytes, each ``ciphertext + tag (16)``; the last one may be shorter (or empty, for an empty
file). Every object has a key of its own, derived (HKDF-SHA256) from the organization's data
key, the salt and the object's context (its storage key), so nonces never repeat across
objects and a sealed object copied under another key does not open. Each segment's nonce and
associated data carry its index and whether it is the last one: segments cannot be reordered,
dropped, repeated or the object cut short (at a segment boundary or not) without ``open``
failing.

``MAGIC`` starts with a NUL byte, which no file Prism accepts starts with (PDF, DOCX and text
without NULs; see ``prism.extraction.detect``): a stored object is sealed exactly when it starts
with ``MAGIC``. That makes sealing idempotent and lets readers open old clear objects too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"\x00PRISMs1"
SEGMENT = 64 * 1024
TAG = 16
_SALT = 32
HEADER = len(MAGIC) + 16 + _SALT
_SEALED_SEGMENT = SEGMENT + TAG


class SealedObjectError(ValueError):
    """The object is not a well-formed sealed object of this key and context: altered,
    truncated, reordered, or sealed for another object."""


def is_sealed(head: bytes) -> bool:
    return head.startswith(MAGIC)


def sealed_size(size: int) -> int:
    """The stored size of a ``size``-byte file once sealed."""
    segments = max(1, -(-size // SEGMENT))
    return HEADER + size + segments * TAG


def _object_key(data_key: bytes, salt: bytes, context: bytes) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"prism-sealed-object:" + context
    ).derive(data_key)
    return AESGCM(derived)


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _associated(header: bytes, index: int, last: bool) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


class Sealer:
    """Incremental sealing: ``update`` with plaintext as it arrives, ``finish`` at the end;
    each returns the sealed bytes ready so far. Holds at most one segment and one chunk."""

    def __init__(self, *, data_key_id: bytes, data_key: bytes, context: bytes) -> None:
        if len(data_key_id) != 16:
            raise ValueError("data key ids are 16 bytes")
        salt = os.urandom(_SALT)
        self._header = MAGIC + data_key_id + salt
        self._key = _object_key(data_key, salt, context)
        self._pending = bytearray()
        self._index = 0
        self._started = False
        self._finished = False

    def _segment(self, plain: bytes, last: bool) -> bytes:
        sealed = self._key.encrypt(
            _nonce(self._index, last), plain, _associated(self._header, self._index, last)
        )
        self._index += 1
        return sealed

    def update(self, plain: bytes) -> bytes:
        out = bytearray()
        if not self._started:
            out += self._header
            self._started = True
        self._pending += plain
        # A segment is sealed once more bytes follow it: only then is it known not to be last.
        while len(self._pending) > SEGMENT:
            out += self._segment(bytes(self._pending[:SEGMENT]), last=False)
            del self._pending[:SEGMENT]
        return bytes(out)

    def finish(self) -> bytes:
        if self._finished:
            raise ValueError("the sealer is finished")
        out = self.update(b"") + self._segment(bytes(self._pending), last=True)
        self._pending.clear()
        self._finished = True
        return out


class SealingReader:
    """A file-like view of ``source`` sealed: ``read(n)`` returns sealed bytes (for object
    stores that pull from a file object)."""

    def __init__(self, source: BinaryIO, sealer: Sealer) -> None:
        self._source = source
        self._sealer = sealer
        self._buffer = bytearray()
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = self._source.read(SEGMENT)
            if chunk:
                self._buffer += self._sealer.update(chunk)
            else:
                self._buffer += self._sealer.finish()
                self._done = True
        if size < 0:
            size = len(self._buffer)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


# (the data key id in the header) -> the raw data key, or SealedObjectError if not this one
KeyLookup = Callable[[bytes], Awaitable[bytes]]


async def open_sealed(
    chunks: AsyncIterator[bytes], key_for: KeyLookup, context: bytes
) -> AsyncIterator[bytes]:
    """The plaintext of a sealed object, segment by segment, from its stored bytes in chunks
    of any size. Raises ``SealedObjectError`` at the first segment that does not verify
    (bytes already yielded were authentic)."""
    buffer = bytearray()
    header: bytes | None = None
    key: AESGCM | None = None
    index = 0
    async for chunk in chunks:
        buffer += chunk
        if header is None:
            if len(buffer) < HEADER:
                continue
            header = bytes(buffer[:HEADER])
            if not is_sealed(header):
                raise SealedObjectError("not a sealed object")
            data_key = await key_for(header[len(MAGIC) : len(MAGIC) + 16])
            key = _object_key(data_key, header[len(MAGIC) + 16 :], context)
            del buffer[:HEADER]
        assert key is not None
        while len(buffer) > _SEALED_SEGMENT:  # more follows: this segment is not the last
            yield _open_segment(key, header, index, bytes(buffer[:_SEALED_SEGMENT]), last=False)
            del buffer[:_SEALED_SEGMENT]
            index += 1
    if header is None or key is None:
        raise SealedObjectError("the sealed object is cut short")
    yield _open_segment(key, header, index, bytes(buffer), last=True)


def _open_segment(key: AESGCM, header: bytes, index: int, sealed: bytes, *, last: bool) -> bytes:
    if len(sealed) < TAG:
        raise SealedObjectError("the sealed object is cut short")
    try:
        return key.decrypt(_nonce(index, last), sealed, _associated(header, index, last))
    except InvalidTag as exc:
        raise SealedObjectError(
            f"segment {index} of the sealed object was altered, moved or cut"
        ) from exc


async def open_any(
    chunks: AsyncIterator[bytes], key_for: KeyLookup, context: bytes
) -> AsyncIterator[bytes]:
    """A stored object's plaintext whether it is sealed or (stored before sealing) clear."""
    head = bytearray()
    async for chunk in chunks:
        head += chunk
        if len(head) >= len(MAGIC):
            break
    if not is_sealed(bytes(head)):
        if head:
            yield bytes(head)
        async for chunk in chunks:
            yield chunk
        return

    async def replay() -> AsyncIterator[bytes]:
        yield bytes(head)
        async for rest in chunks:
            yield rest

    async for plain in open_sealed(replay(), key_for, context):
        yield plain
