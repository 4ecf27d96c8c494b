"""GDPR erasure by pseudonymization.

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

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.db.engine import Database
from prism.errors import BadUserInput, Conflict, NotFound
from prism.governance import lake
from prism.governance.cleanup import ERASE_CLEANUP as ERASE_CLEANUP
from prism.models import erasure as erasure_models
from prism.models import governance as governance_models
from prism.models import jobs as job_models
from prism.models import users as user_models
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import JobState
from prism.models.jobs import Job
from prism.models.users import User
from prism.privacy.subjects import subject_for_update, user_resource
from prism.services import Services
from prism.storage import ObjectStore

ERASED_DOMAIN = "erased.invalid"


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
    documents = await erasure_models.lock_uploads(session, subject.id)
    held = [d for d in documents if d.legal_hold]
    doomed = [d for d in documents if not d.legal_hold]
    exports = await erasure_models.read_exports_of(session, subject.id)
    days = await erasure_models.days_touched(session, subject.id, [d.id for d in doomed])
    objects = [d.storage_key for d in doomed if d.storage_key]
    objects += [e.storage_key for e in exports if e.storage_key]
    # Sections, analyses and everyone's feedback on these documents go with them (cascade).
    if doomed:
        await erasure_models.delete_documents(session, [d.id for d in doomed])
    if exports:
        await erasure_models.delete_exports(session, [e.id for e in exports])
    # Their words on other people's documents may identify them; the decision stays.
    await erasure_models.remove_personal_rows(session, subject.id)
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
    retained_events = await erasure_models.count_retained_events(session, subject.id, identifiers)
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


async def read_cleanup_jobs(
    session: AsyncSession, organization_id: uuid.UUID, subject_id: uuid.UUID
) -> list[Job]:
    """The cleanup jobs of a person's erasure, oldest first: the cleanup itself, then what it
    queued for the erased documents (their removal from an external search index)."""
    return await erasure_models.read_cleanup_jobs(
        session, organization_id, subject_id, ERASE_CLEANUP
    )


def cleanup_complete(jobs: list[Job], held_documents: int = 0) -> bool:
    """Done only when there is a cleanup and every run of it has SUCCEEDED (a QUEUED, RUNNING,
    FAILED (retrying) or DEAD one means files, lake rows or index entries may remain) and no
    document of the person is still kept for a legal hold."""
    return bool(jobs) and held_documents == 0 and all(j.state is JobState.SUCCEEDED for j in jobs)


async def count_held_documents(session: AsyncSession, subject_id: uuid.UUID) -> int:
    """Documents of an erased person still kept for a legal hold: their erasure is pending."""
    return await erasure_models.count_held_documents(session, subject_id)


async def erase_released_document(
    session: AsyncSession, document: Document, *, max_attempts: int
) -> Job | None:
    """Once a hold lifts on a document (locked by the caller) whose uploader was erased, the
    document goes as the erasure would have taken it: the row (sections, analyses, feedback
    cascade) now, the file, the lake days and the index entry by a cleanup job of the
    person's erasure (``erasureStatus`` follows it). None if there is nothing to erase."""
    if document.legal_hold or document.uploaded_by is None:
        return None
    uploader = await erasure_models.lock_uploader_shared(session, document.uploaded_by)
    if uploader is None or uploader.erased_at is None:
        return None
    days = await governance_models.document_days(session, [document.id])
    await erasure_models.delete_document(session, document.id)
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
    objects: ObjectStore
    # The lake's periods: a rewritten day its layer no longer keeps is removed, not written.
    lake_periods: lake.LakePeriods | None = None


async def delete_objects(cleanup: Cleanup) -> None:
    for key in cleanup.payload.get("objects", []):
        await cleanup.objects.delete(key)  # deleting a missing object succeeds: reruns are safe


async def rewrite_lake(cleanup: Cleanup) -> None:
    days = {date.fromisoformat(d) for d in cleanup.payload.get("days", [])}
    if days:
        await lake.rewrite_days(
            cleanup.db,
            cleanup.objects,
            cleanup.organization_id,
            days,
            periods=cleanup.lake_periods,
        )


# Run, in order, by the erase-cleanup job; each hook must be idempotent (a job may rerun).
# The job then queues search index jobs for `documentIds` (prism.documents.processing): an index
# job of a document that no longer exists removes it from OpenSearch.
ERASE_HOOKS: list[Callable[[Cleanup], Awaitable[None]]] = [delete_objects, rewrite_lake]


async def run_erase_hooks(cleanup: Cleanup) -> None:
    for hook in ERASE_HOOKS:
        await hook(cleanup)


# --- use cases -------------------------------------------------------------------------------


async def erase_user_account(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta | None,
    user_id: uuid.UUID,
) -> Erasure:
    """Erase another user of the principal's organization, queue the cleanup, and record the
    receipt (``user.erase``: names the person by id only, never by address)."""
    subject = await subject_for_update(session, principal, user_id)
    require(principal, Action.USER_ERASE, user_resource(subject))
    if subject.id == principal.user_id:
        raise BadUserInput("Erase another ADMIN's account, not your own.", argument="userId")
    erasure = await erase_user(session, subject)
    await schedule_cleanup(
        session, erasure, principal.organization_id, services.settings.job_max_attempts
    )
    event = await audit.record(
        session,
        principal,
        meta,
        event_type="user.erase",
        category="governance",
        description=f"User {subject.id} erased (pseudonymized)",
        resource_type="User",
        resource_id=subject.id,
        after={
            "documentsDeleted": erasure.documents_deleted,
            "documentsKeptForLegalHold": erasure.documents_kept_for_legal_hold,
            "auditEventsRetained": erasure.audit_events_retained,
            "retained": erasure.retained,
            "cleanupJobId": str(erasure.cleanup_job.id) if erasure.cleanup_job else None,
        },
    )
    erasure.audit_event_id = event.id
    return erasure


async def read_erasure_status(
    session: AsyncSession, services: Services, principal: Principal, user_id: uuid.UUID
) -> tuple[User, list[Job], int] | None:
    """A person's erasure, its cleanup jobs and the count of their documents still kept for
    a legal hold (ADMIN); None if they were never erased."""
    require(principal, Action.JOB_ADMIN)
    rows = await user_models.read_users_by_ids(session, principal.organization_id, [user_id])
    if not rows:
        raise NotFound("User not found.")
    if rows[0].erased_at is None:
        return None
    jobs = await read_cleanup_jobs(session, principal.organization_id, user_id)
    held = await count_held_documents(session, user_id)
    return rows[0], jobs, held
