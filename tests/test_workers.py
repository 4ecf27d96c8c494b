"""Real worker processes: a killed worker's job is taken over and finished without
duplicates, and two workers on one queue never run a job twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

from prism.config import Settings
from prism.execution.ids import from_global_id
from prism.models.analyses import Analysis
from prism.models.documents import Document, Section
from prism.models.enums import JobState, ProcessingStatus, Role
from prism.models.jobs import Job
from prism.services import Services
from tests.factories import Tenant
from tests.pipeline_helpers import run_jobs, upload


def _worker(
    settings: Settings, database_url: str, log: Path, *args: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env |= {
        "PRISM_DATABASE_URL": database_url,
        "PRISM_DATA_DIR": str(settings.data_dir),
        "PRISM_JOB_LEASE_SECONDS": "5",
        "PRISM_LOG_LEVEL": "WARNING",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "prism.cli", "worker", *args],
            env=env,
            stdout=out,
            stderr=out,
        )


def _long_text(sections: int) -> bytes:
    body = "\n\n".join(
        f"{i}. Clause {i}\nThe supplier accepts unlimited liability for clause {i}."
        for i in range(1, sections + 1)
    )
    return f"{body}\n{uuid.uuid4()}".encode()


async def _document_id(response: httpx.Response) -> uuid.UUID:
    body = response.json()
    assert body.get("errors") is None, body
    return from_global_id(body["data"]["uploadDocument"]["document"]["id"])[1]


async def test_a_killed_worker_is_taken_over_without_duplicates(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
) -> None:
    # given a document whose analysis takes a while (one commit per section)
    sections = 400
    doc_id = await _document_id(
        await upload(client, tenant.tokens[Role.REVIEWER], "long.txt", _long_text(sections))
    )
    worker = _worker(settings, database_url, tmp_path / "worker.log", "--concurrency", "1")
    try:
        # when the worker is killed halfway through the analysis
        analyzed = 0
        for _ in range(600):
            async with services.db.transaction(tenant.org_id) as session:
                analyzed = int(
                    await session.scalar(
                        sa.select(sa.func.count())
                        .select_from(Analysis)
                        .where(Analysis.document_id == doc_id)
                    )
                    or 0
                )
            if analyzed >= 20:
                break
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert 0 < analyzed < sections, "the kill must land mid-job"
    # then once its lease expires another worker finishes the job
    await asyncio.sleep(5.5)
    await run_jobs(services)
    async with services.db.transaction(tenant.org_id) as session:
        document = await session.get(Document, doc_id)
        per_section = (
            await session.execute(
                sa.select(Analysis.section_id, sa.func.count())
                .where(Analysis.document_id == doc_id)
                .group_by(Analysis.section_id)
            )
        ).all()
        jobs = list(await session.scalars(sa.select(Job).where(Job.kind == "document.analyze")))
    assert document is not None
    assert document.processing_status is ProcessingStatus.COMPLETED
    assert len(per_section) == sections
    assert {count for _, count in per_section} == {1}
    analyze_job = next(j for j in jobs if j.payload["documentId"] == str(doc_id))
    assert analyze_job.state is JobState.SUCCEEDED
    assert analyze_job.attempts == 2


async def test_two_workers_never_run_a_job_twice(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
) -> None:
    ids = [
        await _document_id(
            await upload(client, tenant.tokens[Role.REVIEWER], f"d{i}.txt", _long_text(3))
        )
        for i in range(24)
    ]
    workers = [
        _worker(settings, database_url, tmp_path / f"w{n}.log", "--drain", "--concurrency", "3")
        for n in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=180) == 0, (tmp_path / "w0.log").read_text()
    await run_jobs(services)  # anything a worker left for the other
    async with services.db.transaction(tenant.org_id) as session:
        jobs = list(await session.scalars(sa.select(Job)))
        sections = (
            await session.execute(
                sa.select(Section.document_id, sa.func.count())
                .where(Section.document_id.in_(ids))
                .group_by(Section.document_id)
            )
        ).all()
        analyses = await session.scalar(
            sa.select(sa.func.count()).select_from(Analysis).where(Analysis.document_id.in_(ids))
        )
    assert len(jobs) == 48
    assert {(j.state, j.attempts) for j in jobs} == {(JobState.SUCCEEDED, 1)}
    assert sorted(count for _, count in sections) == [3] * 24
    assert analyses == 24 * 3
    own = {str(j.id) for j in jobs}
    logs = [line for w in range(2) for line in (tmp_path / f"w{w}.log").read_text().splitlines()]
    assert not [line for line in logs if "failed" in line and any(i in line for i in own)]


async def test_sigterm_finishes_or_gives_back_the_job(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
) -> None:
    doc_id = await _document_id(
        await upload(client, tenant.tokens[Role.REVIEWER], "t.txt", _long_text(200))
    )
    worker = _worker(settings, database_url, tmp_path / "worker.log", "--concurrency", "1")
    try:
        for _ in range(600):
            async with services.db.transaction(tenant.org_id) as session:
                status = await session.scalar(
                    sa.select(Document.processing_status).where(Document.id == doc_id)
                )
            if status is ProcessingStatus.ANALYZING:
                break
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        # a graceful stop: the process ends by itself, well within the grace period
        assert worker.wait(timeout=40) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    async with services.db.transaction(tenant.org_id) as session:
        running = await session.scalar(
            sa.select(sa.func.count()).select_from(Job).where(Job.state == JobState.RUNNING)
        )
    assert running == 0  # nothing left claimed by a worker that is gone
    await run_jobs(services)
    async with services.db.transaction(tenant.org_id) as session:
        document = await session.get(Document, doc_id)
    assert document is not None
    assert document.processing_status is ProcessingStatus.COMPLETED
