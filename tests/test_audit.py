"""Every mutation is audited in its own transaction, with request context and a hash chain."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import httpx
import sqlalchemy as sa

from prism.db.engine import url_for_asyncpg
from prism.models.audit import AuditEvent, canonical_form
from prism.models.enums import Classification, Role
from prism.services import Services
from tests.factories import Tenant, add_document, codes, gid, gql

UPDATE = """mutation($id: ID!, $type: DocumentType) {
  updateDocument(input: {id: $id, documentType: $type}) { documentType } }"""
LOG = """query($id: ID) { auditLog(first: 100, filter: {resourceId: $id}) { edges { node {
  eventType category before after ipAddress userAgent requestId hash prevHash
  actor { email } apiToken { name } } } } }"""


async def test_mutation_writes_one_event_with_request_context(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    doc_id = gid("Document", doc.id)
    body = await gql(
        client,
        UPDATE,
        {"id": doc_id, "type": "POLICY"},
        token=tenant.tokens[Role.REVIEWER],
        headers={"user-agent": "audit-test/1.0", "x-request-id": "req-audit-1"},
    )
    assert body.get("errors") is None, body
    log = await gql(client, LOG, {"id": doc_id}, token=tenant.tokens[Role.AUDITOR])
    events = [e["node"] for e in log["data"]["auditLog"]["edges"]]
    assert len(events) == 1
    event = events[0]
    assert event["eventType"] == "document.update"
    assert event["before"]["documentType"] == "CONTRACT"
    assert event["after"]["documentType"] == "POLICY"
    assert event["ipAddress"] == "203.0.113.7"
    assert event["userAgent"] == "audit-test/1.0"
    assert event["requestId"] == "req-audit-1"
    assert event["actor"] == {"email": tenant.email(Role.REVIEWER)}
    assert event["apiToken"] == {"name": "reviewer token"}


async def test_failed_mutation_leaves_no_change_and_no_event(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    doc_id = gid("Document", doc.id)
    # the second mutation fails: the request is all or nothing, like the data: null it gets
    both = """mutation($id: ID!) {
      ok: updateDocument(input: {id: $id, documentType: REPORT}) { documentType }
      bad: updateDocument(input: {id: $id, classification: RESTRICTED}) { classification }
    }"""
    body = await gql(client, both, {"id": doc_id}, token=tenant.tokens[Role.APPROVER])
    assert body["data"] is None
    assert codes(body) == ["BAD_USER_INPUT"]
    log = await gql(client, LOG, {"id": doc_id}, token=tenant.tokens[Role.ADMIN])
    assert log["data"]["auditLog"]["edges"] == []
    current = await gql(
        client,
        "query($id: ID!) { document(id: $id) { classification documentType } }",
        {"id": doc_id},
        token=tenant.tokens[Role.ADMIN],
    )
    assert current["data"]["document"] == {"classification": "INTERNAL", "documentType": "CONTRACT"}


async def test_events_form_a_hash_chain(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    for kind in ("POLICY", "REPORT", "OTHER"):
        await gql(
            client,
            UPDATE,
            {"id": gid("Document", doc.id), "type": kind},
            token=tenant.tokens[Role.ADMIN],
        )
    async with services.db.transaction(tenant.org_id) as session:
        events = list(
            await session.scalars(
                sa.select(AuditEvent).order_by(AuditEvent.created_at, AuditEvent.id)
            )
        )
    assert len(events) >= 8  # organization, users, tokens, updates
    previous = None
    for event in events:
        assert event.prev_hash == previous
        assert event.hash == hashlib.sha256(canonical_form(event)).hexdigest()
        previous = event.hash


VERIFY = """query($after: DateTime) {
  verifyAuditChain(after: $after) { checked valid firstBrokenId } }"""


async def test_concurrent_mutations_of_one_organization_all_land_on_the_chain(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    # Every event of an organization locks its chain head: writers queue there and none
    # fails (under a snapshot older than the head's last update, one would).
    docs = [await add_document(services, tenant) for _ in range(24)]
    bodies = await asyncio.gather(
        *(
            gql(
                client,
                UPDATE,
                {"id": gid("Document", doc.id), "type": "POLICY"},
                token=tenant.tokens[Role.REVIEWER],
            )
            for doc in docs
        )
    )
    assert [codes(body) for body in bodies] == [[]] * len(docs)
    report = await gql(client, VERIFY, token=tenant.tokens[Role.AUDITOR])
    assert report["data"]["verifyAuditChain"]["valid"] is True
    assert report["data"]["verifyAuditChain"]["checked"] >= len(docs)


async def _as_owner(database_url: str, statement: str, *args: object) -> None:
    """A direct edit by the database owner (a superuser here), behind Prism's back."""
    conn = await asyncpg.connect(url_for_asyncpg(database_url))
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def test_verify_chain_finds_edited_and_deleted_events(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, database_url: str
) -> None:
    doc = await add_document(services, tenant)
    for kind in ("POLICY", "REPORT", "OTHER", "GENERAL"):
        await gql(
            client,
            UPDATE,
            {"id": gid("Document", doc.id), "type": kind},
            token=tenant.tokens[Role.ADMIN],
        )
    token = tenant.tokens[Role.AUDITOR]
    intact = (await gql(client, VERIFY, token=token))["data"]["verifyAuditChain"]
    assert intact["valid"] is True
    assert intact["checked"] >= 14
    async with services.db.transaction(tenant.org_id) as session:
        events = list(
            await session.scalars(
                sa.select(AuditEvent).order_by(AuditEvent.created_at, AuditEvent.id)
            )
        )
    # an edited row is caught at that row
    await _as_owner(
        database_url,
        "UPDATE audit_logs SET description = 'nothing happened' WHERE id = $1",
        events[-3].id,
    )
    edited = (await gql(client, VERIFY, token=token))["data"]["verifyAuditChain"]
    assert edited["valid"] is False
    assert edited["firstBrokenId"] == gid("AuditEvent", events[-3].id)
    # a deleted row is caught at the row after it
    await _as_owner(database_url, "DELETE FROM audit_logs WHERE id = $1", events[-3].id)
    deleted = (await gql(client, VERIFY, token=token))["data"]["verifyAuditChain"]
    assert deleted["firstBrokenId"] == gid("AuditEvent", events[-2].id)
    # a deleted tail is caught against the chain head
    await _as_owner(database_url, "DELETE FROM audit_logs WHERE id = $1", events[-1].id)
    window = await gql(client, VERIFY, {"after": events[-2].created_at.isoformat()}, token=token)
    assert window["data"]["verifyAuditChain"]["valid"] is False
    # readers without AUDIT_READ may not ask
    assert codes(await gql(client, VERIFY, token=tenant.tokens[Role.REVIEWER])) == ["FORBIDDEN"]


READ = """query($id: ID!) { document(id: $id) { filename sections(first: 10) { edges { node {
  name content analyses { feedbackItems { description } } } } } } }"""
READ_EVENTS = """query($id: ID) { auditLog(first: 50, filter: {resourceId: $id,
  eventType: ["document.read_restricted"]}) { edges { node { eventType actor { email } } } } }"""


async def test_reads_of_restricted_content_are_audited_once_per_request(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    restricted = await add_document(services, tenant, classification=Classification.RESTRICTED)
    confidential = await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    admin = tenant.tokens[Role.ADMIN]
    for doc in (restricted, confidential):
        body = await gql(client, READ, {"id": gid("Document", doc.id)}, token=admin)
        assert body.get("errors") is None, body
        assert len(body["data"]["document"]["sections"]["edges"]) > 1
    # metadata alone (no text) is not a read of the content
    meta = "query($id: ID!) { document(id: $id) { filename pageCount } }"
    assert codes(await gql(client, meta, {"id": gid("Document", restricted.id)}, token=admin)) == []

    async def reads_of(doc_id: uuid.UUID) -> list[dict[str, object]]:
        log = await gql(client, READ_EVENTS, {"id": gid("Document", doc_id)}, token=admin)
        return [e["node"] for e in log["data"]["auditLog"]["edges"]]

    assert await reads_of(restricted.id) == [
        {"eventType": "document.read_restricted", "actor": {"email": tenant.email(Role.ADMIN)}}
    ]
    assert await reads_of(confidential.id) == []
