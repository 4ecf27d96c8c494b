"""Stored originals (the uploaded files) of CONFIDENTIAL and RESTRICTED documents are sealed
in the object store with the organization's data key (the same envelope as RESTRICTED
sections), streaming, in 64 KiB AES-GCM segments (``prism.crypto.sealed``). Only Prism opens
them: extraction and personal-data exports read through ``open_original``.

- Upload: a file classified CONFIDENTIAL or above is sealed on its way to the store.
- Reclassification up to CONFIDENTIAL or RESTRICTED seals the stored file in the same
  transaction (the document row is locked meanwhile). The sealed object keeps the storage
  tier the row records (a COLD file stays GLACIER_IR). A file that cannot be read now (in
  ARCHIVE: S3 answers InvalidObjectState until it is restored) does not hold the
  reclassification back: the higher classification applies at once (it is what governs
  access), the failure is logged, and the file stays listed as unsealed by
  ``prism originals seal`` (which selects every CONFIDENTIAL/RESTRICTED document whose stored
  bytes lack the sealed header) until a run after the restore seals it. Down to INTERNAL or
  PUBLIC, the file stays sealed: sealing is one-way, so a reclassification mistake never
  puts a sensitive file in the clear, and readers open either form (a sealed object says so
  in its first bytes).
- ``prism originals seal`` seals what was stored before this existed, one document at a
  time under its row's share lock (an erasure waits, and never sees its file written back);
  a re-run skips what is sealed already, so an interrupted run simply resumes.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncSession

from prism.crypto.envelope import Envelope
from prism.crypto.sealed import (
    MAGIC,
    SealedObjectError,
    Sealer,
    SealingReader,
    is_sealed,
    open_any,
    sealed_size,
)
from prism.db.engine import Database
from prism.models.documents import (
    Document,
    read_document_ids_with_originals,
    share_lock_original,
)
from prism.models.enums import Classification, StorageTier
from prism.models.organizations import read_organization_ids
from prism.storage import ObjectStore

log = structlog.get_logger("prism.originals")
SEALED_CLASSIFICATIONS = frozenset({Classification.CONFIDENTIAL, Classification.RESTRICTED})
SEALED_CONTENT_TYPE = "application/octet-stream"


def is_sealed_classification(classification: Classification) -> bool:
    return classification in SEALED_CLASSIFICATIONS


def _context(storage_key: str) -> bytes:
    # The object's key is authenticated: a sealed file copied under another document's key
    # (or another organization's) does not open.
    return b"prism-original:" + storage_key.encode()


def _sealer(key_id: uuid.UUID, data_key: bytes, storage_key: str) -> Sealer:
    return Sealer(data_key_id=key_id.bytes, data_key=data_key, context=_context(storage_key))


async def put_original(
    session: AsyncSession,
    objects: ObjectStore,
    envelope: Envelope,
    *,
    organization_id: uuid.UUID,
    classification: Classification,
    storage_key: str,
    source: BinaryIO,
    size: int,
    content_type: str,
) -> None:
    """Store an upload (read from ``source``'s position), sealed if its classification is."""
    if not is_sealed_classification(classification):
        await objects.put_file(storage_key, source, size=size, content_type=content_type)
        return
    key_id, data_key = await envelope.stream_key(session, organization_id)
    reader: Any = SealingReader(source, _sealer(key_id, data_key, storage_key))
    await objects.put_file(
        storage_key, reader, size=sealed_size(size), content_type=SEALED_CONTENT_TYPE
    )


def open_original(
    db: Database,
    objects: ObjectStore,
    envelope: Envelope,
    organization_id: uuid.UUID,
    storage_key: str,
) -> AsyncIterator[bytes]:
    """The original's bytes, opened on the fly if sealed (segment by segment; no
    database connection is held while it streams). Raises ``SealedObjectError`` if the
    stored bytes were altered or cut."""

    async def key_for(key_id: bytes) -> bytes:
        cached = envelope.cached_stream_key(organization_id)
        if cached is None:
            async with db.transaction(organization_id) as session:
                cached = await envelope.stream_key(session, organization_id)
        if cached[0].bytes != key_id:
            raise SealedObjectError("sealed with another organization's data key")
        return cached[1]

    return open_any(objects.open_stream(storage_key), key_for, _context(storage_key))


async def _head(chunks: AsyncIterator[bytes]) -> tuple[bytes, AsyncIterator[bytes]]:
    head = bytearray()
    async for chunk in chunks:
        head += chunk
        if len(head) >= len(MAGIC):
            break
    return bytes(head), chunks


async def _close(chunks: AsyncIterator[bytes]) -> None:
    close: Callable[[], Any] | None = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


async def seal_stored(
    session: AsyncSession,
    objects: ObjectStore,
    envelope: Envelope,
    organization_id: uuid.UUID,
    storage_key: str,
    tier: str | None = None,
) -> str:
    """Seal a clear stored original in place: ``sealed``, ``already`` (sealed before) or
    ``missing``. The sealed form is written to a temporary file as it is made (no clear
    byte reaches the disk or memory beyond one chunk), then replaces the object in one put;
    an object on a tier other than HOT (``tier``, as the row records it) is put back on it."""
    if not await objects.exists(storage_key):
        return "missing"
    head, chunks = await _head(objects.open_stream(storage_key))
    if is_sealed(head):
        await _close(chunks)
        return "already"
    key_id, data_key = await envelope.stream_key(session, organization_id)
    sealer = _sealer(key_id, data_key, storage_key)
    try:
        with tempfile.TemporaryFile(prefix="prism-seal-") as sealed:
            sealed.write(sealer.update(head))
            async for chunk in chunks:
                sealed.write(sealer.update(chunk))
            sealed.write(sealer.finish())
            size = sealed.tell()
            sealed.seek(0)
            await objects.put_file(storage_key, sealed, size=size, content_type=SEALED_CONTENT_TYPE)
    finally:
        await _close(chunks)
    if tier is not None and tier != StorageTier.HOT.value:
        await objects.change_tier(storage_key, tier)
    return "sealed"


async def apply_classification(
    session: AsyncSession, objects: ObjectStore, envelope: Envelope, document: Document
) -> str | None:
    """After a reclassification (the document row locked by the caller): seal the stored
    original if the new level is sealed. Never unsealed (see the module's docstring). A file
    that cannot be read now (archived) is left for ``prism originals seal``: ``deferred``,
    logged; the reclassification itself goes ahead."""
    if document.storage_key is None or not is_sealed_classification(document.classification):
        return None
    try:
        return await seal_stored(
            session,
            objects,
            envelope,
            document.organization_id,
            document.storage_key,
            tier=document.storage_tier.value,
        )
    except (OSError, BotoCoreError, ClientError) as exc:
        log.warning(
            "original not sealed now; `prism originals seal` seals it once it can be read",
            document_id=str(document.id),
            tier=document.storage_tier.value,
            error=str(exc),
        )
        return "deferred"


@dataclass
class SealReport:
    examined: int = 0
    sealed: int = 0
    already: int = 0
    missing: int = 0
    failed: int = 0
    organizations: int = 0
    sealed_keys: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, int]:
        return {
            "organizations": self.organizations,
            "examined": self.examined,
            "sealed": self.sealed,
            "alreadySealed": self.already,
            "missing": self.missing,
            "failed": self.failed,
        }


async def seal_existing(db: Database, objects: ObjectStore, envelope: Envelope) -> SealReport:
    """Seal every stored original of a CONFIDENTIAL or RESTRICTED document (deleted ones
    too, while their file is kept) that is still in the clear. Safe to re-run."""
    report = SealReport()
    async with db.transaction(None) as session:
        organizations = await read_organization_ids(session)
    for organization_id in organizations:
        report.organizations += 1
        async with db.transaction(organization_id) as session:
            document_ids = await read_document_ids_with_originals(
                session, organization_id, SEALED_CLASSIFICATIONS
            )
        for document_id in document_ids:
            async with db.transaction(organization_id) as session:
                # Share-locked while its file is rewritten: an erasure or reclassification
                # of this document waits, and never finds its file written back afterwards.
                found = await share_lock_original(session, document_id, SEALED_CLASSIFICATIONS)
                if found is None or found[0] is None:
                    continue  # erased or reclassified meanwhile
                storage_key, storage_tier = found[0], found[1]
                report.examined += 1
                try:
                    outcome = await seal_stored(
                        session,
                        objects,
                        envelope,
                        organization_id,
                        storage_key,
                        tier=storage_tier.value,
                    )
                except (OSError, BotoCoreError, ClientError) as exc:
                    # An archived object (restore it first) or a store error: the others go
                    # on; a re-run picks this one up.
                    log.warning("original not sealed", key=storage_key, error=str(exc))
                    outcome = "failed"
            if outcome == "sealed":
                report.sealed += 1
                report.sealed_keys.append(storage_key)
            elif outcome == "already":
                report.already += 1
            elif outcome == "failed":
                report.failed += 1
            else:
                report.missing += 1
    return report
