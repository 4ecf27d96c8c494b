"""Job handlers: each job kind dispatched to its use case (``prism.documents.processing``,
``prism.governance``, ``prism.privacy``), in transactions the handler opens, and the job
marked done in the transaction of its last writes. Also the queue's own mechanics: the
claimed job (``JobRun``), a failure retrying cannot help, a lost lease, and the sweep of
extraction scratch left by killed workers."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from prism.documents import processing
from prism.documents.processing import ANALYZE, EXTRACT, Unprocessable
from prism.governance import lake, lifecycle, quality
from prism.governance.cleanup import ERASE_CLEANUP
from prism.models import jobs as job_models
from prism.models.enums import JobState
from prism.models.jobs import Job
from prism.privacy.erasure import Cleanup, run_erase_hooks
from prism.privacy.export import EXPORT, build_export, scope_of_payload
from prism.services import Services

LIFECYCLE = "governance.lifecycle"
QUALITY = "governance.quality"


class PermanentJobError(Exception):
    """Retrying cannot help (a hostile or broken file): the job ends DEAD at once."""


@dataclass(frozen=True)
class JobRun:
    """A claimed job as its handler sees it."""

    job: Job
    worker: str
    services: Services

    @property
    def document_id(self) -> uuid.UUID:
        return uuid.UUID(self.job.payload["documentId"])


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


# --- the document's processing -----------------------------------------------------------------


async def handle_extract(run: JobRun) -> None:
    try:
        await _extract(run)
    except Unprocessable as exc:
        raise PermanentJobError(str(exc)) from exc  # the worker marks the document FAILED


async def _extract(run: JobRun) -> None:
    db = run.services.db
    async with db.transaction(run.job.organization_id) as session:
        original = await processing.start_extraction(session, run.document_id)
        if original is None:
            await complete(session, run)  # deleted meanwhile: nothing to do
            return
    # 0700, named after this process: a worker killed mid-extraction leaves the (possibly
    # decrypted) file behind, and the next worker to start removes it (sweep_scratch).
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
        extracted = await processing.extract_original(
            run.services, original, Path(scratch) / "source"
        )
    async with db.transaction(run.job.organization_id) as session:
        await processing.store_extraction(
            session,
            run.services,
            run.document_id,
            extracted,
            analyze=run.job.payload.get("analyze", True),
        )
        await complete(session, run)


async def handle_analyze(run: JobRun) -> None:
    db = run.services.db
    analyzer = run.services.analyzer(run.job.payload.get("analyzer"))
    async with db.transaction(run.job.organization_id) as session:
        analysis = await processing.start_analysis(
            session, run.services, run.document_id, run.job.id
        )
        if analysis is None:
            await complete(session, run)
            return
    # One commit per section: a worker killed halfway resumes where it stopped.
    for section in analysis.sections:
        if section.id in analysis.done:
            continue
        values = await processing.run_analyzer(analysis.document, section, analyzer)
        async with db.transaction(run.job.organization_id) as session:
            await processing.record_section_analysis(
                session, run.services, analysis, section, values, run.job.id
            )
    async with db.transaction(run.job.organization_id) as session:
        await processing.finish_analysis(
            session, run.services, run.document_id, run.job.id, analyzer
        )
        await complete(session, run)


async def fail_document(run: JobRun, error: str) -> None:
    """The document ends FAILED with a message a person can act on, audited (only for the
    document's own processing: a failed index job leaves the document as it is)."""
    if run.job.kind not in (EXTRACT, ANALYZE):
        return
    async with run.services.db.transaction(run.job.organization_id) as session:
        await processing.fail_document(session, run.document_id, error, run.job.kind)


# --- governance and privacy --------------------------------------------------------------------


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
    """Build a personal-data export bundle (prism.privacy.export)."""
    settings = run.services.settings
    await build_export(
        run.services.db,
        run.services.objects,
        run.services.envelope,
        organization_id=run.job.organization_id,
        export_id=uuid.UUID(run.job.payload["exportId"]),
        scope=scope_of_payload(run.job.organization_id, run.job.payload),
        link_ttl=timedelta(seconds=settings.export_link_ttl_seconds),
        complete=lambda session: complete(session, run),
    )


async def handle_erase_cleanup(run: JobRun) -> None:
    """After an erasure committed: remove what lives outside the database (every hook)."""
    cleanup = Cleanup(
        organization_id=run.job.organization_id,
        payload=run.job.payload,
        db=run.services.db,
        objects=run.services.objects,
        lake_periods=lake.LakePeriods.of(run.services.settings),
    )
    await run_erase_hooks(cleanup)
    async with run.services.db.transaction(run.job.organization_id) as session:
        # The erased documents leave the external search index too (an index job of a
        # document that no longer exists removes it), in the transaction that ends this job.
        if run.services.search.needs_index_jobs:
            for document_id in run.job.payload.get("documentIds", []):
                await processing.enqueue_index_of(
                    session, run.services, run.job.organization_id, document_id
                )
        await complete(session, run)


HANDLERS = {
    EXTRACT: handle_extract,
    ANALYZE: handle_analyze,
    EXPORT: handle_export,
    ERASE_CLEANUP: handle_erase_cleanup,
    LIFECYCLE: handle_lifecycle,
    QUALITY: handle_quality,
}
# Jobs the workers queue for every organization each PRISM_LIFECYCLE_INTERVAL_HOURS.
PERIODIC = (LIFECYCLE, QUALITY)
