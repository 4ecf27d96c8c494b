"""Governance end to end on the real services: retention policies, the lifecycle (tiers on
the local store and on S3, purges that never touch a held document), data quality on seeded
bad rows, and backups (tests/test_backup.py)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url

from prism.governance import lifecycle, quality
from prism.models import governance as governance_models
from prism.models.audit import AuditEvent, verify_chain
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import DataCategory, JobState, Role, StorageTier
from prism.models.jobs import Job
from prism.models.organizations import read_organization_ids
from prism.services import Services
from prism.storage import LocalStore, S3Store
from tests.factories import Tenant, add_document, codes, gql
from tests.pipeline_helpers import upload
from tests.test_storage import bucket, s3_endpoint  # noqa: F401 - fixtures

POLICIES = (
    "{ retentionPolicies { category hotDays warmDays coldDays archiveDays deleteAfterDays } }"
)
UPDATE = """mutation($input: UpdateRetentionPolicyInput!) {
  updateRetentionPolicy(input: $input) { category hotDays deleteAfterDays } }"""
REPORT = """{ dataQualityReport { assessedAt overallScore
  checks { table dimension name score failingRows description } } }"""


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _as_owner(database_url: str, sql: str, *args: object) -> None:
    """Bad or old rows the API would never write, seeded as the schema owner."""
    conn = await asyncpg.connect(_plain(database_url))
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def _events(services: Services, tenant: Tenant, event_type: str) -> list[AuditEvent]:
    async with services.db.transaction(tenant.org_id) as session:
        rows = await session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.event_type == event_type)
            .order_by(AuditEvent.created_at)
        )
        return list(rows)


# --- retention policies ---------------------------------------------------------------------


async def test_retention_policies_default_and_change(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    body = await gql(client, POLICIES, token=tenant.tokens[Role.ADMIN])
    policies = {p["category"]: p for p in body["data"]["retentionPolicies"]}
    assert policies["DOCUMENTS"] == {
        "category": "DOCUMENTS",
        "hotDays": 30,
        "warmDays": 365,
        "coldDays": 1825,
        "archiveDays": 2555,
        "deleteAfterDays": None,
    }
    assert policies["SYSTEM_METRICS"]["deleteAfterDays"] == 1825
    assert set(policies) == {c.value for c in DataCategory}

    document = await add_document(services, tenant)
    changed = await gql(
        client,
        UPDATE,
        {"input": {"category": "DOCUMENTS", "hotDays": 10, "deleteAfterDays": 3000}},
        token=tenant.tokens[Role.ADMIN],
    )
    assert changed["data"]["updateRetentionPolicy"] == {
        "category": "DOCUMENTS",
        "hotDays": 10,
        "deleteAfterDays": 3000,
    }
    async with services.db.transaction(tenant.org_id) as session:
        row = await session.get(Document, document.id)
        assert row is not None
        assert row.retention_expires_at is not None
        assert row.retention_expires_at - row.created_at == timedelta(days=3000)
    [event] = await _events(services, tenant, "retention.update")
    assert event.before is not None
    assert event.before["hot_days"] == 30
    assert event.after is not None
    assert event.after["delete_after_days"] == 3000

    # null: never delete again; omitted fields stay
    never = await gql(
        client,
        UPDATE,
        {"input": {"category": "DOCUMENTS", "deleteAfterDays": None}},
        token=tenant.tokens[Role.ADMIN],
    )
    assert never["data"]["updateRetentionPolicy"]["deleteAfterDays"] is None
    assert never["data"]["updateRetentionPolicy"]["hotDays"] == 10

    bad = await gql(
        client,
        UPDATE,
        {"input": {"category": "FEEDBACK", "hotDays": 5000}},
        token=tenant.tokens[Role.ADMIN],
    )
    assert codes(bad) == ["BAD_USER_INPUT"]
    for role in (Role.AUDITOR, Role.APPROVER):
        assert codes(await gql(client, POLICIES, token=tenant.tokens[role])) == ["FORBIDDEN"]
        denied = await gql(
            client,
            UPDATE,
            {"input": {"category": "FEEDBACK", "hotDays": 1}},
            token=tenant.tokens[role],
        )
        assert codes(denied) == ["FORBIDDEN"]


async def test_upload_sets_retention_expiry_from_the_policy(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    response = await upload(
        client, tenant.tokens[Role.ADMIN], "a.txt", f"Retention {uuid.uuid4()}".encode()
    )
    document_id = response.json()["data"]["uploadDocument"]["document"]["id"]
    body = await gql(
        client,
        "query($id: ID!) { document(id: $id) { createdAt retentionExpiresAt storageTier } }",
        {"id": document_id},
        token=tenant.tokens[Role.ADMIN],
    )
    doc = body["data"]["document"]
    assert doc["storageTier"] == "HOT"
    from datetime import datetime

    created = datetime.fromisoformat(doc["createdAt"])
    expires = datetime.fromisoformat(doc["retentionExpiresAt"])
    assert expires - created == timedelta(days=2555)


# --- lifecycle --------------------------------------------------------------------------------


async def _stored_document(
    services: Services, tenant: Tenant, objects: LocalStore | S3Store, *, age_days: int
) -> Document:
    """A document with an object in ``store``, created ``age_days`` ago."""
    document = await add_document(services, tenant)
    key = f"org/{tenant.org_id}/documents/{document.id}"
    await objects.put_file(key, io.BytesIO(b"file bytes"), size=10, content_type="text/plain")
    created = utcnow() - timedelta(days=age_days)
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.update(Document)
            .where(Document.id == document.id)
            .values(storage_key=key, created_at=created, retention_expires_at=None)
        )
    document.storage_key = key
    return document


async def _set_hold(services: Services, tenant: Tenant, document: Document) -> None:
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.update(Document).where(Document.id == document.id).values(legal_hold=True)
        )


async def _tier(services: Services, tenant: Tenant, document: Document) -> StorageTier | None:
    async with services.db.transaction(tenant.org_id) as session:
        return await session.scalar(
            sa.select(Document.storage_tier).where(Document.id == document.id)
        )


async def test_lifecycle_moves_tiers_on_the_local_store_and_records_them(
    services: Services, tenant: Tenant, tmp_path: Path
) -> None:
    objects = LocalStore(tmp_path)
    warm = await _stored_document(services, tenant, objects, age_days=100)
    archive = await _stored_document(services, tenant, objects, age_days=2000)
    held = await _stored_document(services, tenant, objects, age_days=2000)
    fresh = await _stored_document(services, tenant, objects, age_days=1)
    await _set_hold(services, tenant, held)

    dry = await lifecycle.run_lifecycle(services.db, objects, tenant.org_id, dry_run=True)
    assert dict(dry.transitions) == {"HOT->WARM": 1, "HOT->ARCHIVE": 1}
    assert await _tier(services, tenant, warm) is StorageTier.HOT

    report = await lifecycle.run_lifecycle(services.db, objects, tenant.org_id)
    assert dict(report.transitions) == {"HOT->WARM": 1, "HOT->ARCHIVE": 1}
    assert await _tier(services, tenant, warm) is StorageTier.WARM
    assert await _tier(services, tenant, archive) is StorageTier.ARCHIVE
    assert await _tier(services, tenant, held) is StorageTier.HOT
    assert await _tier(services, tenant, fresh) is StorageTier.HOT
    [event] = await _events(services, tenant, "lifecycle.transition")
    assert event.after == {"transitions": {"HOT->WARM": 1, "HOT->ARCHIVE": 1}, "store": "local"}

    again = await lifecycle.run_lifecycle(services.db, objects, tenant.org_id)
    assert not again.changed
    assert len(await _events(services, tenant, "lifecycle.transition")) == 1


async def test_lifecycle_changes_the_s3_storage_class(
    services: Services,
    tenant: Tenant,
    s3_endpoint: str,  # noqa: F811
    bucket: str,  # noqa: F811
) -> None:
    objects = S3Store(bucket=bucket, prefix=f"t{uuid.uuid4().hex[:6]}/", endpoint_url=s3_endpoint)
    warm = await _stored_document(services, tenant, objects, age_days=100)
    cold = await _stored_document(services, tenant, objects, age_days=1000)
    report = await lifecycle.run_lifecycle(services.db, objects, tenant.org_id)
    assert dict(report.transitions) == {"HOT->WARM": 1, "HOT->COLD": 1}
    assert warm.storage_key is not None
    assert cold.storage_key is not None
    assert await objects.read_storage_class(warm.storage_key) == "STANDARD_IA"
    assert await objects.read_storage_class(cold.storage_key) == "GLACIER_IR"
    # still readable (Glacier Instant Retrieval)
    assert b"".join([c async for c in objects.open_stream(cold.storage_key)]) == b"file bytes"
    assert await _tier(services, tenant, cold) is StorageTier.COLD


async def test_purge_never_touches_a_document_under_legal_hold(
    services: Services, tenant: Tenant, tmp_path: Path
) -> None:
    objects = LocalStore(tmp_path)
    async with services.db.transaction(tenant.org_id) as session:
        await governance_models.store_retention_policy(
            session,
            tenant.org_id,
            governance_models.RetentionPolicy(DataCategory.DOCUMENTS, 30, 365, 1825, 2555, 2555),
        )
    expired = await _stored_document(services, tenant, objects, age_days=3000)
    held = await _stored_document(services, tenant, objects, age_days=3000)
    young = await _stored_document(services, tenant, objects, age_days=10)
    await _set_hold(services, tenant, held)
    async with services.db.transaction(tenant.org_id) as session:
        policy = await governance_models.read_retention_policy(
            session, tenant.org_id, DataCategory.DOCUMENTS
        )
        await governance_models.reset_document_expiry(session, tenant.org_id, policy)

    dry = await lifecycle.run_lifecycle(services.db, objects, tenant.org_id, dry_run=True)
    assert dry.purged["DOCUMENTS"] == 1
    assert await objects.exists(expired.storage_key or "")

    report = await lifecycle.run_lifecycle(services.db, objects, tenant.org_id)
    assert report.purged["DOCUMENTS"] == 1
    async with services.db.transaction(tenant.org_id) as session:
        left = set(
            await session.scalars(
                sa.select(Document.id).where(Document.organization_id == tenant.org_id)
            )
        )
    assert expired.id not in left
    assert {held.id, young.id} <= left
    assert not await objects.exists(expired.storage_key or "")
    assert await objects.exists(held.storage_key or "")
    purges = await _events(services, tenant, "lifecycle.purge")
    assert [e.after["count"] for e in purges if e.after] == [1]
    assert purges[0].after is not None
    assert purges[0].after["documentIds"] == [str(expired.id)]
    # the held document moved no tier either: it stays readable at once
    assert await _tier(services, tenant, held) is StorageTier.HOT


async def test_row_purges_spare_held_documents_and_keep_the_audit_chain_verifiable(
    services: Services, tenant: Tenant, database_url: str, tmp_path: Path
) -> None:
    free = await add_document(services, tenant)
    held = await add_document(services, tenant)
    await _set_hold(services, tenant, held)
    old = utcnow() - timedelta(days=4000)
    await _as_owner(
        database_url,
        "UPDATE analysis_results SET created_at = $2 WHERE organization_id = $1",
        tenant.org_id,
        old,
    )
    async with services.db.transaction(tenant.org_id) as session:
        await governance_models.store_retention_policy(
            session,
            tenant.org_id,
            governance_models.RetentionPolicy(DataCategory.ANALYSES, 1, 2, 3, 4, 3000),
        )
        await governance_models.store_retention_policy(
            session,
            tenant.org_id,
            governance_models.RetentionPolicy(DataCategory.AUDIT_LOGS, 1, 2, 3, 4, 40),
        )
    # the audit log's older half is "old"; the chain must still verify after the purge
    async with services.db.transaction(tenant.org_id) as session:
        events = list(
            await session.scalars(
                sa.select(AuditEvent).order_by(AuditEvent.created_at, AuditEvent.id)
            )
        )
    assert len(events) > 2
    report = await lifecycle.run_lifecycle(services.db, LocalStore(tmp_path), tenant.org_id)
    async with services.db.transaction(tenant.org_id) as session:
        remaining = {
            document_id
            for (document_id,) in await session.execute(
                sa.text("SELECT DISTINCT document_id FROM analysis_results")
            )
        }
        chain = await verify_chain(session, organization_id=tenant.org_id)
    assert report.purged["ANALYSES"] > 0
    assert remaining == {held.id}
    assert free.id not in remaining
    assert chain.valid
    # nothing of the audit log was young enough to go (30 days is the floor)
    assert report.purged["AUDIT_LOGS"] == 0


async def test_periodic_jobs_are_scheduled_once_per_interval(
    services: Services,
    database_url: str,
    tenant: Tenant,  # at least one organization, whatever ran before
) -> None:
    async with services.db.transaction(None) as session:
        orgs = await read_organization_ids(session)
        first = await governance_models.schedule_jobs(
            session, kind="governance.lifecycle", every=timedelta(hours=24)
        )
    async with services.db.transaction(None) as session:
        second = await governance_models.schedule_jobs(
            session, kind="governance.lifecycle", every=timedelta(hours=24)
        )
    try:
        assert first == len(orgs) > 0
        assert second == 0
    finally:
        # the suite's other workers run only what their own tests queue
        await _as_owner(database_url, "DELETE FROM jobs WHERE kind = 'governance.lifecycle'")


async def test_lifecycle_job_runs_in_the_worker(
    services: Services, tenant: Tenant, tmp_path: Path
) -> None:
    from prism.jobs.handlers import HANDLERS, LIFECYCLE, JobRun
    from prism.models.jobs import enqueue_job

    async with services.db.transaction(tenant.org_id) as session:
        job = await enqueue_job(session, organization_id=tenant.org_id, kind=LIFECYCLE, payload={})
    async with services.db.transaction(tenant.org_id) as session:
        # claim exactly this job, as a worker's claim would
        await session.execute(
            sa.text(
                "UPDATE jobs SET state = 'RUNNING', locked_by = 'w', attempts = 1, "
                "locked_until = now() + interval '1 minute' WHERE id = :id"
            ),
            {"id": job.id},
        )
    async with services.db.transaction(tenant.org_id) as session:
        claimed = await session.get(Job, job.id)
    assert claimed is not None
    await HANDLERS[LIFECYCLE](JobRun(job=claimed, worker="w", services=services))
    async with services.db.transaction(tenant.org_id) as session:
        done = await session.get(Job, job.id, populate_existing=True)
    assert done is not None
    assert done.state is JobState.SUCCEEDED


# --- data quality -----------------------------------------------------------------------------


def _check(run: governance_models.QualityRun, name: str) -> dict[str, object]:
    return next(c for c in run.checks if c["name"] == name)


async def test_quality_scores_reflect_seeded_bad_rows(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, database_url: str
) -> None:
    clean = await quality.assess(services.db, tenant.org_id, analysis_sla_seconds=300)
    good = await add_document(services, tenant)
    bad = await add_document(services, tenant)
    for doc in (good, bad, await add_document(services, tenant)):
        await _as_owner(
            database_url,
            "UPDATE documents SET storage_key = 'k/' || id WHERE id = $1",
            doc.id,
        )
    await _as_owner(
        database_url,
        "UPDATE documents SET sha256 = repeat('z', 64), word_count = -5, total_sections = 99 "
        "WHERE id = $1",
        bad.id,
    )
    await _as_owner(
        database_url,
        "UPDATE analysis_results SET duration_seconds = 9999 WHERE document_id = $1",
        bad.id,
    )
    run = await quality.assess(services.db, tenant.org_id, analysis_sla_seconds=300)

    validity = _check(run, "document_values_in_range")
    assert (validity["failingRows"], validity["checkedRows"]) == (1, 3)
    assert validity["score"] == pytest.approx(2 / 3, abs=1e-5)
    assert _check(run, "document_section_count")["failingRows"] == 1
    assert _check(run, "document_required_fields")["failingRows"] == 0
    assert _check(run, "analysis_within_sla")["failingRows"] > 0
    assert _check(run, "document_hash_unique")["score"] == 1.0
    assert run.overall_score < clean.overall_score == 1.0
    assert {c["dimension"] for c in run.checks} == {
        "completeness",
        "validity",
        "consistency",
        "timeliness",
    }
    gauge = REGISTRY.get_sample_value(
        "prism_data_quality_score",
        {
            "organization": str(tenant.org_id),
            "table": "documents",
            "dimension": "validity",
            "check": "document_values_in_range",
        },
    )
    assert gauge == pytest.approx(2 / 3, abs=1e-5)

    body = await gql(client, REPORT, token=tenant.tokens[Role.AUDITOR])
    report = body["data"]["dataQualityReport"]
    assert report["overallScore"] == pytest.approx(run.overall_score)
    assert len(report["checks"]) == len(quality.CHECKS)
    assert codes(await gql(client, REPORT, token=tenant.tokens[Role.VIEWER])) == ["FORBIDDEN"]


async def test_quality_report_is_null_before_the_first_run(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = await gql(client, REPORT, token=tenant.tokens[Role.ADMIN])
    assert body["data"] == {"dataQualityReport": None}


def _prism(*args: str, database_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env.update(
        PRISM_DATABASE_URL=database_url,
        PRISM_DATA_DIR=str(data_dir),
        PRISM_JWT_SECRET="j" * 40,
        PRISM_LOG_LEVEL="WARNING",
    )
    return subprocess.run(
        [sys.executable, "-m", "prism.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


async def test_quality_check_command_exits_non_zero_under_the_threshold(
    services: Services, tenant: Tenant, database_url: str, tmp_path: Path
) -> None:
    doc = await add_document(services, tenant)
    await _as_owner(database_url, "UPDATE documents SET word_count = -1 WHERE id = $1", doc.id)
    args = ("quality", "check", "--org", str(tenant.org_id), "--json")
    strict = await asyncio.to_thread(
        _prism, *args, "--threshold", "0.999", database_url=database_url, data_dir=tmp_path
    )
    assert strict.returncode == 1, strict.stderr
    [run] = json.loads(strict.stdout)
    assert run["overallScore"] < 0.999
    lenient = await asyncio.to_thread(
        _prism, *args, "--threshold", "0.5", database_url=database_url, data_dir=tmp_path
    )
    assert lenient.returncode == 0, lenient.stderr
