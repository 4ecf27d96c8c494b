"""The lake export: bronze/silver/gold Parquet datasets partitioned year=/month=/day=, read
back with pyarrow datasets (local store and S3); incremental by watermark; idempotent."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import aioboto3
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa
from pyarrow import fs
from pydantic import SecretStr
from sqlalchemy.dialects.postgresql import JSONB

from prism import bootstrap, demo
from prism.config import Settings
from prism.db import migrations
from prism.governance import lake
from prism.jobs.worker import Worker
from prism.models.analyses import Analysis
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import Classification, FeedbackAction, JobState, Role
from prism.models.feedback import Feedback, create_feedback
from prism.models.jobs import Job
from prism.models.users import User
from prism.privacy import erasure as privacy_erasure
from prism.services import Services
from prism.storage import S3Store
from tests.conftest import NewDatabase
from tests.factories import Tenant, add_document, make_tenant
from tests.test_storage import s3_endpoint  # noqa: F401 - the moto server

PII_NAME = "contract-jane.doe@example.com.txt"


@pytest.fixture
async def world(
    new_database: NewDatabase, settings: Settings, tmp_path: Path
) -> tuple[Services, Settings, Tenant]:
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(update={"database_url": SecretStr(url), "data_dir": tmp_path})
    services = bootstrap.build_services(own, url)
    tenant = await make_tenant(services)
    document = await add_document(services, tenant, filename=PII_NAME)
    await add_document(services, tenant, classification=Classification.PUBLIC)
    async with services.db.transaction(tenant.org_id) as session:
        await create_feedback(
            session,
            Feedback(
                organization_id=tenant.org_id,
                document_id=document.id,
                user_id=next(iter(tenant.users.values())).id,
                action=FeedbackAction.CUSTOM,
                custom_text="Call 415-555-0100 or write to jane.doe@example.com",
            ),
        )
    return services, own, tenant


def _lake_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "prism.cli",
            "lake",
            "export",
            "--settle-seconds",
            "0",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_lake_export_reads_back_and_reruns_change_nothing(
    world: tuple[Services, Settings, Tenant],
) -> None:
    services, own, tenant = world
    root = own.data_dir / "objects" / "lake"
    try:
        # the command line, as an operator runs it
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
        env.update(
            PRISM_DATABASE_URL=own.database_url.get_secret_value(),  # type: ignore[union-attr]
            PRISM_DATA_DIR=str(own.data_dir),
            PRISM_LOG_LEVEL="WARNING",
        )
        done = _lake_cli(env)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["rows"] >= 4  # two documents, their analyses, one feedback
        assert report["files"] > 0

        bronze = ds.dataset(root / "bronze" / "documents", format="parquet", partitioning="hive")
        documents = bronze.to_table().to_pylist()
        today = utcnow()
        assert len(documents) == 2
        assert {(d["year"], d["month"], d["day"]) for d in documents} == {
            (today.year, today.month, today.day)
        }
        assert PII_NAME in {d["filename"] for d in documents}
        silver = ds.dataset(root / "silver" / "documents", format="parquet", partitioning="hive")
        names = silver.to_table(columns=["filename"]).column("filename").to_pylist()
        assert all("jane.doe@example.com" not in n for n in names)
        feedback = ds.dataset(root / "silver" / "feedback", format="parquet", partitioning="hive")
        (text,) = feedback.to_table(columns=["custom_text"]).column("custom_text").to_pylist()
        assert "jane.doe@example.com" not in text
        assert "415-555-0100" not in text
        gold = ds.dataset(root / "gold" / "daily_activity", format="parquet", partitioning="hive")
        (day,) = gold.to_table().to_pylist()
        assert day["documents_uploaded"] == 2
        assert day["feedback"] == 1
        assert day["analyses"] > 0
        schema = json.loads((root / "_schemas" / "bronze" / "documents.json").read_text())
        assert "filename" in {f["name"] for f in schema["fields"]}

        # a re-run finds nothing new and writes nothing
        before = _files(root)
        again = await lake.export(services.db, services.objects, settle_seconds=0)
        assert again.files == 0
        assert _files(root) == before
        # an overlapping --since rewrites the same bytes
        since = utcnow() - timedelta(days=2)
        await lake.export(services.db, services.objects, since=since, settle_seconds=0)
        assert _files(root) == before

        # a new row: only its day's partitions are rewritten, and it is there
        await add_document(services, tenant)
        later = await lake.export(services.db, services.objects, settle_seconds=0)
        assert later.files > 0
        assert bronze_count(root) == 3
    finally:
        await services.close()


def bronze_count(root: Path) -> int:
    dataset = ds.dataset(root / "bronze" / "documents", format="parquet", partitioning="hive")
    return int(dataset.count_rows())


async def test_lake_export_to_s3_reads_back(
    world: tuple[Services, Settings, Tenant],
    s3_endpoint: str,  # noqa: F811
) -> None:
    services, _, _ = world
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    async with aioboto3.Session().client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1"
    ) as s3:
        await s3.create_bucket(Bucket=bucket)
    objects = S3Store(bucket=bucket, prefix="p/", endpoint_url=s3_endpoint)
    try:
        report = await lake.export(services.db, objects, settle_seconds=0)
        assert report.files > 0
        s3fs = fs.S3FileSystem(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=s3_endpoint,
            region="us-east-1",
        )
        gold = ds.dataset(
            f"{bucket}/p/lake/gold/daily_activity",
            filesystem=s3fs,
            format="parquet",
            partitioning="hive",
        )
        assert gold.to_table().column("documents_uploaded").to_pylist() == [2]
    finally:
        await services.close()


async def test_erasure_rewrites_the_lake_partitions_that_held_the_person(
    world: tuple[Services, Settings, Tenant],
) -> None:
    services, own, tenant = world
    root = own.data_dir / "objects" / "lake"
    try:
        await lake.export(services.db, services.objects, settle_seconds=0)
        assert bronze_count(root) == 2
        # when: the uploader of both documents is erased, and the cleanup job runs
        uploader = tenant.users[Role.REVIEWER]
        async with services.db.transaction(tenant.org_id) as session:
            subject = await session.get(User, uploader.id, with_for_update=True)
            assert subject is not None
            erasure = await privacy_erasure.erase_user(session, subject)
            await privacy_erasure.schedule_cleanup(session, erasure, tenant.org_id, max_attempts=3)
        await Worker(services).drain()
        # then: their documents (and the feedback on them) are gone from every layer
        assert bronze_count(root) == 0
        for layer in ("bronze", "silver"):
            for name in ("documents", "analyses", "feedback"):
                assert not list((root / layer / name).rglob("*.parquet")), (layer, name)
        assert not list((root / "gold").rglob("*.parquet"))
    finally:
        await services.close()


# --- the demo's own data: every classification, analyses without findings, sealed findings ---


def _layer(root: Path, layer: str, name: str) -> list[dict[str, object]]:
    found = ds.dataset(root / layer / name, format="parquet", partitioning="hive")
    return list(found.to_table().to_pylist())


@pytest.fixture
async def demo_world(
    new_database: NewDatabase, settings: Settings, tmp_path: Path
) -> tuple[Services, Settings, uuid.UUID]:
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(update={"database_url": SecretStr(url), "data_dir": tmp_path})
    services = bootstrap.build_services(own, url)
    seeded = await demo.seed(services)
    return services, own, seeded.organization_id


async def test_the_demo_data_exports_whole_in_every_layer(
    demo_world: tuple[Services, Settings, uuid.UUID],
) -> None:
    services, own, org = demo_world
    root = own.data_dir / "objects" / "lake"
    try:
        async with services.db.transaction(org) as session:
            analyses = list(await session.scalars(sa.select(Analysis)))
            classifications = dict(
                (await session.execute(sa.select(Document.id, Document.classification))).all()
            )
            await services.envelope.open_analyses(session, analyses)
        # given the demo: every level, analyses without findings, RESTRICTED (sealed) findings
        assert set(classifications.values()) == set(Classification)
        assert any(not a.feedback_items for a in analyses)
        assert any(a.sealed is not None and a.feedback_items for a in analyses)
        findings = {str(a.id): len(a.feedback_items) for a in analyses}

        # when the lake is exported, as an operator does
        report = await lake.export(services.db, services.objects, settle_seconds=0)
        assert report.files > 0

        # then every analysis is in bronze and silver, with its true number of findings
        # (sealed ones included), and no sealed finding's text
        for layer in ("bronze", "silver"):
            rows = [r for r in _layer(root, layer, "analyses") if r["organization_id"] == str(org)]
            assert {str(r["id"]): r["finding_count"] for r in rows} == findings, layer
            for r in rows:
                assert isinstance(r["feedback_items"], str)
                items = json.loads(str(r["feedback_items"]))
                assert isinstance(items, list)
                if classifications[uuid.UUID(str(r["document_id"]))] is Classification.RESTRICTED:
                    assert items == []
        documents = _layer(root, "bronze", "documents")
        assert {d["classification"] for d in documents} == {c.value for c in Classification}
        gold = [
            g for g in _layer(root, "gold", "daily_activity") if g["organization_id"] == str(org)
        ]
        assert sum(int(str(g["findings"])) for g in gold) == sum(findings.values())
        assert sum(int(str(g["analyses"])) for g in gold) == len(analyses)
    finally:
        await services.close()


async def test_erasing_the_demo_uploader_cleans_the_lake_and_the_job_succeeds(
    demo_world: tuple[Services, Settings, uuid.UUID],
) -> None:
    services, own, org = demo_world
    root = own.data_dir / "objects" / "lake"
    try:
        await lake.export(services.db, services.objects, settle_seconds=0)
        async with services.db.transaction(org) as session:
            uploader = await session.scalar(
                sa.select(User).where(User.email == "admin@acme.example").with_for_update()
            )
            assert uploader is not None
            names = set(
                await session.scalars(
                    sa.select(Document.filename).where(Document.uploaded_by == uploader.id)
                )
            )
            assert names
            erasure = await privacy_erasure.erase_user(session, uploader)
            await privacy_erasure.schedule_cleanup(session, erasure, org, max_attempts=5)
        await Worker(services).drain()
        async with services.db.transaction(org) as session:
            (state, error) = (
                await session.execute(
                    sa.select(Job.state, Job.last_error).where(
                        Job.kind == privacy_erasure.ERASE_CLEANUP
                    )
                )
            ).one()
        assert state is JobState.SUCCEEDED, error
        left = [
            r
            for layer in ("bronze", "silver")
            for r in _layer(root, layer, "documents")
            if r["organization_id"] == str(org)
        ]
        assert not names & {str(r["filename"]) for r in left}
    finally:
        await services.close()


async def test_a_failed_export_leaves_the_lake_as_it_was(
    world: tuple[Services, Settings, Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    services, own, tenant = world
    root = own.data_dir / "objects" / "lake"
    try:
        await lake.export(services.db, services.objects, settle_seconds=0)
        before = _files(root)
        # given a new document, and an export that fails part-way through its day (gold)
        await add_document(services, tenant, classification=Classification.RESTRICTED)

        def broken(*args: object) -> dict[str, object]:
            raise RuntimeError("gold failed")

        monkeypatch.setattr(lake, "_gold_row", broken)
        with pytest.raises(RuntimeError):
            await lake.export(services.db, services.objects, settle_seconds=0)
        # then no partition of that day was rewritten, and no partial file is left
        assert _files(root) == before
        monkeypatch.undo()
        # and the next run exports the day whole (the watermark did not move)
        again = await lake.export(services.db, services.objects, settle_seconds=0)
        assert again.files > 0
        assert bronze_count(root) == 3
    finally:
        await services.close()


def _edge_values(column: sa.Column[object]) -> list[object]:
    """The values a column can hold that converters trip on: NULL, empty, and JSON of each
    shape (a list of strings looks like an ARRAY; [] looks like both)."""
    if isinstance(column.type, JSONB):
        return [[], {}, ["a", "b"], [{"quote": "jane.doe@example.com"}], {"k": None}]
    return [None] if column.nullable else []


def test_every_exported_column_takes_its_null_empty_and_json_values() -> None:
    # Every dataset's every column, each in turn at each awkward value (the rest left NULL or
    # at a plain value): bronze and silver rows convert, mask and encode.
    plain: dict[str, object] = {"created_at": utcnow(), "id": uuid.uuid4()}
    for dataset in lake.DATASETS:
        columns = lake._columns(dataset)
        schema = lake.schema_of(dataset)
        for column in columns:
            for value in _edge_values(column):
                raw = {c.name: plain.get(c.name) for c in columns}
                raw[column.name] = value
                row = {c.name: lake._converter(c)(raw[c.name]) for c in columns}
                silver = lake._silver(dataset, row)
                for kept in (row, silver):
                    table = pa.Table.from_pylist([kept], schema=schema)
                    assert table.num_rows == 1
                if isinstance(column.type, JSONB):
                    assert json.loads(str(row[column.name])) == value
                    assert "jane.doe@example.com" not in str(silver[column.name])
