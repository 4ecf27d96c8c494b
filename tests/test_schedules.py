"""Fleet-wide schedules run by the workers: one backup and one lake export per interval
however many workers ask; the lake's layers kept for their periods; an erasure leaves no
trace of the person in any layer, through the scheduled runs too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa
from pydantic import SecretStr, ValidationError

from prism import bootstrap
from prism.config import Settings
from prism.db import migrations
from prism.governance import backup, lake
from prism.jobs import schedules
from prism.jobs.worker import Worker
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import Role
from prism.models.users import User
from prism.privacy import erasure as privacy_erasure
from prism.services import Services
from prism.storage import LocalStore, S3Store, backup_store
from tests.conftest import NewDatabase
from tests.factories import Tenant, add_document, make_tenant
from tests.test_lake import PII_NAME, world  # noqa: F401 - the fixture


async def _own_services(
    new_database: NewDatabase, settings: Settings, data_dir: Path, **changes: Any
) -> Services:
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(
        update={"database_url": SecretStr(url), "data_dir": data_dir, **changes}
    )
    return bootstrap.build_services(own, url)


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.2)


async def _run_workers(services: Services, count: int, done: Callable[[], Awaitable[bool]]) -> None:
    """``count`` workers on one database until ``done``, then a few more seconds (every one
    of them has asked by then), then stopped."""
    stop = asyncio.Event()
    workers = [Worker(services, name=f"w{i}") for i in range(count)]
    runs = [asyncio.create_task(w.run(stop, grace_seconds=5)) for w in workers]
    try:
        await _until(done)
        await asyncio.sleep(3)
    finally:
        stop.set()
        await asyncio.gather(*runs)


async def test_two_workers_make_one_backup_per_interval(
    new_database: NewDatabase, settings: Settings, tmp_path: Path
) -> None:
    services = await _own_services(
        new_database,
        settings,
        tmp_path,
        backup_interval_hours=1,
        backup_url=str(tmp_path / "backups"),
        backup_keep=3,
    )
    destination = LocalStore(tmp_path / "backups")
    try:
        tenant = await make_tenant(services)
        await add_document(services, tenant)

        async def made() -> bool:
            return await backup.latest_time(destination, services.envelope.keks) is not None

        await _run_workers(services, 2, made)
        # one backup, though two workers asked (each at start, at once)
        assert len(await backup.list_backups(destination)) == 1
        # not due again within the interval; due once it has passed
        (schedule,) = schedules.fleet_schedules(services)
        url = schedules.owner_url(services)
        assert not await schedules.run_if_due(url, schedule)
        later = utcnow() + timedelta(hours=1, seconds=1)
        assert await schedules.run_if_due(url, schedule, now=lambda: later)
        assert len(await backup.list_backups(destination)) == 2
    finally:
        await services.close()


async def test_a_run_in_progress_holds_the_schedule_for_the_fleet(
    new_database: NewDatabase, settings: Settings, tmp_path: Path
) -> None:
    services = await _own_services(new_database, settings, tmp_path)
    try:
        ran: list[int] = []
        finished: list[datetime] = []

        async def last_run() -> datetime | None:
            return finished[-1] if finished else None

        async def work() -> None:
            ran.append(1)
            await asyncio.sleep(1.0)  # long enough for every other asker to find the lock
            finished.append(utcnow())

        schedule = schedules.Schedule(
            name=f"test-{uuid.uuid4().hex[:6]}",
            every=timedelta(hours=1),
            last_run=last_run,
            work=work,
        )
        url = schedules.owner_url(services)
        answers = await asyncio.gather(*[schedules.run_if_due(url, schedule) for _ in range(4)])
        assert sorted(answers) == [False, False, False, True]
        assert ran == [1]
        # after it: not due (the record says it ran), whoever asks
        assert not await schedules.run_if_due(url, schedule)
        assert ran == [1]
        # a schedule with nothing recorded, asked after a crash freed the lock, runs again
        finished.clear()
        assert await schedules.run_if_due(url, schedule)
        assert ran == [1, 1]
    finally:
        await services.close()


async def test_two_workers_export_the_lake_once_per_interval(
    new_database: NewDatabase, settings: Settings, tmp_path: Path
) -> None:
    services = await _own_services(new_database, settings, tmp_path, lake_interval_hours=1)
    record = tmp_path / "objects" / lake.RUN_RECORD
    try:
        tenant = await make_tenant(services)
        document = await add_document(services, tenant)
        # older than the export's settling time (rows younger wait for the next run)
        await _age(services, tenant, document.id, 0, minutes=5)

        async def exported() -> bool:
            return record.exists()

        await _run_workers(services, 2, exported)
        said = orjson.loads(record.read_bytes())
        assert said["runs"] == 1
        assert said["report"]["organizations"] >= 1
        assert list((tmp_path / "objects" / "lake" / "gold").rglob("*.parquet"))
        # the scheduler is off when the interval is 0 (the default)
        off = services.settings.model_copy(update={"lake_interval_hours": 0})
        assert schedules.lake_schedule(_with(services, off)) is None
    finally:
        await services.close()


def _with(services: Services, settings: Settings) -> Services:
    from dataclasses import replace

    return replace(services, settings=settings)


# --- lake retention -------------------------------------------------------------------------


async def _age(
    services: Services, tenant: Tenant, document_id: uuid.UUID, days: int, minutes: int = 0
) -> None:
    """The document, its analyses and its feedback created (and last changed) ``days`` and
    ``minutes`` ago."""
    from prism.models.analyses import Analysis
    from prism.models.feedback import Feedback

    async with services.db.transaction(tenant.org_id) as session:
        then = utcnow() - timedelta(days=days, minutes=minutes)
        for model in (Document, Analysis, Feedback):
            column = model.id if model is Document else model.document_id  # type: ignore[attr-defined]
            await session.execute(
                sa.update(model)
                .where(column == document_id)
                .values(created_at=then, **({} if model is Analysis else {"updated_at": then}))
            )


def _layer_days(root: Path, layer: str, name: str) -> set[str]:
    return {
        p.parent.relative_to(root / layer / name).as_posix()
        for p in (root / layer / name).rglob("*.parquet")
    }


async def test_lake_layers_are_kept_for_their_periods(
    world: tuple[Services, Settings, Tenant],  # noqa: F811
) -> None:
    services, own, tenant = world
    root = own.data_dir / "objects" / "lake"
    periods = lake.LakePeriods.of(own)
    assert (periods.bronze, periods.silver, periods.gold) == (90, 730, 2555)
    try:
        old = await add_document(services, tenant, filename="old.txt")
        await _age(services, tenant, old.id, 200)
        today = utcnow().date()
        old_day = today - timedelta(days=200)

        def part(day: Any) -> str:
            return f"year={day.year}/month={day.month}/day={day.day}"

        # a partition older than bronze's period is never written to bronze; silver and gold
        # keep it
        await lake.export(services.db, services.objects, settle_seconds=0, periods=periods)
        assert _layer_days(root, "bronze", "documents") == {part(today)}
        # (the scheduled run finds nothing new since)
        report = await lake.scheduled_export(
            services.db, services.objects, periods, settle_seconds=0
        )
        assert report.files == 0
        assert _layer_days(root, "bronze", "documents") == {part(today)}
        assert _layer_days(root, "silver", "documents") == {part(today), part(old_day)}
        assert part(old_day) in _layer_days(root, "gold", "daily_activity")

        # one written before (periods off), then expired by the next run's sweep
        await lake.export(
            services.db, services.objects, since=utcnow() - timedelta(days=400), settle_seconds=0
        )
        assert part(old_day) in _layer_days(root, "bronze", "documents")
        removed = await lake.expire(services.objects, periods)
        assert removed["bronze"] >= 1
        assert removed["silver"] == removed["gold"] == 0
        assert _layer_days(root, "bronze", "documents") == {part(today)}

        # as time passes: bronze goes at 90 days, silver at 730, gold at 2555
        later = await lake.expire(services.objects, periods, today=today + timedelta(days=100))
        assert later["bronze"] > 0
        assert not list((root / "bronze").rglob("*.parquet"))
        assert _layer_days(root, "silver", "documents") == {part(today), part(old_day)}
        await lake.expire(services.objects, periods, today=today + timedelta(days=800))
        assert not list((root / "silver").rglob("*.parquet"))
        assert list((root / "gold").rglob("*.parquet"))
        await lake.expire(services.objects, periods, today=today + timedelta(days=2600))
        assert not list((root / "gold").rglob("*.parquet"))
    finally:
        await services.close()


# --- erasure and the lake -------------------------------------------------------------------


def _strings(root: Path) -> set[str]:
    """Every string value of every Parquet file under ``root`` (any layer, any column)."""
    found: set[str] = set()
    for path in root.rglob("*.parquet"):
        table = ds.dataset(path, format="parquet").to_table()
        for column in table.columns:
            for value in column.to_pylist():
                if isinstance(value, str):
                    found.add(value)
                elif isinstance(value, list):
                    found.update(v for v in value if isinstance(v, str))
    return found


async def test_an_erasure_leaves_no_trace_in_any_layer_through_scheduled_runs(
    world: tuple[Services, Settings, Tenant],  # noqa: F811
) -> None:
    services, own, tenant = world
    root = own.data_dir / "objects" / "lake"
    periods = lake.LakePeriods.of(own)
    uploader = tenant.users[Role.REVIEWER]
    try:
        # given: one of the person's documents is old (beyond bronze's period), one new
        old = await add_document(services, tenant, filename="old-jane.doe@example.com.txt")
        await _age(services, tenant, old.id, 200)
        # and someone else's document of that day stays
        kept = await add_document(services, tenant, filename="kept.txt", uploader=Role.ADMIN)
        await _age(services, tenant, kept.id, 200)
        old_day = utcnow().date() - timedelta(days=200)
        old_part = f"year={old_day.year}/month={old_day.month}/day={old_day.day}"
        async with services.db.transaction(tenant.org_id) as session:
            ids = {
                str(i)
                for i in await session.scalars(
                    sa.select(Document.id).where(Document.uploaded_by == uploader.id)
                )
            }
        assert len(ids) == 3
        await lake.scheduled_export(services.db, services.objects, periods, settle_seconds=0)
        before = _strings(root)
        assert PII_NAME in before
        assert ids <= before

        # when: the person is erased, the cleanup job runs, and the next scheduled run too
        async with services.db.transaction(tenant.org_id) as session:
            subject = await session.get(User, uploader.id, with_for_update=True)
            assert subject is not None
            erasure = await privacy_erasure.erase_user(session, subject)
            await privacy_erasure.schedule_cleanup(session, erasure, tenant.org_id, max_attempts=3)
        await Worker(services).drain()
        # the erasure's rewrite of the old day: silver without the person, bronze (expired)
        # not brought back
        assert not list((root / "bronze").rglob(f"{old_part}/*"))
        silver_old = _strings(root / "silver" / "documents" / old_part)
        assert "kept.txt" in silver_old
        assert not any("jane.doe" in s for s in silver_old)
        await lake.scheduled_export(services.db, services.objects, periods, settle_seconds=0)

        # then: no layer holds their documents, file names or feedback text
        after = _strings(root)
        assert not ids & after
        assert not any("jane.doe" in s for s in after)
        assert not any("415-555-0100" in s for s in after)
        assert "kept.txt" in after
    finally:
        await services.close()


def test_the_backup_destination_is_a_bucket_or_a_directory(tmp_path: Path) -> None:
    for wrong in ("s3:///no-bucket", "ftp://host/dir"):
        with pytest.raises(ValidationError, match="PRISM_BACKUP_URL"):
            Settings(backup_url=wrong)
    bucket = backup_store(
        Settings(backup_url="s3://vault/prism/nightly?region=eu-west-1", s3_region="us-east-1")
    )
    assert isinstance(bucket, S3Store)
    assert (bucket.bucket, bucket.prefix, bucket.region) == ("vault", "prism/nightly/", "eu-west-1")
    for given in (str(tmp_path / "b"), f"file://{tmp_path / 'b'}"):
        directory = backup_store(Settings(backup_url=given))
        assert isinstance(directory, LocalStore)
        assert directory.root == (tmp_path / "b").resolve()
    # unset: beside the data directory, not inside the data's store
    default = backup_store(Settings(data_dir=tmp_path))
    assert isinstance(default, LocalStore)
    assert default.root == (tmp_path / "backups").resolve()
