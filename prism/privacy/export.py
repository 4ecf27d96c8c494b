"""GDPR access and portability: a person's data exported as an encrypted bundle with an
expiring link. The bundle holds only what the requester may read; what is withheld is
counted. It is built by a job (``build_export``), sealed frame by frame with the
organization's data key, and downloaded through a signed link (``open_download``)."""

from __future__ import annotations

import struct
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.crypto.envelope import Envelope
from prism.db.engine import Database
from prism.documents import originals
from prism.errors import Conflict
from prism.models import exports as export_models
from prism.models import jobs as job_models
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import Classification, JobState
from prism.models.exports import DataExport
from prism.models.scope import Scope
from prism.models.users import User
from prism.privacy.subjects import subject_for_update, user_resource
from prism.services import Services
from prism.storage import ObjectStore

EXPORT = "gdpr.export"
# Bundles are sealed in frames: a large bundle never sits in memory whole.
FRAME = 1024 * 1024


def export_key(organization_id: uuid.UUID, export_id: uuid.UUID) -> str:
    return f"org/{organization_id}/exports/{export_id}.zip.sealed"


async def request_export(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    subject_id: uuid.UUID,
    requested_by: uuid.UUID | None,
    scope: Scope,
    max_attempts: int,
) -> DataExport:
    """Queue an export; ``scope`` is the requester's: the bundle holds only what they may
    read (``collect``)."""
    export = DataExport(
        id=uuid.uuid4(),
        organization_id=organization_id,
        subject_id=subject_id,
        requested_by=requested_by,
        state=JobState.QUEUED,
    )
    job = await job_models.enqueue_job(
        session,
        organization_id=organization_id,
        kind=EXPORT,
        payload={"exportId": str(export.id), "scope": scope_payload(scope)},
        max_attempts=max_attempts,
    )
    export.job_id = job.id
    return await export_models.create_data_export(session, export)


def scope_payload(scope: Scope) -> dict[str, Any]:
    return {
        "maxClassification": scope.max_classification.value,
        "department": scope.department,
        "allDepartments": scope.all_departments,
        "userId": str(scope.user_id) if scope.user_id else None,
    }


def scope_of_payload(organization_id: uuid.UUID, payload: dict[str, Any]) -> Scope:
    """The requester's scope an export job carries; a job without one (queued before scopes
    were recorded) gets the narrowest: PUBLIC only, no department."""
    raw = payload.get("scope") or {}
    user_id = raw.get("userId")
    return Scope(
        organization_id=organization_id,
        user_id=uuid.UUID(user_id) if user_id else None,
        max_classification=Classification(raw.get("maxClassification", "PUBLIC")),
        department=raw.get("department"),
        all_departments=bool(raw.get("allDepartments", False)),
    )


WITHHELD_REASON = (
    "above the requesting ADMIN's clearance (or RESTRICTED in another department): an ADMIN "
    "cleared for it must request the export to complete it"
)


def _row(obj: Any, columns: list[str]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in columns}


async def collect(
    session: AsyncSession, subject: User, scope: Scope
) -> tuple[dict[str, Any], list[Document]]:
    """The person's data as JSON-ready dicts, and the documents whose files go along: only
    what ``scope`` (the requester's) may read, under the read rule every query applies.
    What is withheld is counted in ``withheld`` (never named: a filename or a quote is the
    data withheld), so the export is known to be partial and who can complete it."""
    profile = _row(
        subject,
        [
            "id",
            "email",
            "first_name",
            "last_name",
            "role",
            "department",
            "clearance",
            "is_active",
            "mfa_enabled",
            "access_expires_at",
            "last_login_at",
            "created_at",
            "updated_at",
        ],
    )
    tokens = await export_models.read_api_tokens_of(session, subject.id)
    sessions = await export_models.read_sessions_of(session, subject.id)
    all_feedback = await export_models.read_feedback_of(session, subject.id, scope)
    feedback = [f for f, ok in all_feedback if ok]
    all_events = await export_models.read_audit_events_of(session, subject.id, scope)
    events = [e for e, ok in all_events if ok]
    # Soft-deleted documents too (their rows and files are still the person's data).
    all_documents = await export_models.read_uploads_of(session, subject.id, scope)
    documents = [d for d, ok in all_documents if ok]
    data = {
        "profile": profile,
        "apiTokens": [
            _row(t, ["id", "name", "prefix", "scopes", "created_at", "expires_at", "revoked_at"])
            for t in tokens
        ],
        "sessions": [
            _row(s, ["created_at", "expires_at", "revoked_at", "ip_address", "user_agent"])
            for s in sessions
        ],
        "feedback": [
            _row(
                f,
                [
                    "id",
                    "document_id",
                    "item_id",
                    "action",
                    "category",
                    "rating",
                    "custom_text",
                    "highlighted_text",
                    "workflow_status",
                    "created_at",
                ],
            )
            for f in feedback
        ],
        "auditEvents": [
            _row(
                e,
                [
                    "id",
                    "created_at",
                    "event_type",
                    "description",
                    "resource_type",
                    "resource_id",
                    "before",
                    "after",
                    "ip_address",
                    "user_agent",
                ],
            )
            for e in events
        ],
        "documents": [
            {
                **_row(
                    d,
                    [
                        "id",
                        "filename",
                        "mime_type",
                        "file_size",
                        "sha256",
                        "document_type",
                        "classification",
                        "created_at",
                        "deleted_at",
                        "legal_hold",
                    ],
                ),
                "file": f"files/{d.id}" if d.storage_key else None,
            }
            for d in documents
        ],
        "withheld": {
            "documents": len(all_documents) - len(documents),
            "feedback": len(all_feedback) - len(feedback),
            "auditEvents": len(all_events) - len(events),
            "reason": WITHHELD_REASON,
        },
    }
    return data, documents


async def build_bundle(
    objects: ObjectStore,
    data: dict[str, Any],
    documents: list[Document],
    target: Any,
    opened: Callable[[Document], AsyncIterator[bytes]] | None = None,
) -> None:
    """A zip of ``person.json`` and the stored files, written to the file ``target``;
    ``opened`` reads a document's file (sealed originals opened on the way)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "person.json",
            orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS),
        )
        for document in documents:
            if document.storage_key is None or not await objects.exists(document.storage_key):
                continue
            chunks = opened(document) if opened else objects.open_stream(document.storage_key)
            with archive.open(f"files/{document.id}", "w") as member:
                async for chunk in chunks:
                    member.write(chunk)


def _frame_context(export_id: uuid.UUID, index: int, last: bool) -> bytes:
    # The index and the last-frame flag are authenticated: frames cannot be reordered,
    # dropped or the bundle cut short without the download failing.
    return b"prism-export:" + export_id.bytes + struct.pack(">Q?", index, last)


async def seal_frames(
    session: AsyncSession,
    envelope: Envelope,
    organization_id: uuid.UUID,
    export_id: uuid.UUID,
    source: Any,
    target: Any,
) -> int:
    """``source`` sealed frame by frame (``length (4) | sealed``) into ``target``."""
    written = 0
    index = 0
    chunk = source.read(FRAME)
    while True:
        following = source.read(FRAME)
        last = not following
        sealed = await envelope.seal(
            session, organization_id, chunk, _frame_context(export_id, index, last)
        )
        target.write(struct.pack(">I", len(sealed)) + sealed)
        written += 4 + len(sealed)
        if last:
            return written
        chunk, index = following, index + 1


async def open_frames(
    envelope: Envelope,
    organization_id: uuid.UUID,
    export_id: uuid.UUID,
    chunks: AsyncIterator[bytes],
) -> AsyncIterator[bytes]:
    """The bundle's plaintext, frame by frame, from the stored object's chunks (with the data
    key already loaded: no database connection is held while a client downloads)."""
    buffer = b""
    index = 0
    finished = False
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= 4:
            if finished:
                raise ValueError("the export bundle has frames after its last one")
            (length,) = struct.unpack(">I", buffer[:4])
            if len(buffer) < 4 + length:
                break
            sealed, buffer = buffer[4 : 4 + length], buffer[4 + length :]
            try:
                plain = envelope.open_cached(
                    organization_id, sealed, _frame_context(export_id, index, False)
                )
            except ValueError:
                plain = envelope.open_cached(
                    organization_id, sealed, _frame_context(export_id, index, True)
                )
                finished = True
            index += 1
            yield plain
    if not finished or buffer:
        raise ValueError("the export bundle is truncated")


@dataclass(frozen=True)
class ExportPlan:
    export_id: uuid.UUID
    organization_id: uuid.UUID
    data: dict[str, Any]
    documents: list[Document]


async def build_export(
    db: Database,
    objects: ObjectStore,
    envelope: Envelope,
    *,
    organization_id: uuid.UUID,
    export_id: uuid.UUID,
    scope: Scope,
    link_ttl: timedelta,
    complete: Callable[[AsyncSession], Awaitable[None]],
) -> None:
    """The export job: collect, bundle, seal, store; then the row says where and until when.
    A retried run overwrites the same object: nothing is left behind twice."""
    async with db.transaction(organization_id) as session:
        export = await export_models.read_data_export(session, export_id, for_update=True)
        subject = await export_models.read_export_subject(session, export) if export else None
        if export is None or subject is None or export.state is JobState.SUCCEEDED:
            if export is not None and export.state is not JobState.SUCCEEDED:
                export.state = JobState.DEAD  # the person was removed meanwhile
            await complete(session)
            return
        export.state = JobState.RUNNING
        data, documents = await collect(session, subject, scope)
    key = export_key(organization_id, export_id)
    with tempfile.TemporaryFile() as plain, tempfile.TemporaryFile() as sealed:
        await build_bundle(
            objects,
            data,
            documents,
            plain,
            lambda d: originals.open_original(
                db, objects, envelope, organization_id, d.storage_key or ""
            ),
        )
        plain.seek(0)
        async with db.transaction(organization_id) as session:
            size = await seal_frames(session, envelope, organization_id, export_id, plain, sealed)
        sealed.seek(0)
        await objects.put_file(key, sealed, size=size, content_type="application/octet-stream")
    async with db.transaction(organization_id) as session:
        export = await export_models.read_data_export(session, export_id, for_update=True)
        if export is None:  # erased meanwhile: the bundle must not outlive the row
            await objects.delete(key)
            await complete(session)
            return
        export.state = JobState.SUCCEEDED
        export.storage_key = key
        export.size_bytes = size
        export.finished_at = utcnow()
        export.expires_at = export.finished_at + link_ttl
        await audit.record(
            session,
            None,
            None,
            organization_id=organization_id,
            event_type="user.export_ready",
            category="governance",
            description=f"Data export {export_id} of user {export.subject_id} is ready",
            resource_type="User",
            resource_id=export.subject_id,
            after={
                "exportId": str(export_id),
                "bytes": size,
                "documents": len(documents),
                "withheld": {k: v for k, v in data["withheld"].items() if k != "reason"},
            },
        )
        await complete(session)


async def open_download(
    db: Database,
    objects: ObjectStore,
    envelope: Envelope,
    *,
    organization_id: uuid.UUID,
    export_id: uuid.UUID,
    meta: RequestMeta,
) -> AsyncIterator[bytes] | None:
    """The bundle's bytes for a verified link, or None if it is gone or expired. The download
    is audited before the first byte leaves."""
    async with db.transaction(organization_id) as session:
        export = await export_models.read_data_export(session, export_id)
        if (
            export is None
            or export.state is not JobState.SUCCEEDED
            or export.storage_key is None
            or export.expires_at is None
            or export.expires_at <= utcnow()
        ):
            return None
        await envelope.data_key(session, organization_id)  # cached for the stream below
        await audit.record(
            session,
            None,
            meta,
            organization_id=organization_id,
            event_type="user.export_download",
            category="governance",
            description=f"Data export {export_id} of user {export.subject_id} downloaded",
            resource_type="User",
            resource_id=export.subject_id,
            after={"exportId": str(export_id)},
        )
        key = export.storage_key

    return open_frames(envelope, organization_id, export_id, objects.open_stream(key))


async def export_user_data(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta | None,
    user_id: uuid.UUID,
) -> DataExport:
    """Queue an export of ``user_id``'s data, as far as ``principal`` may read it (the
    ``user.export`` event is the request's receipt)."""
    subject = await subject_for_update(session, principal, user_id)
    require(principal, Action.USER_EXPORT, user_resource(subject))
    if subject.erased_at is not None:
        raise Conflict("The user has been erased: there is nothing of them to export.")
    export = await request_export(
        session,
        organization_id=principal.organization_id,
        subject_id=subject.id,
        requested_by=principal.user_id,
        scope=principal.scope(),
        max_attempts=services.settings.job_max_attempts,
    )
    await audit.record(
        session,
        principal,
        meta,
        event_type="user.export",
        category="governance",
        description=f"Export of the data of user {subject.id} requested",
        resource_type="User",
        resource_id=subject.id,
        after={"exportId": str(export.id), "jobId": str(export.job_id)},
    )
    return export
