"""GDPR: a person's data exported as an encrypted bundle with an expiring link, and erasure
by pseudonymization.

Erasure keeps the rows other records need (the user row, now a pseudonym; feedback on other
people's documents; documents under legal hold) and removes what identifies the person. The
audit log is append-only and hash-chained, so its rows are never rewritten: audit events
name people by user id (which now points at the pseudonym), but some older events also carry
an address or a name in their text (``user.create`` records the e-mail). Those are counted
and listed in the receipt as kept, with the reason, rather than silently left behind.

Work outside the database (stored objects, lake partitions, the search index) runs after the
commit, in a job whose handler calls every hook of ``ERASE_HOOKS`` and then queues index
jobs for the erased documents: a new store of personal data adds its hook there.
"""

from __future__ import annotations

import struct
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from prism.crypto.envelope import Envelope
from prism.db.engine import Database
from prism.documents import originals
from prism.errors import Conflict
from prism.governance import lake
from prism.models import governance as governance_models
from prism.models import jobs as job_models
from prism.models.analyses import Analysis
from prism.models.audit import Actor, AuditEvent, RequestMeta, record_event
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import Classification, JobState
from prism.models.feedback import Feedback
from prism.models.governance_data import DataExport, create_data_export
from prism.models.jobs import Job
from prism.models.scope import Scope, within_clearance
from prism.models.users import ApiToken, MfaBackupCode, RefreshSession, User
from prism.storage import ObjectStore

EXPORT = "gdpr.export"
ERASE_CLEANUP = "gdpr.erase_cleanup"
ERASED_DOMAIN = "erased.invalid"
# Bundles are sealed in frames: a large bundle never sits in memory whole.
FRAME = 1024 * 1024


def export_key(organization_id: uuid.UUID, export_id: uuid.UUID) -> str:
    return f"org/{organization_id}/exports/{export_id}.zip.sealed"


# --- export ----------------------------------------------------------------------------------


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
    return await create_data_export(session, export)


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
    tokens = await session.scalars(sa.select(ApiToken).where(ApiToken.user_id == subject.id))
    sessions = await session.scalars(
        sa.select(RefreshSession).where(RefreshSession.user_id == subject.id)
    )
    readable = within_clearance(scope, Document.classification, Document.department)
    # Feedback quotes the document it is on: readable only with that document.
    all_feedback = list(
        await session.execute(
            sa.select(Feedback, readable)
            .join(Document, Document.id == Feedback.document_id)
            .where(Feedback.user_id == subject.id)
            .order_by(Feedback.created_at, Feedback.id)
        )
    )
    feedback = [f for f, ok in all_feedback if ok]
    all_events = list(
        await session.execute(
            sa.select(
                AuditEvent,
                within_clearance(
                    scope,
                    AuditEvent.classification,
                    AuditEvent.department,
                    unclassified_visible=True,
                ),
            )
            .where(sa.or_(AuditEvent.actor_id == subject.id, AuditEvent.resource_id == subject.id))
            .order_by(AuditEvent.created_at, AuditEvent.id)
        )
    )
    events = [e for e, ok in all_events if ok]
    # Soft-deleted documents too (their rows and files are still the person's data).
    all_documents = list(
        await session.execute(
            sa.select(Document, readable)
            .where(Document.uploaded_by == subject.id)
            .order_by(Document.created_at, Document.id)
        )
    )
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
    store: ObjectStore,
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
            if document.storage_key is None or not await store.exists(document.storage_key):
                continue
            chunks = opened(document) if opened else store.open_stream(document.storage_key)
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
    store: ObjectStore,
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
        export = await session.get(DataExport, export_id, with_for_update=True)
        subject = (
            await session.get(User, export.subject_id) if export and export.subject_id else None
        )
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
            store,
            data,
            documents,
            plain,
            lambda d: originals.open_original(
                db, store, envelope, organization_id, d.storage_key or ""
            ),
        )
        plain.seek(0)
        async with db.transaction(organization_id) as session:
            size = await seal_frames(session, envelope, organization_id, export_id, plain, sealed)
        sealed.seek(0)
        await store.put_file(key, sealed, size=size, content_type="application/octet-stream")
    async with db.transaction(organization_id) as session:
        export = await session.get(DataExport, export_id, with_for_update=True)
        if export is None:  # erased meanwhile: the bundle must not outlive the row
            await store.delete(key)
            await complete(session)
            return
        export.state = JobState.SUCCEEDED
        export.storage_key = key
        export.size_bytes = size
        export.finished_at = utcnow()
        export.expires_at = export.finished_at + link_ttl
        await record_event(
            session,
            organization_id=organization_id,
            actor=Actor(),
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
    store: ObjectStore,
    envelope: Envelope,
    *,
    organization_id: uuid.UUID,
    export_id: uuid.UUID,
    meta: RequestMeta,
) -> AsyncIterator[bytes] | None:
    """The bundle's bytes for a verified link, or None if it is gone or expired. The download
    is audited before the first byte leaves."""
    async with db.transaction(organization_id) as session:
        export = await session.get(DataExport, export_id)
        if (
            export is None
            or export.state is not JobState.SUCCEEDED
            or export.storage_key is None
            or export.expires_at is None
            or export.expires_at <= utcnow()
        ):
            return None
        await envelope.data_key(session, organization_id)  # cached for the stream below
        await record_event(
            session,
            organization_id=organization_id,
            actor=Actor(),
            event_type="user.export_download",
            category="governance",
            description=f"Data export {export_id} of user {export.subject_id} downloaded",
            resource_type="User",
            resource_id=export.subject_id,
            after={"exportId": str(export_id)},
            meta=meta,
        )
        key = export.storage_key

    return open_frames(envelope, organization_id, export_id, store.open_stream(key))


# --- erasure ---------------------------------------------------------------------------------


@dataclass
class Erasure:
    subject_id: uuid.UUID
    erased_at: datetime
    documents_deleted: int
    documents_kept_for_legal_hold: int
    audit_events_retained: int
    retained: list[str]
    objects: list[str] = field(default_factory=list)
    deleted_document_ids: list[uuid.UUID] = field(default_factory=list)
    # Creation days (UTC) of the rows deleted or changed: their lake partitions are rewritten.
    days: set[date] = field(default_factory=set)
    audit_event_id: uuid.UUID | None = None
    # The job that removes what lives outside the database (stored files, lake partitions,
    # search index entries): the erasure is complete only once it has SUCCEEDED.
    cleanup_job: Job | None = None


def pseudonym(user_id: uuid.UUID) -> str:
    return f"erased-{user_id.hex}@{ERASED_DOMAIN}"


async def erase_user(session: AsyncSession, subject: User) -> Erasure:
    """Erase ``subject`` (locked by the caller) in the caller's transaction."""
    if subject.erased_at is not None:
        raise Conflict("The user has already been erased.")
    identifiers = [v for v in (subject.email, subject.first_name, subject.last_name) if v]
    documents = list(
        await session.scalars(
            sa.select(Document).where(Document.uploaded_by == subject.id).with_for_update()
        )
    )
    held = [d for d in documents if d.legal_hold]
    doomed = [d for d in documents if not d.legal_hold]
    exports = list(
        await session.scalars(sa.select(DataExport).where(DataExport.subject_id == subject.id))
    )
    days = await _days_touched(session, subject.id, [d.id for d in doomed])
    objects = [d.storage_key for d in doomed if d.storage_key]
    objects += [e.storage_key for e in exports if e.storage_key]
    # Sections, analyses and everyone's feedback on these documents go with them (cascade).
    if doomed:
        await session.execute(sa.delete(Document).where(Document.id.in_([d.id for d in doomed])))
    if exports:
        await session.execute(
            sa.delete(DataExport).where(DataExport.id.in_([e.id for e in exports]))
        )
    # Their words on other people's documents may identify them; the decision stays.
    await session.execute(
        sa.update(Feedback)
        .where(Feedback.user_id == subject.id)
        .values(custom_text=None, highlighted_text=None)
    )
    await session.execute(sa.delete(RefreshSession).where(RefreshSession.user_id == subject.id))
    await session.execute(sa.delete(ApiToken).where(ApiToken.user_id == subject.id))
    await session.execute(sa.delete(MfaBackupCode).where(MfaBackupCode.user_id == subject.id))
    now = utcnow()
    subject.email = pseudonym(subject.id)
    subject.first_name = None
    subject.last_name = None
    subject.department = None
    # Not an argon2 hash: no password verifies against it.
    subject.password_hash = "!erased"
    subject.is_active = False
    subject.mfa_enabled = False
    subject.mfa_secret = None
    subject.mfa_last_step = None
    subject.last_login_at = None
    subject.access_expires_at = now
    subject.erased_at = now
    await session.flush()
    mentions = [
        sa.or_(
            AuditEvent.description.ilike(f"%{value}%"),
            sa.cast(AuditEvent.before, sa.Text).ilike(f"%{value}%"),
            sa.cast(AuditEvent.after, sa.Text).ilike(f"%{value}%"),
        )
        for value in identifiers
    ]
    retained_events = int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(sa.or_(AuditEvent.actor_id == subject.id, *mentions))
        )
        or 0
    )
    retained = [
        "user row: kept as a pseudonym (id, role, dates) that audit events and feedback name",
        "audit events: append-only and hash-chained, never rewritten; events acted by the "
        "person keep their IP address and user agent, and events written before the erasure "
        "may carry the address or name in their text (counted in auditEventsRetained)",
        "feedback on other people's documents: action, rating and workflow under the pseudonym "
        "(their own text removed)",
    ]
    if held:
        retained.append(
            "documents under legal hold: kept whole (metadata, text, file) until the hold "
            "lifts, then erased like the rest (cleanupComplete stays false until then)"
        )
    return Erasure(
        subject_id=subject.id,
        erased_at=now,
        documents_deleted=len(doomed),
        documents_kept_for_legal_hold=len(held),
        audit_events_retained=retained_events,
        retained=retained,
        objects=objects,
        deleted_document_ids=[d.id for d in doomed],
        days=days,
    )


async def _days_touched(
    session: AsyncSession, subject_id: uuid.UUID, document_ids: list[uuid.UUID]
) -> set[date]:
    """The UTC creation days of the documents to delete, their analyses and feedback, and of
    the person's feedback elsewhere: the lake partitions that hold them."""

    def day(column: Any) -> Any:
        return sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), column), sa.Date)

    queries = [
        sa.select(day(Feedback.created_at)).where(Feedback.user_id == subject_id),
    ]
    if document_ids:
        queries += [
            sa.select(day(Document.created_at)).where(Document.id.in_(document_ids)),
            sa.select(day(Analysis.created_at)).where(Analysis.document_id.in_(document_ids)),
            sa.select(day(Feedback.created_at)).where(Feedback.document_id.in_(document_ids)),
        ]
    return set(await session.scalars(sa.union(*queries)))


async def schedule_cleanup(
    session: AsyncSession, erasure: Erasure, organization_id: uuid.UUID, max_attempts: int
) -> Job:
    """After the commit, a job removes what lives outside the database."""
    erasure.cleanup_job = await job_models.enqueue_job(
        session,
        organization_id=organization_id,
        kind=ERASE_CLEANUP,
        payload={
            "subjectId": str(erasure.subject_id),
            "objects": erasure.objects,
            "documentIds": [str(d) for d in erasure.deleted_document_ids],
            "days": sorted(d.isoformat() for d in erasure.days),
        },
        max_attempts=max_attempts,
    )
    return erasure.cleanup_job


async def schedule_lake_rewrite(
    session: AsyncSession,
    organization_id: uuid.UUID,
    days: set[date],
    *,
    reason: str,
    max_attempts: int,
) -> Job | None:
    """Rows deleted by something other than an erasure (a lifecycle purge) leave the lake
    too: a cleanup job with no subject rewrites their days, queued in the transaction that
    deletes them (retried like an erasure's; never lost to a crash after the commit)."""
    if not days:
        return None
    return await job_models.enqueue_job(
        session,
        organization_id=organization_id,
        kind=ERASE_CLEANUP,
        payload={
            "reason": reason,
            "objects": [],
            "documentIds": [],
            "days": sorted(d.isoformat() for d in days),
        },
        max_attempts=max_attempts,
    )


async def read_cleanup_jobs(
    session: AsyncSession, organization_id: uuid.UUID, subject_id: uuid.UUID
) -> list[Job]:
    """The cleanup jobs of a person's erasure, oldest first: the cleanup itself, then what it
    queued for the erased documents (their removal from an external search index)."""
    query = (
        sa.select(Job)
        .where(
            Job.organization_id == organization_id,
            Job.kind == ERASE_CLEANUP,
            Job.payload["subjectId"].astext == str(subject_id),
        )
        .order_by(Job.created_at, Job.id)
    )
    cleanups = list(await session.scalars(query))
    documents = sorted({str(d) for j in cleanups for d in j.payload.get("documentIds", [])})
    if not documents:
        return cleanups
    # A deleted document has no jobs but those its erasure queued after the cleanup began.
    follow_ups = (
        sa.select(Job)
        .where(
            Job.organization_id == organization_id,
            Job.kind != ERASE_CLEANUP,
            Job.payload["documentId"].astext.in_(documents),
            Job.created_at >= cleanups[0].created_at,
        )
        .order_by(Job.created_at, Job.id)
    )
    return cleanups + list(await session.scalars(follow_ups))


def cleanup_complete(jobs: list[Job], held_documents: int = 0) -> bool:
    """Done only when there is a cleanup and every run of it has SUCCEEDED (a QUEUED, RUNNING,
    FAILED (retrying) or DEAD one means files, lake rows or index entries may remain) and no
    document of the person is still kept for a legal hold."""
    return bool(jobs) and held_documents == 0 and all(j.state is JobState.SUCCEEDED for j in jobs)


async def count_held_documents(session: AsyncSession, subject_id: uuid.UUID) -> int:
    """Documents of an erased person still kept for a legal hold: their erasure is pending."""
    return int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(Document)
            .where(Document.uploaded_by == subject_id, Document.legal_hold.is_(True))
        )
        or 0
    )


async def erase_released_document(
    session: AsyncSession, document: Document, *, max_attempts: int
) -> Job | None:
    """Once a hold lifts on a document (locked by the caller) whose uploader was erased, the
    document goes as the erasure would have taken it: the row (sections, analyses, feedback
    cascade) now, the file, the lake days and the index entry by a cleanup job of the
    person's erasure (``erasureStatus`` follows it). None if there is nothing to erase."""
    if document.legal_hold or document.uploaded_by is None:
        return None
    uploader = await session.scalar(
        sa.select(User).where(User.id == document.uploaded_by).with_for_update(read=True)
    )
    if uploader is None or uploader.erased_at is None:
        return None
    days = await governance_models.document_days(session, [document.id])
    await session.execute(
        sa.delete(Document)
        .where(Document.id == document.id)
        .execution_options(synchronize_session=False)
    )
    return await job_models.enqueue_job(
        session,
        organization_id=document.organization_id,
        kind=ERASE_CLEANUP,
        payload={
            "subjectId": str(uploader.id),
            "reason": "legal_hold.released",
            "objects": [document.storage_key] if document.storage_key else [],
            "documentIds": [str(document.id)],
            "days": sorted(d.isoformat() for d in days),
        },
        max_attempts=max_attempts,
    )


@dataclass(frozen=True)
class Cleanup:
    organization_id: uuid.UUID
    payload: dict[str, Any]
    db: Database
    store: ObjectStore


async def delete_objects(cleanup: Cleanup) -> None:
    for key in cleanup.payload.get("objects", []):
        await cleanup.store.delete(key)  # deleting a missing object succeeds: reruns are safe


async def rewrite_lake(cleanup: Cleanup) -> None:
    days = {date.fromisoformat(d) for d in cleanup.payload.get("days", [])}
    if days:
        await lake.rewrite_days(cleanup.db, cleanup.store, cleanup.organization_id, days)


# Run, in order, by the erase-cleanup job; each hook must be idempotent (a job may rerun).
# The job then queues search index jobs for `documentIds` (prism.jobs.pipeline): an index
# job of a document that no longer exists removes it from OpenSearch.
ERASE_HOOKS: list[Callable[[Cleanup], Awaitable[None]]] = [delete_objects, rewrite_lake]


async def run_erase_hooks(cleanup: Cleanup) -> None:
    for hook in ERASE_HOOKS:
        await hook(cleanup)
