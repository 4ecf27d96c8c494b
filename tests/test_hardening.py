"""Regression tests for ways around the access rules found in review."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from prism import audit
from prism.audit import OPERATOR
from prism.authz.principal import SCOPES
from prism.models.audit import (
    AuditEvent,
    RequestMeta,
    canonical_form,
    event_hash,
    normalize_ip,
)
from prism.models.enums import Classification, Role
from prism.services import Services
from prism.tokens import api_tokens
from tests.factories import Tenant, add_document, codes, gid, gql
from tests.test_statement_count import count_statements

CREATE_USER = """mutation($input: CreateUserInput!) { createUser(input: $input) { clearance } }"""
UPDATE_USER = """mutation($input: UpdateUserInput!) { updateUser(input: $input) { clearance } }"""


async def test_nobody_grants_more_clearance_than_they_hold(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    from tests.factories import add_user

    _, low_admin = await add_user(
        services, tenant, role=Role.ADMIN, clearance=Classification.INTERNAL
    )
    new = {
        "email": f"x-{uuid.uuid4().hex[:6]}@{tenant.domain}",
        "password": "a long password!",
        "role": "VIEWER",
        "clearance": "RESTRICTED",
    }
    assert codes(await gql(client, CREATE_USER, {"input": new}, token=low_admin)) == ["FORBIDDEN"]
    me = await gql(client, "{ viewer { user { id } } }", token=low_admin)
    raise_self = {"id": me["data"]["viewer"]["user"]["id"], "clearance": "RESTRICTED"}
    assert codes(await gql(client, UPDATE_USER, {"input": raise_self}, token=low_admin)) == [
        "FORBIDDEN"
    ]


async def test_pii_is_masked_in_headings_and_feedback_items(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    text = (
        "1. Contact jane.doe@example.com\n"
        "Reach SSN 123-45-6789, who will use reasonable efforts to respond.\n"
    )
    doc = await add_document(services, tenant, text=text, classification=Classification.INTERNAL)
    query = """query($id: ID!) { document(id: $id) { sections { edges { node { name
      analyses { feedbackItems { quote description } } } } } } }"""
    body = await gql(
        client, query, {"id": gid("Document", doc.id)}, token=tenant.tokens[Role.VIEWER]
    )
    shown = orjson.dumps(body["data"]).decode()
    assert "jane.doe@example.com" not in shown
    assert "123-45-6789" not in shown
    assert "[EMAIL]" in shown
    full = await gql(
        client, query, {"id": gid("Document", doc.id)}, token=tenant.tokens[Role.REVIEWER]
    )
    assert "jane.doe@example.com" in orjson.dumps(full["data"]).decode()


async def test_audit_events_about_restricted_documents_stay_restricted(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(
        services,
        tenant,
        classification=Classification.RESTRICTED,
        filename="secret-hr-file.txt",
        department="hr",
    )
    update = (
        """mutation($id: ID!) { updateDocument(input: {id: $id, documentType: REPORT}) { id } }"""
    )
    assert (
        codes(
            await gql(
                client, update, {"id": gid("Document", doc.id)}, token=tenant.tokens[Role.ADMIN]
            )
        )
        == []
    )
    log = "{ auditLog(first: 100) { edges { node { description resourceId } } } }"
    auditor = await gql(client, log, token=tenant.tokens[Role.AUDITOR])
    assert "secret-hr-file" not in orjson.dumps(auditor["data"]).decode()
    admin = await gql(client, log, token=tenant.tokens[Role.ADMIN])
    assert "secret-hr-file" in orjson.dumps(admin["data"]).decode()


async def test_service_tokens_are_nobody_in_particular(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    one = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="svc-a",
        scopes=sorted(SCOPES),
        role=Role.APPROVER,
        clearance=Classification.INTERNAL,
    )
    other = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="svc-b",
        scopes=sorted(SCOPES),
        role=Role.APPROVER,
        clearance=Classification.INTERNAL,
    )
    revoke = "mutation($id: ID!) { revokeApiToken(id: $id) { id } }"
    body = await gql(client, revoke, {"id": gid("ApiToken", other.token.id)}, token=one.secret)
    assert codes(body) == ["NOT_FOUND"]
    doc = await add_document(services, tenant)
    analyses = await gql(
        client,
        "query($id: ID!) { document(id: $id) { analyses { edges { node { id } } } } }",
        {"id": gid("Document", doc.id)},
        token=one.secret,
    )
    analysis_id = analyses["data"]["document"]["analyses"]["edges"][0]["node"]["id"]
    submitted = await gql(
        client,
        "mutation($a: ID!) { submitFeedback(input: {analysisId: $a, action: ACCEPTED}) { id } }",
        {"a": analysis_id},
        token=one.secret,
    )
    review = "mutation($id: ID!) { reviewFeedback(input: {id: $id, approve: true}) { id } }"
    body = await gql(
        client, review, {"id": submitted["data"]["submitFeedback"]["id"]}, token=one.secret
    )
    assert codes(body) == ["FORBIDDEN"]


async def test_revoking_someone_elses_token_is_not_found(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    tokens = await gql(client, "{ apiTokens { id name } }", token=tenant.tokens[Role.ADMIN])
    approver_token = next(
        t["id"] for t in tokens["data"]["apiTokens"] if t["name"] == "approver token"
    )
    body = await gql(
        client,
        "mutation($id: ID!) { revokeApiToken(id: $id) { id } }",
        {"id": approver_token},
        token=tenant.tokens[Role.REVIEWER],
    )
    assert codes(body) == ["NOT_FOUND"]


async def test_a_mutation_answered_with_null_changed_nothing(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    doc_id = gid("Document", doc.id)
    # the nested error propagates up to the non-null payload: the client sees data null
    body = await gql(
        client,
        """mutation($id: ID!) { updateDocument(input: {id: $id, documentType: REPORT}) {
             documentType sections(first: -1) { edges { cursor } } } }""",
        {"id": doc_id},
        token=tenant.tokens[Role.ADMIN],
    )
    assert codes(body) == ["BAD_USER_INPUT"]
    assert body["data"] is None
    now = await gql(
        client,
        "query($id: ID!) { document(id: $id) { documentType } }",
        {"id": doc_id},
        token=tenant.tokens[Role.ADMIN],
    )
    assert now["data"]["document"]["documentType"] == "CONTRACT"


def _cursor(ordering: str, key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ordering, key])).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (
            """mutation { createApiToken(input: {name: "n", scopes: ["documents:read"],
            expiresAt: "2030-01-01T00:00:00"}) { token } }""",
            None,
        ),
        (
            "query($a: String) { users(after: $a) { edges { cursor } } }",
            {"a": _cursor("users", [{"d": "abc"}, {"u": "zz"}])},
        ),
        (
            "query($a: String) { users(after: $a) { edges { cursor } } }",
            {"a": _cursor("users", [1, 2])},
        ),
        (
            "query($a: String) { documents(after: $a, orderBy: {field: FILENAME, direction: ASC})"
            " { totalCount } }",
            {"a": _cursor("documents:FILENAME:asc", ["a\x00b", {"u": str(uuid.uuid4())}])},
        ),
        (
            """mutation($id: ID!) { updateUser(input: {id: $id, department: "%s"}) { id } }"""
            % ("x" * 101),
            "viewer-id",
        ),
    ],
)
async def test_bad_input_is_bad_user_input_not_internal(
    client: httpx.AsyncClient, tenant: Tenant, query: str, variables: Any
) -> None:
    if variables == "viewer-id":
        variables = {"id": tenant.user_gid(Role.VIEWER)}
    body = await gql(client, query, variables, token=tenant.tokens[Role.ADMIN])
    assert codes(body) == ["BAD_USER_INPUT"], body


async def test_text_the_database_refuses_is_bad_user_input(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    analyses = await gql(
        client,
        "query($id: ID!) { document(id: $id) { analyses { edges { node { id } } } } }",
        {"id": gid("Document", doc.id)},
        token=tenant.tokens[Role.ADMIN],
    )
    analysis_id = analyses["data"]["document"]["analyses"]["edges"][0]["node"]["id"]
    body = await gql(
        client,
        """mutation($a: ID!, $t: String) {
        submitFeedback(input: {analysisId: $a, action: CUSTOM, customText: $t}) { id } }""",
        {"a": analysis_id, "t": "nul \x00 byte"},
        token=tenant.tokens[Role.REVIEWER],
    )
    assert codes(body) == ["BAD_USER_INPUT"], body


async def test_undecodable_body_is_a_typed_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b'{"query": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("not-an-ip", None),
        (" 10.0.0.1 ", "10.0.0.1"),
        (None, None),
    ],
)
def test_ip_addresses_are_normalized(raw: str | None, stored: str | None) -> None:
    assert normalize_ip(raw) == stored


async def test_hash_verifies_after_a_round_trip(services: Services, tenant: Tenant) -> None:
    async with services.db.transaction(tenant.org_id) as session:
        event = await audit.record(
            session,
            None,
            RequestMeta(ip_address="2001:DB8::1", user_agent="ua"),
            organization_id=tenant.org_id,
            event_type="t",
            category="c",
            description="d",
            after={"x": 1.5, "when": "now"},
        )
    async with services.db.transaction(tenant.org_id) as session:
        stored = await session.scalar(sa.select(AuditEvent).where(AuditEvent.id == event.id))
    assert stored is not None
    assert event_hash(stored) == stored.hash
    assert canonical_form(stored) == canonical_form(event)


async def test_nodes_are_loaded_in_batches(
    app: Any, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    ids = [gid("Document", (await add_document(services, tenant)).id) for _ in range(6)]
    query = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    # the token is verified (and remembered) by a first request, counted by neither
    await gql(client, query, {"ids": ids[:1]}, token=tenant.tokens[Role.ADMIN])
    counts = []
    for some in (ids[:1], ids):
        with count_statements(app) as statements:
            body = await gql(client, query, {"ids": some}, token=tenant.tokens[Role.ADMIN])
        assert codes(body) == []
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
