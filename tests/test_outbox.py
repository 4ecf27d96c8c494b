"""The outbox: every audited change writes its CloudEvent in the change's own transaction,
numbered per organization without gaps, and no event carries text or personal data."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from prism import audit
from prism.audit import OPERATOR
from prism.events import catalog
from prism.events.kafka import KafkaPublisher
from prism.events.relay import Relay
from prism.models import outbox
from prism.models.audit import AuditEvent
from prism.models.enums import Role
from prism.services import Services
from tests.factories import CONTRACT, PASSWORD, Tenant, codes, gql, make_tenant
from tests.pipeline_helpers import DOCUMENT, upload

PII = "jane.doe@example.com"


async def events_of(services: Services, organization_id: uuid.UUID) -> list[outbox.Stored]:
    async with services.db.transaction(organization_id) as session:
        return await outbox.read_after(session, organization_id, 0, 100_000)


def parsed(stored: outbox.Stored) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(stored.event)
    return event


async def test_each_audited_change_writes_one_event_numbered_without_gaps(
    services: Services, tenant: Tenant
) -> None:
    stored = await events_of(services, tenant.org_id)
    async with services.db.transaction(tenant.org_id) as session:
        audited = set(
            await session.scalars(
                sa.select(AuditEvent.id).where(AuditEvent.organization_id == tenant.org_id)
            )
        )
    # organization, users, tokens: each change its event, with the audit event's id
    assert {e.id for e in stored} == audited
    assert [e.sequence for e in stored] == list(range(1, len(stored) + 1))
    first = parsed(stored[0])
    assert first["type"] == "prism.organization.created"
    assert first["sequence"] == "1"
    assert first["organizationid"] == str(tenant.org_id)


async def test_a_rolled_back_change_leaves_no_event_and_no_gap(
    services: Services, tenant: Tenant
) -> None:
    before = await events_of(services, tenant.org_id)
    with pytest.raises(RuntimeError, match="the change fails"):
        async with services.db.transaction(tenant.org_id) as session:
            await audit.record(
                session,
                None,
                OPERATOR,
                organization_id=tenant.org_id,
                event_type="organization.domain",
                category="administration",
                description="changed",
            )
            assert len(await outbox.read_after(session, tenant.org_id, 0, 1000)) == len(before) + 1
            raise RuntimeError("the change fails")
    assert await events_of(services, tenant.org_id) == before
    async with services.db.transaction(tenant.org_id) as session:
        await audit.record(
            session,
            None,
            OPERATOR,
            organization_id=tenant.org_id,
            event_type="organization.domain",
            category="administration",
            description="changed",
        )
    after = await events_of(services, tenant.org_id)
    assert after[-1].sequence == before[-1].sequence + 1


async def test_concurrent_changes_are_numbered_in_commit_order_without_gaps(
    services: Services,
) -> None:
    tenant = await make_tenant(services)
    start = len(await events_of(services, tenant.org_id))

    async def change(i: int) -> None:
        async with services.db.transaction(tenant.org_id) as session:
            await audit.record(
                session,
                None,
                OPERATOR,
                organization_id=tenant.org_id,
                event_type="job.retry",
                category="administration",
                description=f"change {i}",
            )
            await asyncio.sleep(0.001 * (i % 3))

    await asyncio.gather(*(change(i) for i in range(20)))
    stored = await events_of(services, tenant.org_id)
    assert [e.sequence for e in stored] == list(range(1, start + 21))
    # numbered in commit order: the times of the events never go backwards
    times = [parsed(e)["time"] for e in stored[start:]]
    assert len({e.id for e in stored}) == len(stored)
    assert times == sorted(times)


# --- no text, no personal data ------------------------------------------------------------------

# What each kind of value an audit event holds might be: personal data, text of a document,
# names people gave things. None of it may leave in an event.
TEXTS = [
    PII,
    "415-555-0100",
    "Jane Doe",
    "The supplier accepts unlimited liability.",
    "jane-doe-salary.pdf",
    "Processing failed: cannot parse page 3 of Jane's contract",
]


def _hostile(keys: set[str]) -> dict[str, Any]:
    """Every key an event might copy, each holding text; plus keys no event copies."""
    value: dict[str, Any] = {k: TEXTS[i % len(TEXTS)] for i, k in enumerate(sorted(keys))}
    value.update(
        email=PII,
        filename="jane-doe-salary.pdf",
        name="Jane Doe",
        content=TEXTS[3],
        processingError=TEXTS[5],
        customText=TEXTS[3],
        highlightedText=TEXTS[3],
        nested={"email": PII, "list": [PII, "Jane Doe"]},
    )
    return value


def _assert_clean(event: dict[str, Any]) -> None:
    text = orjson.dumps(event).decode()
    for t in [*TEXTS, "jane", "Jane", "liability"]:
        assert t not in text, (t, event)


def _assert_cloudevent(event: dict[str, Any], stored_type: str) -> None:
    assert event["specversion"] == "1.0"
    assert uuid.UUID(event["id"])
    assert event["source"].startswith("/prism/organizations/")
    assert re.fullmatch(r"prism(\.[a-z_]+){2}", event["type"])
    assert event["type"] == stored_type
    assert datetime.fromisoformat(event["time"].replace("Z", "+00:00")).tzinfo is not None
    assert event["datacontenttype"] == "application/json"
    assert isinstance(event["data"], dict)


@pytest.mark.parametrize("event_type", sorted(catalog.KINDS))
def test_no_event_type_carries_text_or_personal_data(event_type: str) -> None:
    kind = catalog.KINDS[event_type]
    keys = set(kind.figures) | set(kind.previous)
    for after in (_hostile(keys), {"workflowStatus": "APPROVED"}, None):
        draft = catalog.from_audit(
            event_id=uuid.uuid4(),
            organization_id=uuid.uuid4(),
            time=datetime.now(UTC),
            event_type=event_type,
            actor_user_id=uuid.uuid4(),
            actor_api_token_id=None,
            resource_type="Document",
            resource_id=uuid.uuid4(),
            classification="CONFIDENTIAL",
            department="legal",
            before=_hostile(keys),
            after=after,
        )
        _assert_cloudevent(draft.event, draft.type)
        _assert_clean(draft.event)
        assert draft.topic in catalog.TOPICS
        assert draft.event["classification"] == "CONFIDENTIAL" == draft.classification
        assert draft.event["subject"].startswith("Document/")


def test_an_audit_event_type_without_an_entry_makes_an_event_of_ids_only() -> None:
    draft = catalog.from_audit(
        event_id=uuid.uuid4(),
        organization_id=uuid.uuid4(),
        time=datetime.now(UTC),
        event_type="Reports.Exported-Monthly",
        actor_user_id=None,
        actor_api_token_id=None,
        resource_type=None,
        resource_id=None,
        classification=None,
        department=None,
        before=_hostile(set()),
        after=_hostile({"email"}),
    )
    _assert_cloudevent(draft.event, draft.type)
    _assert_clean(draft.event)
    assert draft.type == "prism.reports.exported_monthly"
    assert set(draft.event["data"]) == {"organizationId"}


def test_figures_of_the_allowed_shapes_pass() -> None:
    draft = catalog.from_audit(
        event_id=uuid.uuid4(),
        organization_id=uuid.uuid4(),
        time=datetime.now(UTC),
        event_type="document.analyzed",
        actor_user_id=None,
        actor_api_token_id=None,
        resource_type="Document",
        resource_id=uuid.uuid4(),
        classification="INTERNAL",
        department=None,
        before=None,
        after={
            "riskLevel": "HIGH",
            "feedbackItems": 3,
            "costUsd": 0.0125,
            "jobId": str(uuid.uuid4()),
        },
    )
    data = draft.event["data"]
    assert (data["riskLevel"], data["feedbackItems"], data["costUsd"]) == ("HIGH", 3, 0.0125)
    assert draft.type == "prism.document.processed"
    assert draft.topic == catalog.DOCUMENT_EVENTS


def test_every_audit_event_type_in_the_code_has_an_event(repo_root: Path) -> None:
    """A new audited change without an entry would fail at run time: caught here."""
    found: set[str] = set()
    pattern = re.compile(
        r"\"((?:document|user|auth|token|organization|feedback|retention|lifecycle|job|operation)"
        r"\.[a-z_]+)\""
    )
    for path in (repo_root / "prism").rglob("*.py"):
        text = path.read_text()
        if "audit.record" not in text and "_auth_event" not in text and "_audit(" not in text:
            continue
        found.update(pattern.findall(text))
    assert found, "no audit event types found"
    from prism.jobs.worker import HANDLERS  # job kinds are named alike

    assert found - set(catalog.KINDS) - set(HANDLERS) == set()


REVIEW = """mutation($input: ReviewFeedbackInput!) { reviewFeedback(input: $input) { id } }"""
SUBMIT = """mutation($input: SubmitFeedbackInput!) { submitFeedback(input: $input) { id } }"""
UPDATE = """mutation($input: UpdateDocumentInput!) { updateDocument(input: $input) { id } }"""
DELETE = """mutation($id: ID!) { deleteDocument(id: $id) { deletedId } }"""
ANALYSES = """query($id: ID!) { document(id: $id) {
  sections(first: 10) { edges { node { analyses { id } } } } } }"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) { accessToken } }"""


async def test_the_events_of_a_document_s_life_carry_no_text_or_personal_data(
    client: httpx.AsyncClient, services: Services
) -> None:
    from tests.pipeline_helpers import run_jobs

    tenant = await make_tenant(services)
    reviewer, approver, admin = (
        tenant.tokens[r] for r in (Role.REVIEWER, Role.APPROVER, Role.ADMIN)
    )
    sent = await upload(
        client,
        reviewer,
        "jane-doe-salary.txt",
        f"{CONTRACT}\nJane Doe, 415-555-0100\n{uuid.uuid4()}".encode(),
        content_type="text/plain",
        classification="CONFIDENTIAL",
    )
    document_id = sent.json()["data"]["uploadDocument"]["document"]["id"]
    await run_jobs(services)
    body = await gql(client, DOCUMENT, {"id": document_id}, token=reviewer)
    assert body["data"]["document"]["processingStatus"] == "COMPLETED", body
    analyses = await gql(client, ANALYSES, {"id": document_id}, token=reviewer)
    analysis_id = analyses["data"]["document"]["sections"]["edges"][0]["node"]["analyses"][0]["id"]
    feedback = await gql(
        client,
        SUBMIT,
        {
            "input": {
                "analysisId": analysis_id,
                "action": "CUSTOM",
                "customText": "Jane Doe accepts unlimited liability.",
                "highlightedText": "The supplier accepts unlimited liability.",
                "rating": 2,
            }
        },
        token=reviewer,
    )
    assert codes(feedback) == [], feedback
    review = {"id": feedback["data"]["submitFeedback"]["id"], "approve": True}
    assert codes(await gql(client, REVIEW, {"input": review}, token=approver)) == []
    change = {"id": document_id, "classification": "RESTRICTED"}
    assert codes(await gql(client, UPDATE, {"input": change}, token=admin)) == []
    assert codes(await gql(client, DELETE, {"id": document_id}, token=admin)) == []
    login = {"email": tenant.email(Role.VIEWER), "password": PASSWORD}
    assert codes(await gql(client, LOGIN, {"input": login})) == []
    # the relay's metrics snapshot of the organization (its analyses' cost and durations)
    # (forced: no consumer is registered here, so nothing holds pruning back in other tests)
    relay = Relay(services.db, services.settings, KafkaPublisher(services.settings))
    assert await relay.snapshot(force=True) >= 1

    stored = await events_of(services, tenant.org_id)
    events = [parsed(e) for e in stored]
    types = {e["type"] for e in events}
    assert {
        "prism.organization.created",
        "prism.user.created",
        "prism.token.created",
        "prism.document.uploaded",
        "prism.document.processed",
        "prism.feedback.submitted",
        "prism.feedback.approved",
        "prism.document.reclassified",
        "prism.document.deleted",
        "prism.auth.signed_in",
        catalog.METRICS_SNAPSHOT,
    } <= types
    personal = [tenant.email(r) for r in Role] + [u.first_name or "" for u in tenant.users.values()]
    for event, row in zip(events, stored, strict=True):
        _assert_cloudevent(event, row.type)
        _assert_clean(event)
        text = orjson.dumps(event).decode()
        for value in [*personal, "Tester", tenant.domain, "salary"]:
            assert value not in text, (value, event)
    processed = next(e for e in events if e["type"] == "prism.document.processed")
    assert processed["classification"] == "CONFIDENTIAL"
    assert processed["data"]["sections"] >= 1
    reclassified = next(e for e in events if e["type"] == "prism.document.reclassified")
    assert reclassified["data"]["classification"] == "RESTRICTED"
    assert reclassified["data"]["previous"]["classification"] == "CONFIDENTIAL"
    snapshot = next(e for e in events if e["type"] == catalog.METRICS_SNAPSHOT)
    assert snapshot["data"]["analyses"] >= 1
    assert "classification" not in snapshot


async def test_published_events_are_pruned_after_the_window_and_unpublished_ones_kept(
    services: Services,
) -> None:
    tenant = await make_tenant(services)
    consumer = f"prune-{uuid.uuid4().hex[:8]}"
    stored = await events_of(services, tenant.org_id)
    async with services.db.transaction(None) as session:
        await outbox.register_consumer(session, consumer)
    # the consumer passed the first three
    async with services.db.transaction(tenant.org_id) as session:
        assert await outbox.claim_stream(session, consumer, tenant.org_id) == 0
        await outbox.advance_cursor(session, consumer, tenant.org_id, 3)
    future = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
    async with services.db.transaction(None) as session:
        # other tests' consumers hold their organizations' events; ours are what we count
        await outbox.prune(session, future, 100_000)
    left = await events_of(services, tenant.org_id)
    assert [e.sequence for e in left] == [e.sequence for e in stored[3:]]
    async with services.db.transaction(None) as session:
        assert await outbox.unregister_consumer(session, consumer)
    async with services.db.transaction(None) as session:
        lag = await outbox.lag(session, consumer)
    assert lag.events >= len(stored) - 3


async def test_the_outbox_lag_is_on_metrics(client: httpx.AsyncClient, tenant: Tenant) -> None:
    # no relay runs in these tests: the tenant's events are pending
    body = (await client.get("/metrics")).text
    lag = next(line for line in body.splitlines() if line.startswith("prism_outbox_lag_events "))
    assert float(lag.split()[1]) > 0
    assert "prism_outbox_lag_seconds " in body
