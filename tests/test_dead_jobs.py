"""Jobs that gave up (DEAD) are visible and recoverable: an ADMIN lists them in GraphQL (their
organization's only, paged), operators list and retry them from the command line, /metrics
counts jobs by state and kind, and an erasure says whether its cleanup is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from prism.documents.processing import INDEX
from prism.execution.ids import from_global_id
from prism.jobs.handlers import PermanentJobError
from prism.jobs.watch import retry_dead
from prism.models import jobs as job_models
from prism.models.audit import Actor, AuditEvent, RequestMeta
from prism.models.enums import JobState, Role
from prism.models.jobs import Job
from prism.models.users import User
from prism.privacy import erasure as privacy_erasure
from prism.services import Services
from tests.factories import PASSWORD, Tenant, add_document, codes, gid, gql
from tests.pipeline_helpers import run_jobs

JOBS = """query($filter: JobFilter, $first: Int, $after: String) {
  jobs(filter: $filter, first: $first, after: $after) {
    edges { cursor node { id kind state attempts maxAttempts lastError finishedAt } }
    pageInfo { hasNextPage endCursor } } }"""
ERASE = """mutation($id: ID!) { eraseUser(userId: $id) {
  documentsDeleted cleanupComplete cleanupJobs { id kind state attempts maxAttempts
  lastError createdAt updatedAt runAt startedAt finishedAt } } }"""
STATUS = """query($id: ID!) { erasureStatus(userId: $id) {
  subjectId erasedAt cleanupComplete cleanupJobs { id state lastError } } }"""
LOGIN = """mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) {
  accessToken } }"""


async def _dead_jobs(services: Services, tenant: Tenant, kind: str, n: int) -> list[uuid.UUID]:
    """``n`` jobs of a kind no worker handles: the worker gives them up at once (DEAD)."""
    async with services.db.transaction(tenant.org_id) as session:
        jobs = [
            await job_models.enqueue_job(
                session, organization_id=tenant.org_id, kind=kind, payload={}
            )
            for _ in range(n)
        ]
    await run_jobs(services)
    return [j.id for j in jobs]


async def _state(services: Services, tenant: Tenant, job_id: uuid.UUID) -> Job:
    async with services.db.transaction(tenant.org_id) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


def _kind() -> str:
    return f"test.unhandled-{uuid.uuid4().hex[:8]}"


async def test_admins_list_their_organizations_dead_jobs_page_by_page(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    kind = _kind()
    ours = await _dead_jobs(services, tenant, kind, 3)
    await _dead_jobs(services, other_tenant, kind, 1)
    async with services.db.transaction(tenant.org_id) as session:
        healthy = await job_models.enqueue_job(
            session, organization_id=tenant.org_id, kind="bi.refresh", payload={}
        )
    await run_jobs(services)
    admin = tenant.tokens[Role.ADMIN]

    # when an ADMIN pages through the DEAD jobs of that kind, two at a time
    seen: list[dict[str, Any]] = []
    after = None
    for _ in range(3):
        variables = {"filter": {"state": ["DEAD"], "kind": [kind]}, "first": 2, "after": after}
        body = await gql(client, JOBS, variables, token=admin)
        assert body.get("errors") is None, body
        page = body["data"]["jobs"]
        seen += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    # then they are exactly the organization's own, newest first, each saying why it died
    assert [from_global_id(n["id"])[1] for n in seen] == list(reversed(ours))
    assert {n["state"] for n in seen} == {"DEAD"}
    assert all(n["lastError"] and n["finishedAt"] for n in seen)
    # the filter holds: no DEAD job lists a job that succeeded, and state alone filters too
    body = await gql(client, JOBS, {"filter": {"state": ["SUCCEEDED"]}, "first": 100}, token=admin)
    ids = {from_global_id(e["node"]["id"])[1] for e in body["data"]["jobs"]["edges"]}
    assert healthy.id in ids
    assert not ids & set(ours)

    # and nobody else may list jobs
    for role in (Role.AUDITOR, Role.APPROVER, Role.REVIEWER, Role.VIEWER):
        denied = await gql(client, JOBS, {"filter": {"state": ["DEAD"]}}, token=tenant.tokens[role])
        assert codes(denied) == ["FORBIDDEN"], role


def _gauge(text: str, state: str, kind: str, name: str = "prism_jobs") -> float | None:
    for line in text.splitlines():
        labelled = f'kind="{kind}"' in line and f'state="{state}"' in line
        if line.startswith(name + "{") and labelled:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_count_jobs_by_state_and_kind_over_every_organization(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    kind = _kind()
    ours = await _dead_jobs(services, tenant, kind, 2)
    await _dead_jobs(services, other_tenant, kind, 1)
    metrics = (await client.get("/metrics")).text
    assert _gauge(metrics, "DEAD", kind) == 3
    # when one is retried it is QUEUED again, and the DEAD count follows at the next scrape
    retried = await retry_dead(
        services.db, tenant.org_id, [ours[0]], actor=Actor(), meta=RequestMeta()
    )
    assert [j.id for j in retried] == [ours[0]]
    metrics = (await client.get("/metrics")).text
    assert _gauge(metrics, "DEAD", kind) == 2
    assert _gauge(metrics, "QUEUED", kind) == 1
    # how long the oldest has waited: runnable for ten minutes, nobody took it
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.text("UPDATE jobs SET run_at = now() - interval '10 minutes' WHERE id = :id"),
            {"id": ours[0]},
        )
    metrics = (await client.get("/metrics")).text
    waited = _gauge(metrics, "QUEUED", kind, "prism_job_oldest_seconds")
    assert waited is not None
    assert 600 <= waited < 900
    # and back to DEAD once the worker gives it up again
    await run_jobs(services)
    metrics = (await client.get("/metrics")).text
    assert _gauge(metrics, "DEAD", kind) == 3
    assert _gauge(metrics, "QUEUED", kind) == 0
    assert _gauge(metrics, "QUEUED", kind, "prism_job_oldest_seconds") == 0
    # every run that gave up was counted, with its duration
    runs = {"kind": kind, "outcome": "dead"}
    assert REGISTRY.get_sample_value("prism_job_runs_total", runs) == 4
    assert REGISTRY.get_sample_value("prism_job_seconds_count", runs) == 4


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prism.cli", "jobs", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


async def test_operators_list_and_retry_dead_jobs_from_the_command_line(
    services: Services, tenant: Tenant, other_tenant: Tenant, database_url: str
) -> None:
    kind = _kind()
    ours = await _dead_jobs(services, tenant, kind, 2)
    theirs = await _dead_jobs(services, other_tenant, kind, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env.update(PRISM_DATABASE_URL=database_url, PRISM_LOG_LEVEL="WARNING")

    listed = _cli(env, "list", "--state", "DEAD", "--kind", kind, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {uuid.UUID(r["id"]) for r in rows} == {*ours, *theirs}
    assert {r["state"] for r in rows} == {"DEAD"}

    # one by id: queued again with its attempts from zero, and audited
    done = _cli(env, "retry", str(ours[0]), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["retried"] == [{"id": str(ours[0]), "kind": kind}]
    job = await _state(services, tenant, ours[0])
    assert (job.state, job.attempts, job.finished_at) == (JobState.QUEUED, 0, None)
    async with services.db.transaction(tenant.org_id) as session:
        event = await session.scalar(
            sa.select(AuditEvent).where(AuditEvent.event_type == "job.retry")
        )
    assert event is not None
    assert str(ours[0]) in json.dumps(event.after)
    # a job that is not DEAD is refused (exit 1), and left as it is
    again = _cli(env, "retry", str(ours[0]))
    assert again.returncode == 1
    assert (await _state(services, tenant, ours[0])).state is JobState.QUEUED
    # --all-dead of one organization leaves the others' alone
    every = _cli(env, "retry", "--all-dead", "--org", str(tenant.org_id), "--json")
    assert every.returncode == 0, every.stderr
    assert [r["id"] for r in json.loads(every.stdout)["retried"]] == [str(ours[1])]
    async with services.db.transaction(other_tenant.org_id) as session:
        other = await session.get(Job, theirs[0])
    assert other is not None
    assert other.state is JobState.DEAD
    # ids and --all-dead together is a usage error
    assert _cli(env, "retry", str(ours[0]), "--all-dead").returncode == 2


async def test_an_erasure_says_whether_its_cleanup_is_done(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    person = tenant.users[Role.REVIEWER]
    document = await add_document(services, tenant, uploader=Role.REVIEWER)
    login = await gql(client, LOGIN, {"e": tenant.email(Role.ADMIN), "p": PASSWORD})
    admin = login["data"]["login"]["accessToken"]

    # given a cleanup that cannot finish (the object store refuses, say)
    async def refused(cleanup: privacy_erasure.Cleanup) -> None:
        raise PermanentJobError("the object store refused the deletion")

    monkeypatch.setattr(privacy_erasure, "ERASE_HOOKS", [refused, *privacy_erasure.ERASE_HOOKS])
    body = await gql(client, ERASE, {"id": gid("User", person.id)}, token=admin)
    assert body.get("errors") is None, body
    receipt = body["data"]["eraseUser"]
    # the receipt does not claim what has not happened yet
    assert receipt["cleanupComplete"] is False
    assert [(j["kind"], j["state"]) for j in receipt["cleanupJobs"]] == [
        (privacy_erasure.ERASE_CLEANUP, "QUEUED")
    ]
    await run_jobs(services)
    status = await gql(client, STATUS, {"id": gid("User", person.id)}, token=admin)
    assert status.get("errors") is None, status
    (job,) = status["data"]["erasureStatus"]["cleanupJobs"]
    assert status["data"]["erasureStatus"]["cleanupComplete"] is False
    assert job["state"] == "DEAD"
    assert "refused" in job["lastError"]
    # and the ADMIN's DEAD-job view shows it
    dead = await gql(
        client,
        JOBS,
        {"filter": {"state": ["DEAD"], "kind": [privacy_erasure.ERASE_CLEANUP]}},
        token=admin,
    )
    assert job["id"] in {e["node"]["id"] for e in dead["data"]["jobs"]["edges"]}

    # when the cause is gone and the job is retried, the erasure is complete
    monkeypatch.undo()
    await retry_dead(
        services.db,
        tenant.org_id,
        [from_global_id(job["id"])[1]],
        actor=Actor(),
        meta=RequestMeta(),
    )
    await run_jobs(services)
    status = await gql(client, STATUS, {"id": gid("User", person.id)}, token=admin)
    assert status["data"]["erasureStatus"]["cleanupComplete"] is True
    assert [j["state"] for j in status["data"]["erasureStatus"]["cleanupJobs"]] == ["SUCCEEDED"]
    # what the cleanup queues for the erased documents (removal from an external search
    # index) is part of it: not complete until that has run too
    async with services.db.transaction(tenant.org_id) as session:
        follow_up = await job_models.enqueue_job(
            session,
            organization_id=tenant.org_id,
            kind=INDEX,
            payload={"documentId": str(document.id)},
        )
    status = await gql(client, STATUS, {"id": gid("User", person.id)}, token=admin)
    assert status["data"]["erasureStatus"]["cleanupComplete"] is False
    jobs = status["data"]["erasureStatus"]["cleanupJobs"]
    assert [(from_global_id(j["id"])[1], j["state"]) for j in jobs][1:] == [
        (follow_up.id, "QUEUED")
    ]
    await run_jobs(services)
    status = await gql(client, STATUS, {"id": gid("User", person.id)}, token=admin)
    assert status["data"]["erasureStatus"]["cleanupComplete"] is True
    # someone never erased has no erasure status; non-ADMINs may not ask
    never = await gql(client, STATUS, {"id": tenant.user_gid(Role.VIEWER)}, token=admin)
    assert never["data"]["erasureStatus"] is None
    denied = await gql(
        client, STATUS, {"id": gid("User", person.id)}, token=tenant.tokens[Role.AUDITOR]
    )
    assert codes(denied) == ["FORBIDDEN"]


async def test_erasure_status_of_another_organization_is_not_found(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    # given a person of the other organization, erased
    victim = other_tenant.users[Role.REVIEWER]
    async with services.db.transaction(other_tenant.org_id) as session:
        subject = await session.get(User, victim.id, with_for_update=True)
        assert subject is not None
        erasure = await privacy_erasure.erase_user(session, subject)
        await privacy_erasure.schedule_cleanup(
            session, erasure, other_tenant.org_id, max_attempts=3
        )
    # then this organization's ADMIN learns nothing of it
    body = await gql(
        client, STATUS, {"id": gid("User", victim.id)}, token=tenant.tokens[Role.ADMIN]
    )
    assert codes(body) == ["NOT_FOUND"]
    assert body["data"]["erasureStatus"] is None
