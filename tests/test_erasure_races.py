"""Erasure against what runs beside it: a lake export in flight, a lifecycle purge, an upload
in progress, a legal hold lifted later. Each race is made to happen, deterministically, at
the worst moment (a hook between a read and the write that follows it)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from prism.config import Settings
from prism.documents import originals
from prism.governance import lake, lifecycle
from prism.jobs.worker import Worker
from prism.models import governance as governance_models
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import DataCategory, FeedbackAction, Role
from prism.models.feedback import Feedback, create_feedback
from prism.models.jobs import Job
from prism.models.users import User
from prism.privacy import erasure as privacy_erasure
from prism.services import Services
from tests.factories import Tenant, add_document, codes
from tests.pipeline_helpers import upload
from tests.test_lake import PII_NAME, world  # noqa: F401 - the fixture

World = tuple[Services, Settings, Tenant]


def _rows(root: Path, layer: str, name: str) -> list[dict[str, Any]]:
    path = root / layer / name
    if not list(path.rglob("*.parquet")):
        return []
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


async def _erase(services: Services, tenant: Tenant, role: Role) -> list[Job]:
    """Erase the tenant's user of ``role`` and run the cleanup; its jobs."""
    async with services.db.transaction(tenant.org_id) as session:
        subject = await session.get(User, tenant.users[role].id, with_for_update=True)
        assert subject is not None
        erasure = await privacy_erasure.erase_user(session, subject)
        await privacy_erasure.schedule_cleanup(session, erasure, tenant.org_id, max_attempts=3)
    await Worker(services).drain()
    async with services.db.transaction(tenant.org_id) as session:
        return await privacy_erasure.read_cleanup_jobs(
            session, tenant.org_id, tenant.users[role].id
        )


async def _waiting_on_a_lock(services: Services) -> bool:
    async with services.db.transaction(None) as session:
        waiting = await session.scalar(
            sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
    return bool(waiting)


async def _until_blocked_or_done(services: Services, task: asyncio.Task[Any]) -> None:
    for _ in range(400):
        if task.done() or await _waiting_on_a_lock(services):
            return
        await asyncio.sleep(0.025)
    pytest.fail("the erasure neither finished nor waited")


async def test_a_lake_export_racing_an_erasure_does_not_write_the_erased_rows_back(
    world: World,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The export reads the day, the erasure commits and its cleanup rewrites the lake, then
    the export writes: the rows it read must not land (the watermark never revisits)."""
    services, own, tenant = world
    root = own.data_dir / "objects" / "lake"
    real = lake._rows_of_day
    race: dict[str, Any] = {"armed": False, "task": None}
    try:
        await lake.export(services.db, services.objects, settle_seconds=0)
        assert PII_NAME in {r["filename"] for r in _rows(root, "bronze", "documents")}
        await add_document(services, tenant, uploader=Role.APPROVER)  # the day changes again

        async def rows_of_day(
            session: Any, dataset: lake.Dataset, organization_id: uuid.UUID, day: Any
        ) -> list[dict[str, Any]]:
            rows = await real(session, dataset, organization_id, day)
            if race["armed"] and dataset.name == lake.DATASETS[-1].name:
                race["armed"] = False  # the day is read: erase now, before it is written
                task = asyncio.create_task(_erase(services, tenant, Role.REVIEWER))
                race["task"] = task
                await _until_blocked_or_done(services, task)
            return rows

        monkeypatch.setattr(lake, "_rows_of_day", rows_of_day)
        race["armed"] = True
        await lake.export(services.db, services.objects, settle_seconds=0)
        jobs: list[Job] = await race["task"]
        monkeypatch.setattr(lake, "_rows_of_day", real)

        assert privacy_erasure.cleanup_complete(jobs)
        for _ in range(2):  # as the race left it, and after the next export
            assert PII_NAME not in {r["filename"] for r in _rows(root, "bronze", "documents")}
            texts = [r["custom_text"] for r in _rows(root, "bronze", "feedback")]
            assert not any(t and "jane.doe@example.com" in t for t in texts)
            await lake.export(services.db, services.objects, settle_seconds=0)
    finally:
        await services.close()


@pytest.mark.parametrize("meanwhile", ["erased", "deactivated"])
async def test_an_upload_in_progress_does_not_outlive_its_uploaders_erasure(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: str,
) -> None:
    """The uploader is erased (or deactivated) while their file is being stored: the
    document row is refused in the transaction that would insert it, and the stored file
    is removed; nothing of theirs is left for a completed erasure to miss."""
    subject_id = tenant.users[Role.REVIEWER].id
    real = originals.put_original
    stored: list[str] = []

    async def put_then_erase(*args: Any, **kwargs: Any) -> None:
        await real(*args, **kwargs)
        stored.append(kwargs["storage_key"])
        async with services.db.transaction(tenant.org_id) as session:
            subject = await session.get(User, subject_id, with_for_update=True)
            assert subject is not None
            if meanwhile == "erased":
                erasure = await privacy_erasure.erase_user(session, subject)
                await privacy_erasure.schedule_cleanup(
                    session, erasure, tenant.org_id, max_attempts=3
                )
            else:
                subject.is_active = False

    monkeypatch.setattr(originals, "put_original", put_then_erase)
    response = await upload(
        client,
        tenant.tokens[Role.REVIEWER],
        "late.txt",
        f"A late file {uuid.uuid4()}\n".encode(),
        classification="CONFIDENTIAL",
    )
    monkeypatch.setattr(originals, "put_original", real)
    assert codes(response.json()) == ["UNAUTHENTICATED"]
    await Worker(services).drain()
    async with services.db.transaction(tenant.org_id) as session:
        left = await session.scalar(
            sa.select(sa.func.count())
            .select_from(Document)
            .where(Document.uploaded_by == subject_id)
        )
        assert left == 0
        if meanwhile == "erased":
            jobs = await privacy_erasure.read_cleanup_jobs(session, tenant.org_id, subject_id)
            assert privacy_erasure.cleanup_complete(jobs)
    (key,) = stored
    assert not await services.objects.exists(key)


async def _retain(services: Services, tenant: Tenant, category: DataCategory, days: int) -> None:
    async with services.db.transaction(tenant.org_id) as session:
        await governance_models.store_retention_policy(
            session,
            tenant.org_id,
            governance_models.RetentionPolicy(category, 1, 2, 3, days, days),
        )


async def test_lifecycle_purges_leave_the_lake_too_and_a_later_erasure_finds_nothing(
    world: World,  # noqa: F811
) -> None:
    """What retention deletes (a document with its analyses and feedback, or feedback rows on
    their own) is rewritten out of the lake's partitions; the person's later erasure, which
    finds its days through live rows, has nothing left in the lake to miss."""
    services, own, tenant = world
    root = own.data_dir / "objects" / "lake"
    old = utcnow() - timedelta(days=10)
    try:
        note = f"old note {uuid.uuid4().hex}"
        other = await add_document(services, tenant, uploader=Role.APPROVER)
        async with services.db.transaction(tenant.org_id) as session:
            await session.execute(
                sa.update(Document)
                .where(Document.filename == PII_NAME)
                .values(created_at=old, retention_expires_at=utcnow() - timedelta(days=1))
            )
            await create_feedback(
                session,
                Feedback(
                    organization_id=tenant.org_id,
                    document_id=other.id,
                    user_id=tenant.users[Role.REVIEWER].id,
                    action=FeedbackAction.CUSTOM,
                    custom_text=note,
                ),
            )
            await session.execute(
                sa.update(Feedback).where(Feedback.custom_text == note).values(created_at=old)
            )
        await lake.export(services.db, services.objects, settle_seconds=0)
        assert PII_NAME in {r["filename"] for r in _rows(root, "bronze", "documents")}
        assert note in {r["custom_text"] for r in _rows(root, "bronze", "feedback")}

        await _retain(services, tenant, DataCategory.DOCUMENTS, 5)
        await _retain(services, tenant, DataCategory.FEEDBACK, 5)
        report = await lifecycle.run_lifecycle(services.db, services.objects, tenant.org_id)
        assert report.purged["DOCUMENTS"] == 1
        assert report.purged["FEEDBACK"] >= 1
        await Worker(services).drain()
        for layer in ("bronze", "silver"):
            assert PII_NAME not in {r["filename"] for r in _rows(root, layer, "documents")}
            assert note not in {r["custom_text"] for r in _rows(root, layer, "feedback")}
        gold = _rows(root, "gold", "daily_activity")
        assert old.date() not in {r["activity_date"] for r in gold}

        jobs = await _erase(services, tenant, Role.REVIEWER)
        assert privacy_erasure.cleanup_complete(jobs)
        await lake.export(services.db, services.objects, settle_seconds=0)
        assert PII_NAME not in {r["filename"] for r in _rows(root, "bronze", "documents")}
        assert note not in {r["custom_text"] for r in _rows(root, "bronze", "feedback")}
    finally:
        await services.close()
