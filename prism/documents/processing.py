"""Processing a document: the extraction job makes sections with PII findings; the analysis
job makes one analysis per section and the document's aggregates. Status moves UPLOADED →
EXTRACTING → EXTRACTED → QUEUED → ANALYZING → COMPLETED, or FAILED with a processing error a
person can act on. The job handlers (``prism.jobs.handlers``) open the transactions and call
these use cases."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.analysis import Analyzer
from prism.crypto.envelope import Envelope
from prism.crypto.sealed import SealedObjectError
from prism.db.notify import notify
from prism.documents import originals
from prism.errors import Conflict
from prism.extraction.detect import Kind
from prism.extraction.extract import Extracted, ExtractionError, extract_isolated
from prism.extraction.pii import mask, mask_all, scan
from prism.extraction.text import TextSection, count_words
from prism.models import analyses as analysis_models
from prism.models import documents as document_models
from prism.models import jobs as job_models
from prism.models.analyses import Analysis
from prism.models.audit import Subject
from prism.models.base import utcnow
from prism.models.documents import Document, Section
from prism.models.enums import Classification, ProcessingStatus
from prism.models.jobs import Job
from prism.observability import AI_COST_USD, AI_TOKENS, ANALYSIS_SECONDS, EXTRACTION_SECONDS
from prism.services import Services

EXTRACT = "document.extract"
ANALYZE = "document.analyze"
INDEX = "search.index"
PROGRESS_CHANNEL = "prism_progress"
# Private-use characters the PostgreSQL backend marks highlights with: never in search text.
_HIGHLIGHT_MARKERS = dict.fromkeys(map(ord, "\ue000\ue001\ue002"))


class Unprocessable(Exception):
    """Retrying cannot help (a hostile or broken file, a type nothing extracts)."""


# --- queueing ----------------------------------------------------------------------------------


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
    await enqueue_index_of(session, services, document.organization_id, document.id)


async def enqueue_index_of(
    session: AsyncSession, services: Services, organization_id: uuid.UUID, document_id: object
) -> None:
    """An index job for a document by id (one that may no longer exist: the job removes it
    from the index)."""
    await job_models.enqueue_job(
        session,
        organization_id=organization_id,
        kind=INDEX,
        payload={"documentId": str(document_id)},
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
    await notify(session, PROGRESS_CHANNEL, payload)


# --- sections and analyses -------------------------------------------------------------------


async def store_sections(
    session: AsyncSession,
    document: Document,
    parts: list[TextSection],
    findings: list[list[dict[str, Any]]] | None = None,
    *,
    envelope: Envelope,
    languages: tuple[str | None, list[str | None]] | None = None,
    ocr: list[tuple[bool, float | None]] | None = None,
) -> list[Section]:
    """Sections with their PII findings (offsets only) and languages, replacing any earlier
    extraction. ``findings`` and ``languages`` (the document's, each section's) come from the
    extraction child; without them the text is scanned here. ``ocr`` says, per section,
    whether its text came from OCR and with what confidence.
    A RESTRICTED document's sections are sealed with the organization's data key; the rows
    returned hold the text in the clear for the rest of this transaction only."""
    if findings is None:
        findings = [[f.as_json() for f in scan(part.content)] for part in parts]
    if languages is None:
        from prism.extraction.language import detect_sections  # 0.1 s to build, once

        languages = detect_sections([part.content for part in parts])
    document_language, section_languages = languages
    await document_models.delete_sections(session, document.id)
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
            language_code=language,
            text_from_ocr=read[0],
            ocr_confidence=read[1] if read[0] else None,
        )
        for index, (part, found, language, read) in enumerate(
            zip(
                parts, findings, section_languages, ocr or [(False, None)] * len(parts), strict=True
            )
        )
    ]
    restricted = document.classification is Classification.RESTRICTED
    if restricted:
        await envelope.seal_sections(session, sections)
    await document_models.add_sections(session, sections)
    if restricted:
        await envelope.open_sections(session, sections)
    document.language_code = document_language
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
    ANALYSIS_SECONDS.labels(analyzer.name).observe(elapsed)
    AI_COST_USD.labels(analyzer.name).inc(float(outcome.cost_usd))
    AI_TOKENS.labels(analyzer.name).inc(outcome.tokens_used)
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
    classification = await document_models.share_lock_classification(session, values["document_id"])
    analysis_id = uuid.uuid4()
    # Counted before sealing: the count is what BI and the lake read (never the sealed column).
    values = {**values, "finding_count": len(values["feedback_items"])}
    if classification is Classification.RESTRICTED:
        sealed = await envelope.seal_findings(
            session, values["organization_id"], analysis_id, values["feedback_items"]
        )
        values = {**values, "feedback_items": [], "sealed": sealed}
    await analysis_models.insert_analysis(session, {"id": analysis_id, "job_id": job_id, **values})


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
    results = await analysis_models.read_analyses_of_run(session, document.id, job_id)
    await envelope.open_analyses(session, results)
    apply_aggregates(document, results)
    return results


def apply_aggregates(document: Document, results: list[Analysis]) -> None:
    risks = [a.risk_level for a in results if a.risk_level is not None]
    confidences = [a.confidence for a in results if a.confidence is not None]
    document.total_feedback_items = sum(len(a.feedback_items) for a in results)
    document.risk_level = max(risks, key=lambda r: r.rank) if risks else None
    document.confidence = round(sum(confidences) / len(confidences), 4) if confidences else None
    document.cost_usd = sum((a.cost_usd for a in results), Decimal("0"))
    document.model_used = results[0].model if results else None
    document.processing_status = ProcessingStatus.COMPLETED


# --- the extraction job ------------------------------------------------------------------------


@dataclass(frozen=True)
class Original:
    """Where a document's stored original is, and what kind of file it is."""

    organization_id: uuid.UUID
    storage_key: str
    kind: Kind


def _kind_of(mime_type: str) -> Kind:
    kind = Kind.of_mime_type(mime_type)
    if kind is None:
        raise Unprocessable(f"No extractor for {mime_type}.")
    return kind


async def start_extraction(session: AsyncSession, document_id: uuid.UUID) -> Original | None:
    """The document (row-locked) is EXTRACTING; None when it was deleted meanwhile (nothing
    to do). Raises ``Unprocessable`` when nothing extracts its type."""
    document = await document_models.lock_live_document(session, document_id)
    if document is None or document.storage_key is None:
        return None
    document.processing_status = ProcessingStatus.EXTRACTING
    await notify_progress(session, document)
    return Original(document.organization_id, document.storage_key, _kind_of(document.mime_type))


async def extract_original(services: Services, original: Original, path: Path) -> Extracted:
    """Write the original to ``path`` (opened on the fly if sealed; the caller owns the
    private directory it is in) and extract it in a child process. No database connection
    is held meanwhile. Raises ``Unprocessable`` for an altered file or one that fails
    extraction (the worker marks the document FAILED)."""
    stored = originals.open_original(
        services.db,
        services.objects,
        services.envelope,
        original.organization_id,
        original.storage_key,
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        try:
            async for chunk in stored:  # a sealed original is opened on the fly
                out.write(chunk)
        except SealedObjectError as exc:
            raise Unprocessable(
                "The stored file fails its integrity check (altered or cut short)."
            ) from exc
    clock = time.perf_counter()
    try:
        return await extract_isolated(path, original.kind, services.extraction_limits)
    except ExtractionError as exc:
        raise Unprocessable(str(exc)) from exc
    finally:
        EXTRACTION_SECONDS.labels(original.kind.value).observe(time.perf_counter() - clock)


async def store_extraction(
    session: AsyncSession,
    services: Services,
    document_id: uuid.UUID,
    extracted: Extracted,
    *,
    analyze: bool,
) -> bool:
    """The extraction's sections stored, the analysis queued (if asked) and the search index
    told; False when the document was deleted meanwhile."""
    document = await document_models.lock_live_document(session, document_id)
    if document is None:
        return False
    await store_sections(
        session,
        document,
        extracted.sections,
        extracted.findings,
        envelope=services.envelope,
        languages=(extracted.language, extracted.languages)
        if extracted.languages is not None
        else None,
        ocr=[extracted.ocr_of(i) for i in range(len(extracted.sections))],
    )
    document.page_count = extracted.page_count
    document.processing_error = None
    if analyze:
        await request_analysis(session, services, document, None)
    else:
        await notify_progress(session, document)
    await enqueue_index(session, services, document)
    return True


# --- the analysis job --------------------------------------------------------------------------


@dataclass
class AnalysisRun:
    """A document being analysed by one job: its sections (in the clear) and those done."""

    document: Document
    sections: list[Section]
    done: set[uuid.UUID]


async def start_analysis(
    session: AsyncSession, services: Services, document_id: uuid.UUID, job_id: uuid.UUID
) -> AnalysisRun | None:
    """The document (row-locked) is ANALYZING, with the sections the job has left to do;
    None when it was deleted meanwhile."""
    document = await document_models.lock_live_document(session, document_id)
    if document is None:
        return None
    document.processing_status = ProcessingStatus.ANALYZING
    sections = await document_models.read_sections_of_document(session, document.id)
    await services.envelope.open_sections(session, sections)
    done = await analysis_models.read_analyzed_section_ids(session, job_id)
    await notify_progress(session, document, len(done))
    return AnalysisRun(document=document, sections=sections, done=done)


async def record_section_analysis(
    session: AsyncSession,
    services: Services,
    run: AnalysisRun,
    section: Section,
    values: dict[str, Any],
    job_id: uuid.UUID,
) -> None:
    """One section's analysis (made by ``run_analyzer`` outside any transaction), stored in
    its own transaction: a worker killed halfway resumes where it stopped."""
    await store_analysis(session, values, job_id, envelope=services.envelope)
    run.done.add(section.id)
    await notify_progress(session, run.document, len(run.done))


async def finish_analysis(
    session: AsyncSession,
    services: Services,
    document_id: uuid.UUID,
    job_id: uuid.UUID,
    analyzer: Analyzer,
) -> bool:
    """The document's aggregates from the job's analyses, COMPLETED, audited, and the search
    index told (the risk level is a facet); False when it was deleted meanwhile."""
    locked = await document_models.lock_live_document(session, document_id)
    if locked is None:
        return False
    results = await analysis_models.read_analyses_of_run(session, locked.id, job_id)
    await services.envelope.open_analyses(session, results)
    apply_aggregates(locked, results)
    risk = locked.risk_level.value if locked.risk_level else None
    await notify_progress(session, locked, len(results))
    await audit.record(
        session,
        None,
        None,
        organization_id=locked.organization_id,
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
            "sections": len(results),
            "costUsd": float(sum((r.cost_usd for r in results), Decimal(0))),
            "tokensUsed": sum(r.tokens_used for r in results),
            "durationSeconds": round(sum(r.duration_seconds for r in results), 3),
            "jobId": str(job_id),
        },
    )
    await enqueue_index(session, services, locked)
    return True


async def fail_document(
    session: AsyncSession, document_id: uuid.UUID, error: str, job_kind: str
) -> None:
    """The document ends FAILED with a message a person can act on, audited."""
    document = await document_models.lock_live_document(session, document_id)
    if document is None:
        return
    document.processing_status = ProcessingStatus.FAILED
    document.processing_error = error[:2000]
    await notify_progress(session, document)
    await audit.record(
        session,
        None,
        None,
        organization_id=document.organization_id,
        event_type="document.failed",
        category="processing",
        description=f"Processing of {document.filename!r} failed: {error[:200]}",
        resource_type="Document",
        resource_id=document.id,
        after={"processingError": error[:2000], "job": job_kind},
        subject=Subject(document.classification, document.department),
    )
