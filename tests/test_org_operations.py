"""An organization's own registered operations: its ADMIN registers, lists and retires them
over GraphQL; a BI token runs them by hash, or by their text as Grafana's Infinity and
similar tools send it (whitespace, commas and comments aside); other organizations cannot."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import sqlalchemy as sa

from prism.audit import OPERATOR
from prism.models.audit import AuditEvent
from prism.models.enums import Role
from prism.services import Services
from prism.tokens import api_tokens
from tests.factories import Tenant, codes, gql

DASHBOARD = """
# The dashboard's panels
query Titles($first: Int = 5) {
  documents(first: $first) { totalCount edges { node { filename } } }
}
query Scopes { viewer { scopes } }
"""
REGISTER = """mutation($document: String!) { registerOperations(document: $document) {
  id name sha256 global cost planned notPlannedReason retiredAt } }"""
LIST = """query($retired: Boolean!) { registeredOperations(includeRetired: $retired) {
  id name sha256 global retiredAt } }"""
RETIRE = "mutation($id: ID!) { retireOperation(id: $id) { id name retiredAt } }"
# What an Infinity panel sends: the text as typed, no operation name, no persisted hash.
TYPED = """query Titles($first: Int = 5) {
    documents(first: $first) {
        totalCount
        edges { node { filename } }   # one line per document
    }
}"""


async def _bi_token(services: Services, tenant: Tenant, *scopes: str) -> str:
    created = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="grafana",
        scopes=list(scopes or ("bi:read", "documents:read")),
        role=Role.AUDITOR,
    )
    return created.secret


async def _infinity(client: httpx.AsyncClient, token: str, text: str) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        json={"query": text, "variables": {}},
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "user-agent": "Grafana/11.3.0",
        },
    )
    body: dict[str, Any] = response.json()
    body["_status"] = response.status_code
    return body


async def _persisted(client: httpx.AsyncClient, token: str, digest: str) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        json={"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}},
        headers={"authorization": f"Bearer {token}"},
    )
    body: dict[str, Any] = response.json()
    return body


async def test_register_run_by_text_and_hash_then_retire(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    admin = tenant.tokens[Role.ADMIN]
    bi = await _bi_token(services, tenant)
    # Before registration, the typed text is refused for a BI token.
    assert codes(await _infinity(client, bi, TYPED)) == ["PERSISTED_QUERY_REQUIRED"]

    registered = await gql(client, REGISTER, {"document": DASHBOARD}, token=admin)
    assert registered.get("errors") is None, registered
    by_name = {op["name"]: op for op in registered["data"]["registerOperations"]}
    assert set(by_name) == {"Titles", "Scopes"}
    titles = by_name["Titles"]
    assert titles["global"] is False
    assert titles["retiredAt"] is None
    assert titles["cost"] >= 5  # a page of five documents and the connection
    assert titles["planned"] is True
    assert titles["notPlannedReason"] is None

    # Registering the same text again returns it, registers nothing new.
    again = await gql(client, REGISTER, {"document": DASHBOARD}, token=admin)
    assert {op["id"] for op in again["data"]["registerOperations"]} == {
        op["id"] for op in by_name.values()
    }

    typed = await _infinity(client, bi, TYPED)
    assert typed.get("errors") is None, typed
    assert typed["data"]["documents"]["totalCount"] >= 0
    hashed = await _persisted(client, bi, titles["sha256"])
    assert hashed.get("errors") is None
    assert hashed["data"] == typed["data"]
    # A text that differs in what it asks for is not that operation.
    changed = TYPED.replace("filename", "filename classification")
    assert codes(await _infinity(client, bi, changed)) == ["PERSISTED_QUERY_REQUIRED"]

    # Another organization's BI token runs none of it, by text or by hash.
    theirs = await _bi_token(services, other_tenant)
    assert codes(await _infinity(client, theirs, TYPED)) == ["PERSISTED_QUERY_REQUIRED"]
    assert codes(await _persisted(client, theirs, titles["sha256"])) == ["PERSISTED_QUERY_REQUIRED"]
    listed_there = await gql(client, LIST, {"retired": True}, token=other_tenant.tokens[Role.ADMIN])
    assert titles["sha256"] not in {
        op["sha256"] for op in listed_there["data"]["registeredOperations"]
    }

    # The BI token lists what it may run.
    listed = await gql(client, LIST, {"retired": False}, token=admin)
    assert {"Titles", "Scopes"} <= {op["name"] for op in listed["data"]["registeredOperations"]}

    retired = await gql(client, RETIRE, {"id": titles["id"]}, token=admin)
    assert retired["data"]["retireOperation"]["retiredAt"] is not None
    assert codes(await _infinity(client, bi, TYPED)) == ["PERSISTED_QUERY_REQUIRED"]
    assert codes(await _persisted(client, bi, titles["sha256"])) == ["PERSISTED_QUERY_REQUIRED"]
    live = await gql(client, LIST, {"retired": False}, token=admin)
    assert "Titles" not in {op["name"] for op in live["data"]["registeredOperations"]}
    everything = await gql(client, LIST, {"retired": True}, token=admin)
    assert "Titles" in {op["name"] for op in everything["data"]["registeredOperations"]}
    # Registered again, it runs again.
    await gql(client, REGISTER, {"document": DASHBOARD}, token=admin)
    assert (await _infinity(client, bi, TYPED)).get("errors") is None

    async with services.db.transaction(tenant.org_id) as session:
        events = list(
            await session.scalars(
                sa.select(AuditEvent.event_type).where(
                    AuditEvent.resource_type == "RegisteredOperation"
                )
            )
        )
    assert events.count("operation.retired") == 1
    assert events.count("operation.registered") == 3  # two, then Titles again


async def test_who_may_register_list_and_retire(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    document = f"query Mine{tenant.org_id.hex} {{ viewer {{ scopes }} }}"
    for role in (Role.REVIEWER, Role.APPROVER, Role.AUDITOR, Role.VIEWER):
        refused = await gql(client, REGISTER, {"document": document}, token=tenant.tokens[role])
        assert codes(refused) == ["FORBIDDEN"], (role, refused)
    assert codes(await gql(client, LIST, {"retired": False}, token=tenant.tokens[Role.VIEWER])) == [
        "FORBIDDEN"
    ]
    assert (await gql(client, LIST, {"retired": False}, token=tenant.tokens[Role.AUDITOR])).get(
        "errors"
    ) is None
    # A BI token may not register; a token with `operations:admin` may.
    bi = await _bi_token(services, tenant)
    assert codes(await _infinity(client, bi, REGISTER)) == ["PERSISTED_QUERY_REQUIRED"]
    manager = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="ops",
        scopes=["operations:admin", "documents:read"],
        role=Role.ADMIN,
    )
    made = await gql(client, REGISTER, {"document": document}, token=manager.secret)
    assert made.get("errors") is None, made
    writer = await api_tokens.create_token(
        services, OPERATOR, tenant.org_id, name="w", scopes=["documents:write"], role=Role.ADMIN
    )
    assert codes(await gql(client, REGISTER, {"document": document}, token=writer.secret)) == [
        "FORBIDDEN"
    ]


async def test_documents_that_are_not_operations_are_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    admin = tenant.tokens[Role.ADMIN]
    for document in (
        "query { viewer { scopes } }",  # no name
        "query Broken { viewer { ",  # does not parse
        "query Unknown { noSuchField }",  # does not validate
        "fragment F on Document { id }",  # no operation
        'mutation Out { logout(refreshToken: "x") }',  # not a query: a BI token runs reads
    ):
        refused = await gql(client, REGISTER, {"document": document}, token=admin)
        assert codes(refused) == ["BAD_USER_INPUT"], (document, refused)
    other = await gql(client, RETIRE, {"id": "UmVnaXN0ZXJlZE9wZXJhdGlvbjo" + "A" * 20}, token=admin)
    assert codes(other) in (["NOT_FOUND"], ["BAD_USER_INPUT"])


async def test_global_operations_are_listed_and_cannot_be_retired(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    from prism.models.registered_operations import register_operations
    from prism.operations.persisted import split_operations
    from prism.schema import build_schema

    text = f"query Shared{tenant.org_id.hex} {{ viewer {{ scopes }} }}"
    found = split_operations(text, build_schema()._schema)
    async with services.db.transaction(None) as session:
        await register_operations(session, found)
    listed = await gql(client, LIST, {"retired": False}, token=tenant.tokens[Role.ADMIN])
    shared = [op for op in listed["data"]["registeredOperations"] if op["name"] == found[0][0]]
    assert len(shared) == 1
    assert shared[0]["global"] is True
    assert shared[0]["sha256"] == hashlib.sha256(found[0][1].encode()).hexdigest()
    refused = await gql(client, RETIRE, {"id": shared[0]["id"]}, token=tenant.tokens[Role.ADMIN])
    assert codes(refused) == ["NOT_FOUND"]
    # Its text, sent by a BI token, runs as that operation.
    bi = await _bi_token(services, tenant)
    assert (await _infinity(client, bi, text + "\n# from a panel")).get("errors") is None
