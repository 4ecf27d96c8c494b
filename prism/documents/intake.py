"""Receiving an upload: the file is inspected (size, digest, kind), stored (sealed if its
classification is), and becomes a document row with an extraction job, in the caller's
transaction. The same bytes uploaded again answer with the existing document."""

from __future__ import annotations

import asyncio
import hashlib
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.documents import originals
from prism.documents.processing import EXTRACT, enqueue
from prism.errors import (
    BadUserInput,
    Conflict,
    PayloadTooLarge,
    Unauthenticated,
    UnsupportedMediaType,
)
from prism.extraction.detect import ImageLimits, Kind, Unsupported, detect_stream, measure_image
from prism.models import documents as document_models
from prism.models.audit import Actor, RequestMeta, Subject
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import Classification, DataCategory, DocumentType, ProcessingStatus
from prism.models.governance import read_retention_policy
from prism.models.jobs import Job
from prism.models.scope import Scope
from prism.models.users import share_lock_user_state
from prism.services import Services
from prism.storage import document_key

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Received:
    document: Document
    deduplicated: bool
    job: Job | None


@dataclass(frozen=True)
class UploadInput:
    source: BinaryIO
    filename: str | None
    document_type: DocumentType | None
    classification: Classification | None
    analyze: bool


def sanitize_filename(name: str | None) -> str:
    """The client's name, kept as metadata only: no path, no control characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip(" .")
    return base[:255] or "document"


def _inspect(source: BinaryIO, max_bytes: int, images: ImageLimits) -> tuple[str, int, Kind]:
    digest = hashlib.sha256()
    size = 0
    source.seek(0)
    while chunk := source.read(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"Uploads are limited to {max_bytes} bytes.")
        digest.update(chunk)
    if size == 0:
        raise BadUserInput("The file is empty.", argument="file")
    try:
        kind = detect_stream(source)
        if kind.is_image:
            # Measured from its headers: a decompression bomb is refused here, not decoded.
            measure_image(source, kind, images)
    except Unsupported as exc:
        raise UnsupportedMediaType(str(exc)) from exc
    return digest.hexdigest(), size, kind


async def upload_document(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    data: UploadInput,
    *,
    on_rollback: Callable[[Callable[[], Awaitable[None]]], None],
) -> Received:
    """A caller's upload. ``on_rollback`` is given the undo of a newly stored object (its
    deletion), for the caller's transaction to run if it does not commit."""
    require(principal, Action.DOCUMENT_UPLOAD)
    received = await receive_upload(
        session,
        services,
        scope=principal.scope(),
        uploader_id=principal.user_id,
        department=principal.department,
        source=data.source,
        filename=data.filename,
        document_type=data.document_type,
        classification=data.classification,
        analyze=data.analyze,
        actor=audit.actor_of(principal),
        meta=meta,
    )
    if not received.deduplicated and received.document.storage_key:
        store, key = services.objects, received.document.storage_key
        on_rollback(lambda: store.delete(key))
    return received


async def receive_upload(
    session: AsyncSession,
    services: Services,
    *,
    scope: Scope,
    uploader_id: uuid.UUID | None,
    department: str | None,
    source: BinaryIO,
    filename: str | None,
    document_type: DocumentType | None,
    classification: Classification | None,
    analyze: bool,
    actor: Actor,
    meta: RequestMeta,
) -> Received:
    sha256, size, kind = await asyncio.to_thread(
        _inspect, source, services.settings.max_upload_bytes, services.image_limits
    )
    requested = classification
    classification = classification or Classification.INTERNAL
    if classification.rank > scope.max_classification.rank:
        raise BadUserInput(
            "A document cannot be classified above your own clearance.", argument="classification"
        )
    existing = _not_below(await _live_document_with_hash(session, scope, sha256), requested)
    if existing is not None and existing.document.processing_status is ProcessingStatus.FAILED:
        # Uploading a failed document again retries it (after a fix of Prism, say): the
        # stored object is the same bytes, so only the processing starts over.
        document = existing.document
        document.processing_status = ProcessingStatus.UPLOADED
        document.processing_error = None
        job = await enqueue(session, services, document, EXTRACT, {"analyze": analyze})
        return Received(document=document, deduplicated=True, job=job)
    if existing is not None:
        return existing
    policy = await read_retention_policy(session, scope.organization_id, DataCategory.DOCUMENTS)
    now = utcnow()
    document = Document(
        id=uuid.uuid4(),
        organization_id=scope.organization_id,
        uploaded_by=uploader_id,
        department=department,
        filename=sanitize_filename(filename),
        mime_type=kind.mime_type,
        file_size=size,
        sha256=sha256,
        document_type=document_type or DocumentType.GENERAL,
        classification=classification,
        processing_status=ProcessingStatus.UPLOADED,
        created_at=now,
        retention_expires_at=policy.expires_at(now),
    )
    document.storage_key = document_key(scope.organization_id, document.id)
    source.seek(0)
    # CONFIDENTIAL and RESTRICTED files are sealed on their way to the store.
    await originals.put_original(
        session,
        services.objects,
        services.envelope,
        organization_id=scope.organization_id,
        classification=classification,
        storage_key=document.storage_key,
        source=source,
        size=size,
        content_type=kind.mime_type,
    )
    try:
        # The file took a while to store: the uploader may have been erased or deactivated
        # meanwhile. Their row is share-locked until the document row commits, so an erasure
        # either finished before (refused here) or waits and then finds the document.
        await _require_uploader_active(session, scope.organization_id, uploader_id)
        try:
            async with session.begin_nested():
                session.add(document)
                await session.flush()
        except IntegrityError:
            # The same bytes arrived concurrently and won the race: answer with theirs.
            await services.objects.delete(document.storage_key)
            raced = _not_below(await _live_document_with_hash(session, scope, sha256), requested)
            if raced is None:
                raise
            return raced
        job = await enqueue(session, services, document, EXTRACT, {"analyze": analyze})
        await audit.record(
            session,
            None,
            meta,
            organization_id=scope.organization_id,
            actor=actor,
            event_type="document.upload",
            category="data_change",
            description=f"Document {document.filename!r} uploaded ({size} bytes, {kind.value})",
            resource_type="Document",
            resource_id=document.id,
            subject=Subject(classification, document.department),
            after={
                "filename": document.filename,
                "sha256": sha256,
                "size": size,
                "classification": classification.value,
            },
        )
    except BaseException:
        # No row will point at the object: do not leave it behind.
        await services.objects.delete(document.storage_key)
        raise
    return Received(document=document, deduplicated=False, job=job)


async def _require_uploader_active(
    session: AsyncSession, organization_id: uuid.UUID, uploader_id: uuid.UUID | None
) -> None:
    if uploader_id is None:  # a service token: no person behind the upload
        return
    state = await share_lock_user_state(session, organization_id, uploader_id)
    if state is None:
        raise Unauthenticated("The uploader is no longer active.")
    is_active, erased_at = state
    if not is_active or erased_at is not None:
        raise Unauthenticated("The uploader is no longer active.")


def _not_below(existing: Received | None, requested: Classification | None) -> Received | None:
    """A duplicate upload never silently keeps a lower classification than the one asked for
    (the existing copy may be stored in the clear): CONFLICT, saying to reclassify the
    existing document instead (updateDocument, which seals what the level requires)."""
    if (
        existing is not None
        and requested is not None
        and requested.rank > existing.document.classification.rank
    ):
        raise Conflict(
            "An identical document already exists at a lower classification; raise its "
            "classification instead of uploading it again.",
            argument="classification",
        )
    return existing


async def _live_document_with_hash(
    session: AsyncSession, scope: Scope, sha256: str
) -> Received | None:
    found = await document_models.read_live_document_with_hash(
        session, scope.organization_id, sha256
    )
    if found is None:
        return None
    if not await document_models.is_document_visible(session, scope, found.id):
        raise Conflict("An identical document already exists in your organization.")
    return Received(document=found, deduplicated=True, job=None)
