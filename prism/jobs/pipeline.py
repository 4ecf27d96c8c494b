"""The document pipeline: an upload becomes a stored object and a document row with an
extraction job; the job makes sections with PII findings; the analysis job makes one analysis
per section and the document's aggregates. Status moves UPLOADED → EXTRACTING → EXTRACTED →
QUEUED → ANALYZING → COMPLETED, or FAILED with a processing error a person can act on."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import tempfile
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from prism.analysis import Analyzer
from prism.crypto.envelope import Envelope
from prism.crypto.sealed import SealedObjectError
from prism.documents import originals
from prism.errors import (
    BadUserInput,
    Conflict,
    PayloadTooLarge,
    Unauthenticated,
    UnsupportedMediaType,
)
from prism.extraction.detect import Kind, Unsupported, detect_stream
from prism.extraction.extract import ExtractionError, extract_isolated
from prism.extraction.pii import mask, mask_all, scan
from prism.extraction.text import TextSection, count_words
from prism.governance import lifecycle, quality
from prism.models import documents as document_models
from prism.models import jobs as job_models
from prism.models.analyses import Analysis
from prism.models.audit import Actor, RequestMeta, Subject, record_event
from prism.models.base import utcnow
from prism.models.documents import Document, Section, visible_documents
from prism.models.enums import (
    Classification,
    DataCategory,
    DocumentType,
    JobState,
    ProcessingStatus,
)
from prism.models.governance import read_retention_policy
from prism.models.jobs import Job
from prism.models.scope import Scope
from prism.models.users import User
from prism.privacy import gdpr
from prism.services import Services
from prism.storage import document_key

EXTRACT = "document.extract"
ANALYZE = "document.analyze"
INDEX = "search.index"
# Private-use characters the PostgreSQL backend marks highlights with: never in search text.
_HIGHLIGHT_MARKERS = dict.fromkeys(map(ord, "\ue000\ue001\ue002"))
LIFECYCLE = "governance.lifecycle"
QUALITY = "governance.quality"
PROGRESS_CHANNEL = "prism_progress"
CHUNK = 1024 * 1024


class PermanentJobError(Exception):
    """Retrying cannot help (a hostile or broken file): the job ends DEAD at once."""


# --- receiving uploads -------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    document: Document
    deduplicated: bool
    job: Job | None


def sanitize_filename(name: str | None) -> str:
    """The client's name, kept as metadata only: no path, no control characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip(" .")
    return base[:255] or "document"


def _inspect(source: BinaryIO, max_bytes: int) -> tuple[str, int, Kind]:
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
    except Unsupported as exc:
        raise UnsupportedMediaType(str(exc)) from exc
    return digest.hexdigest(), size, kind


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
        _inspect, source, services.settings.max_upload_bytes
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
        await record_event(
            session,
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
            meta=meta,
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
    row = (
        await session.execute(
            sa.select(User.is_active, User.erased_at)
            .where(User.organization_id == organization_id, User.id == uploader_id)
            .with_for_update(read=True)
        )
    ).one_or_none()
    if row is None or not row.is_active or row.erased_at is not None:
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
    found = await session.scalar(
        sa.select(Document).where(
            Document.organization_id == scope.organization_id,
            Document.sha256 == sha256,
            Document.deleted_at.is_(None),
        )
    )
    if found is None:
        return None
    visible = await session.scalar(
        sa.select(sa.literal(True)).where(visible_documents(scope), Document.id == found.id)
    )
    if not visible:
        raise Conflict("An identical document already exists in your organization.")
    return Received(document=found, deduplicated=True, job=None)


async def enqueue(
    session: AsyncSession,
    services: Services,
    document: Document,
    kind: str,
    payload: dict[str, Any],
) -> Job:
    return await job_models.enqueue_job(
        session,
        organization_id=document.organization_id,
        kind=kind,
        payload={"documentId": str(document.id), **payload},
        max_attempts=services.settings.job_max_attempts,
    )


def search_text(name: str, content: str, findings: list[dict[str, Any]]) -> str:
    """What every search index holds of a section: heading and text with PII masked, as a
    viewer below CONFIDENTIAL sees them. Raw PII never reaches an index, so nobody can find
    a section by a personal value, and highlights show masked text to every viewer."""
    text = f"{mask_all(name)}\n{mask(content, findings)}"
    return text.translate(_HIGHLIGHT_MARKERS)


async def enqueue_index(session: AsyncSession, services: Services, document: Document) -> None:
    """Tell an external search index (OpenSearch) that the document changed, in the same
    transaction as the change; PostgreSQL's own index needs no job."""
    if not services.search.needs_index_jobs:
        return
    await job_models.enqueue_job(
        session,
        organization_id=document.organization_id,
        kind=INDEX,
        payload={"documentId": str(document.id)},
        max_attempts=services.settings.search_index_max_attempts,
    )


async def request_analysis(
    session: AsyncSession, services: Services, document: Document, analyzer: str | None
) -> Job:
    """Queue a (re-)analysis; the previous analyses stay as history."""
    if document.processing_status in (ProcessingStatus.UPLOADED, ProcessingStatus.EXTRACTING):
        raise Conflict("The document is still being extracted; analyse it once that is done.")
    if document.total_sections == 0:
        raise Conflict("The document has no sections to analyse.")
    if document.processing_status in (ProcessingStatus.QUEUED, ProcessingStatus.ANALYZING):
        raise Conflict("An analysis of the document is already queued or running.")
    document.processing_status = ProcessingStatus.QUEUED
    document.processing_error = None
    await notify_progress(session, document)
    return await enqueue(session, services, document, ANALYZE, {"analyzer": analyzer})


async def notify_progress(session: AsyncSession, document: Document, analyzed: int = 0) -> None:
    """Delivered to subscribers at commit (LISTEN/NOTIFY), on every API replica."""
    payload = orjson.dumps(
        {
            "o": str(document.organization_id),
            "d": str(document.id),
            "s": document.processing_status.value,
            "a": analyzed,
            "t": document.total_sections,
        }
    ).decode()
    await session.execute(sa.select(sa.func.pg_notify(PROGRESS_CHANNEL, payload)))


# --- sections and analyses -------------------------------------------------------------------


async def store_sections(
    session: AsyncSession,
    document: Document,
    parts: list[TextSection],
    findings: list[list[dict[str, Any]]] | None = None,
    *,
    envelope: Envelope,
) -> list[Section]:
    """Sections with their PII findings (offsets only), replacing any earlier extraction.
    ``findings`` come from the extraction child; without them the text is scanned here.
    A RESTRICTED document's sections are sealed with the organization's data key; the rows
    returned hold the text in the clear for the rest of this transaction only."""
    if findings is None:
        findings = [[f.as_json() for f in scan(part.content)] for part in parts]
    await session.execute(sa.delete(Section).where(Section.document_id == document.id))
    sections = [
        Section(
            id=uuid.uuid4(),
            organization_id=document.organization_id,
            document_id=document.id,
            ord=index,
            name=part.name,
            content=part.content,
            word_count=part.word_count,
            pii_findings=found,
            search_text=search_text(part.name, part.content, found),
        )
        for index, (part, found) in enumerate(zip(parts, findings, strict=True))
    ]
    restricted = document.classification is Classification.RESTRICTED
    if restricted:
        await envelope.seal_sections(session, sections)
    await document_models.add_sections(session, sections)
    if restricted:
        await envelope.open_sections(session, sections)
    document.total_sections = len(sections)
    document.word_count = sum(count_words(p.content) for p in parts)
    document.processing_status = ProcessingStatus.EXTRACTED
    return sections


async def run_analyzer(document: Document, section: Section, analyzer: Analyzer) -> dict[str, Any]:
    """Analyse one section (no database connection held: a remote model may take a minute)
    and return the analysis row's values."""
    started = utcnow()
    clock = time.perf_counter()
    outcome = await analyzer.analyze(
        section_name=section.name,
        text=section.content,
        pii_types=[f["type"] for f in section.pii_findings],
    )
    elapsed = time.perf_counter() - clock
    return {
        "organization_id": document.organization_id,
        "document_id": document.id,
        "section_id": section.id,
        "model": outcome.model[:200],
        "model_version": (outcome.model_version or "")[:100] or None,
        "started_at": started,
        "completed_at": started + timedelta(seconds=elapsed),
        "duration_seconds": elapsed,
        "risk_level": outcome.risk_level,
        "confidence": outcome.confidence,
        "tokens_used": outcome.tokens_used,
        "cost_usd": outcome.cost_usd,
        "feedback_items": [item.as_json() for item in outcome.items],
    }


async def store_analysis(
    session: AsyncSession,
    values: dict[str, Any],
    job_id: uuid.UUID | None,
    *,
    envelope: Envelope,
) -> None:
    """One analysis row; a second run of the same job for the same section adds nothing.
    The findings of a RESTRICTED document (their quotes are excerpts of its text) are sealed.
    The document row is share-locked, so a reclassification waits for this row (and then
    seals or unseals it) instead of missing it."""
    classification = await session.scalar(
        sa.select(Document.classification)
        .where(Document.id == values["document_id"])
        .with_for_update(read=True)
    )
    analysis_id = uuid.uuid4()
    # Counted before sealing: the count is what BI and the lake read (never the sealed column).
    values = {**values, "finding_count": len(values["feedback_items"])}
    if classification is Classification.RESTRICTED:
        sealed = await envelope.seal_findings(
            session, values["organization_id"], analysis_id, values["feedback_items"]
        )
        values = {**values, "feedback_items": [], "sealed": sealed}
    await session.execute(
        insert(Analysis)
        .values(id=analysis_id, job_id=job_id, **values)
        .on_conflict_do_nothing(index_elements=[Analysis.section_id, Analysis.job_id])
    )


async def analyze_sections(
    session: AsyncSession,
    document: Document,
    sections: list[Section],
    analyzer: Analyzer,
    job_id: uuid.UUID | None = None,
    *,
    envelope: Envelope,
) -> list[Analysis]:
    """Analyse every section in this transaction, then set the document's aggregates."""
    for section in sections:
        values = await run_analyzer(document, section, analyzer)
        await store_analysis(session, values, job_id, envelope=envelope)
    results = await analyses_of_run(session, document.id, job_id)
    await envelope.open_analyses(session, results)
    apply_aggregates(document, results)
    return results


async def analyses_of_run(
    session: AsyncSession, document_id: uuid.UUID, job_id: uuid.UUID | None
) -> list[Analysis]:
    query = sa.select(Analysis).where(Analysis.document_id == document_id)
    query = query.where(Analysis.job_id.is_(None) if job_id is None else Analysis.job_id == job_id)
    return list(await session.scalars(query.order_by(Analysis.created_at, Analysis.id)))


def apply_aggregates(document: Document, results: list[Analysis]) -> None:
    risks = [a.risk_level for a in results if a.risk_level is not None]
    confidences = [a.confidence for a in results if a.confidence is not None]
    document.total_feedback_items = sum(len(a.feedback_items) for a in results)
    document.risk_level = max(risks, key=lambda r: r.rank) if risks else None
    document.confidence = round(sum(confidences) / len(confidences), 4) if confidences else None
    document.cost_usd = sum((a.cost_usd for a in results), Decimal("0"))
    document.model_used = results[0].model if results else None
    document.processing_status = ProcessingStatus.COMPLETED


# --- job handlers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRun:
    """A claimed job as its handler sees it."""

    job: Job
    worker: str
    services: Services

    @property
    def document_id(self) -> uuid.UUID:
        return uuid.UUID(self.job.payload["documentId"])


async def _locked_document(session: AsyncSession, run: JobRun) -> Document | None:
    document: Document | None = await session.scalar(
        sa.select(Document)
        .where(Document.id == run.document_id, Document.deleted_at.is_(None))
        .with_for_update()
    )
    return document


class LeaseLost(Exception):
    """Another worker took the job over (this one's lease expired): its work is rolled back."""


async def complete(session: AsyncSession, run: JobRun) -> None:
    """Mark the job done in the same transaction as its last writes, fenced on the lease."""
    finished = await job_models.finish_job(
        session,
        job_id=run.job.id,
        worker=run.worker,
        attempt=run.job.attempts,
        state=JobState.SUCCEEDED,
    )
    if not finished:
        raise LeaseLost(str(run.job.id))


SCRATCH_PREFIX = "prism-extract-"
log = structlog.get_logger("prism.pipeline")


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def sweep_scratch(max_age_seconds: float, root: Path | None = None) -> int:
    """Remove extraction scratch directories left by killed workers (they may hold a
    decrypted original): those of this user whose owning process is gone, and unnamed ones
    (made before directories carried their owner's pid) older than ``max_age_seconds``. A
    directory in use by a live worker is never touched. Returns how many were removed."""
    root = root or Path(tempfile.gettempdir())
    removed = 0
    try:
        found = list(root.glob(SCRATCH_PREFIX + "*"))
    except OSError:
        return 0
    for directory in found:
        try:
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            owner, _, _ = directory.name[len(SCRATCH_PREFIX) :].partition("-")
            if owner.isdigit():
                stale = not _owner_alive(int(owner))
            else:
                stale = time.time() - info.st_mtime > max_age_seconds
            if stale:
                shutil.rmtree(directory)
                removed += 1
        except OSError as exc:
            log.warning("extraction scratch not removed", path=str(directory), error=str(exc))
    if removed:
        log.info("stale extraction scratch removed", count=removed)
    return removed


async def handle_extract(run: JobRun) -> None:
    db = run.services.db
    async with db.transaction(run.job.organization_id) as session:
        document = await _locked_document(session, run)
        if document is None or document.storage_key is None:
            await complete(session, run)  # deleted meanwhile: nothing to do
            return
        document.processing_status = ProcessingStatus.EXTRACTING
        await notify_progress(session, document)
        key, kind = document.storage_key, _kind_of(document.mime_type)
    # 0700, named after this process: a worker killed mid-extraction leaves the (possibly
    # decrypted) file behind, and the next worker to start removes it (sweep_scratch).
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
        path = Path(scratch) / "source"
        stored = originals.open_original(
            db, run.services.objects, run.services.envelope, run.job.organization_id, key
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            try:
                async for chunk in stored:  # a sealed original is opened on the fly
                    out.write(chunk)
            except SealedObjectError as exc:
                raise PermanentJobError(
                    "The stored file fails its integrity check (altered or cut short)."
                ) from exc
        try:
            extracted = await extract_isolated(path, kind, run.services.extraction_limits)
        except ExtractionError as exc:
            raise PermanentJobError(str(exc)) from exc  # the worker marks the document FAILED
    async with db.transaction(run.job.organization_id) as session:
        document = await _locked_document(session, run)
        if document is None:
            await complete(session, run)
            return
        await store_sections(
            session,
            document,
            extracted.sections,
            extracted.findings,
            envelope=run.services.envelope,
        )
        document.page_count = extracted.page_count
        document.processing_error = None
        if run.job.payload.get("analyze", True):
            await request_analysis(session, run.services, document, None)
        else:
            await notify_progress(session, document)
        await enqueue_index(session, run.services, document)
        await complete(session, run)


async def handle_analyze(run: JobRun) -> None:
    db = run.services.db
    analyzer = run.services.analyzer(run.job.payload.get("analyzer"))
    async with db.transaction(run.job.organization_id) as session:
        document = await _locked_document(session, run)
        if document is None:
            await complete(session, run)
            return
        document.processing_status = ProcessingStatus.ANALYZING
        sections = list(
            await session.scalars(
                sa.select(Section).where(Section.document_id == document.id).order_by(Section.ord)
            )
        )
        await run.services.envelope.open_sections(session, sections)
        done = set(
            await session.scalars(
                sa.select(Analysis.section_id).where(Analysis.job_id == run.job.id)
            )
        )
        await notify_progress(session, document, len(done))
    # One commit per section: a worker killed halfway resumes where it stopped.
    for section in sections:
        if section.id in done:
            continue
        values = await run_analyzer(document, section, analyzer)
        async with db.transaction(run.job.organization_id) as session:
            await store_analysis(session, values, run.job.id, envelope=run.services.envelope)
            done.add(section.id)
            await notify_progress(session, document, len(done))
    async with db.transaction(run.job.organization_id) as session:
        locked = await _locked_document(session, run)
        if locked is None:
            await complete(session, run)
            return
        results = await analyses_of_run(session, locked.id, run.job.id)
        await run.services.envelope.open_analyses(session, results)
        apply_aggregates(locked, results)
        risk = locked.risk_level.value if locked.risk_level else None
        await notify_progress(session, locked, len(results))
        await record_event(
            session,
            organization_id=locked.organization_id,
            actor=Actor(),
            event_type="document.analyzed",
            category="processing",
            description=f"Document {locked.filename!r} analysed by {analyzer.name}: "
            f"{len(results)} sections, risk {risk or '-'}",
            resource_type="Document",
            resource_id=locked.id,
            subject=Subject(locked.classification, locked.department),
            after={
                "riskLevel": risk,
                "feedbackItems": locked.total_feedback_items,
                "jobId": str(run.job.id),
            },
        )
        await enqueue_index(session, run.services, locked)  # the risk level is a facet
        await complete(session, run)


async def fail_document(run: JobRun, error: str) -> None:
    """The document ends FAILED with a message a person can act on, audited (only for the
    document's own processing: a failed index job leaves the document as it is)."""
    if run.job.kind not in (EXTRACT, ANALYZE):
        return
    async with run.services.db.transaction(run.job.organization_id) as session:
        document = await _locked_document(session, run)
        if document is None:
            return
        document.processing_status = ProcessingStatus.FAILED
        document.processing_error = error[:2000]
        await notify_progress(session, document)
        await record_event(
            session,
            organization_id=document.organization_id,
            actor=Actor(),
            event_type="document.failed",
            category="processing",
            description=f"Processing of {document.filename!r} failed: {error[:200]}",
            resource_type="Document",
            resource_id=document.id,
            after={"processingError": error[:2000], "job": run.job.kind},
            subject=Subject(document.classification, document.department),
        )


def _kind_of(mime_type: str) -> Kind:
    for kind in Kind:
        if kind.mime_type == mime_type:
            return kind
    raise PermanentJobError(f"No extractor for {mime_type}.")


async def handle_lifecycle(run: JobRun) -> None:
    """The organization's scheduled lifecycle run (idempotent: a re-run finds nothing left
    to move or purge)."""
    await lifecycle.run_lifecycle(
        run.services.db, run.services.objects, run.job.organization_id, dry_run=False
    )
    async with run.services.db.transaction(run.job.organization_id) as session:
        await complete(session, run)


async def handle_quality(run: JobRun) -> None:
    """The organization's scheduled data-quality assessment."""
    await quality.assess(
        run.services.db,
        run.job.organization_id,
        analysis_sla_seconds=run.services.settings.analysis_sla_seconds,
    )
    async with run.services.db.transaction(run.job.organization_id) as session:
        await complete(session, run)


async def handle_export(run: JobRun) -> None:
    """Build a personal-data export bundle (prism.privacy.gdpr)."""
    settings = run.services.settings
    await gdpr.build_export(
        run.services.db,
        run.services.objects,
        run.services.envelope,
        organization_id=run.job.organization_id,
        export_id=uuid.UUID(run.job.payload["exportId"]),
        scope=gdpr.scope_of_payload(run.job.organization_id, run.job.payload),
        link_ttl=timedelta(seconds=settings.export_link_ttl_seconds),
        complete=lambda session: complete(session, run),
    )


async def handle_erase_cleanup(run: JobRun) -> None:
    """After an erasure committed: remove what lives outside the database (every hook)."""
    cleanup = gdpr.Cleanup(
        organization_id=run.job.organization_id,
        payload=run.job.payload,
        db=run.services.db,
        store=run.services.objects,
    )
    await gdpr.run_erase_hooks(cleanup)
    async with run.services.db.transaction(run.job.organization_id) as session:
        # The erased documents leave the external search index too (an index job of a
        # document that no longer exists removes it), in the transaction that ends this job.
        if run.services.search.needs_index_jobs:
            for document_id in run.job.payload.get("documentIds", []):
                await job_models.enqueue_job(
                    session,
                    organization_id=run.job.organization_id,
                    kind=INDEX,
                    payload={"documentId": str(document_id)},
                    max_attempts=run.services.settings.search_index_max_attempts,
                )
        await complete(session, run)


HANDLERS = {
    EXTRACT: handle_extract,
    ANALYZE: handle_analyze,
    gdpr.EXPORT: handle_export,
    gdpr.ERASE_CLEANUP: handle_erase_cleanup,
    LIFECYCLE: handle_lifecycle,
    QUALITY: handle_quality,
}
# Jobs the workers queue for every organization each PRISM_LIFECYCLE_INTERVAL_HOURS.
PERIODIC = (LIFECYCLE, QUALITY)
