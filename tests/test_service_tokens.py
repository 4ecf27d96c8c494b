"""Service tokens over the API: an ADMIN, signed in, issues a token that belongs to the
organization with its own role, clearance and scopes (never above the ADMIN's); it keeps
working when the ADMIN who made it is erased, and it can be revoked like any token."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from prism.audit import OPERATOR
from prism.models.audit import AuditEvent
from prism.models.enums import Classification, Role
from prism.services import Services
from prism.tokens import api_tokens
from tests.factories import PASSWORD, Tenant, add_document, add_user, codes, gid, gql

CREATE = """mutation($input: CreateServiceTokenInput!) { createServiceToken(input: $input) {
  token apiToken { id name prefix scopes revokedAt } } }"""
DOCUMENTS = "{ documents(first: 50) { edges { node { id classification } } } }"
ERASE = "mutation($id: ID!) { eraseUser(userId: $id) { erasedAt } }"


def _input(**overrides: Any) -> dict[str, Any]:
    return {
        "input": {
            "name": "partner-sync",
            "role": "REVIEWER",
            "clearance": "INTERNAL",
            "scopes": ["documents:read"],
            **overrides,
        }
    }


async def test_an_admin_issues_a_service_token_that_outlives_them(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    # A second ADMIN makes the token, then is erased by the first.
    second, _ = await add_user(
        services, tenant, role=Role.ADMIN, clearance=Classification.CONFIDENTIAL
    )
    session_token = await _sign_in(client, second.email)
    created = await gql(client, CREATE, _input(), token=session_token)
    assert created.get("errors") is None, created
    secret = created["data"]["createServiceToken"]["token"]
    assert secret.startswith("prism_pat_")
    token_id = created["data"]["createServiceToken"]["apiToken"]["id"]

    public = await add_document(services, tenant, classification=Classification.INTERNAL)
    secret_doc = await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    seen = await gql(client, DOCUMENTS, token=secret)
    ids = {edge["node"]["id"] for edge in seen["data"]["documents"]["edges"]}
    assert gid("Document", public.id) in ids
    assert gid("Document", secret_doc.id) not in ids  # its own clearance, not the maker's
    # Its role and scopes: a REVIEWER reading only.
    upload_like = await gql(
        client,
        "mutation($id: ID!) { deleteDocument(id: $id) { deletedId } }",
        {"id": gid("Document", public.id)},
        token=secret,
    )
    assert codes(upload_like) == ["FORBIDDEN"]

    first_admin = await _sign_in(client, tenant.email(Role.ADMIN))
    erased = await gql(client, ERASE, {"id": gid("User", second.id)}, token=first_admin)
    assert erased.get("errors") is None, erased
    still = await gql(client, DOCUMENTS, token=secret)
    assert still.get("errors") is None, still

    async with services.db.transaction(tenant.org_id) as session:
        after = await session.scalar(
            sa.select(AuditEvent.after).where(
                AuditEvent.event_type == "token.create",
                AuditEvent.resource_id == sa.func.cast(_uuid_of(token_id), sa.Uuid),
            )
        )
    assert after["service"] is True
    assert after["role"] == "REVIEWER"
    assert secret not in str(after)

    revoked = await gql(
        client,
        "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }",
        {"id": token_id},
        token=tenant.tokens[Role.ADMIN],
    )
    assert revoked["data"]["revokeApiToken"]["revokedAt"] is not None
    assert codes(await gql(client, DOCUMENTS, token=secret)) == ["UNAUTHENTICATED"]


async def _sign_in(client: httpx.AsyncClient, email: str) -> str:
    """A signed-in session (service tokens are issued from one, not with an API token)."""
    body = await gql(
        client,
        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) "
        "{ accessToken } }",
        {"e": email, "p": PASSWORD},
    )
    token: str = body["data"]["login"]["accessToken"]
    return token


def _uuid_of(global_id: str) -> str:
    from prism.execution.ids import from_global_id

    return str(from_global_id(global_id)[1])


async def test_who_may_issue_and_within_what(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    for role in (Role.VIEWER, Role.REVIEWER, Role.APPROVER, Role.AUDITOR):
        signed_in = await _sign_in(client, tenant.email(role))
        refused = await gql(client, CREATE, _input(), token=signed_in)
        assert codes(refused) == ["FORBIDDEN"], role
    # Not with an API token, even an ADMIN's with every scope.
    admin_token = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="auto",
        scopes=["tokens:admin", "documents:read"],
        role=Role.ADMIN,
        clearance=Classification.RESTRICTED,
    )
    assert codes(await gql(client, CREATE, _input(), token=admin_token.secret)) == ["FORBIDDEN"]
    admin = await _sign_in(client, tenant.email(Role.ADMIN))
    admin_clearance = tenant.users[Role.ADMIN].clearance
    above = [c for c in Classification if c.rank > admin_clearance.rank]
    if above:
        too_high = await gql(client, CREATE, _input(clearance=above[0].value), token=admin)
        assert codes(too_high) == ["FORBIDDEN"]
    for bad in (
        _input(scopes=["everything"]),
        _input(scopes=[]),
        _input(name=" "),
        _input(department="x" * 101),
    ):
        assert codes(await gql(client, CREATE, bad, token=admin)) == ["BAD_USER_INPUT"], bad
    ok = await gql(client, CREATE, _input(department="legal", role="VIEWER"), token=admin)
    assert ok.get("errors") is None, ok


async def test_a_service_token_cannot_issue_tokens(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """A copy would outlive the service token's revocation, and carry no expiry of its own."""
    admin = await _sign_in(client, tenant.email(Role.ADMIN))
    made = await gql(
        client,
        CREATE,
        _input(role="ADMIN", scopes=["tokens:admin", "documents:read"]),
        token=admin,
    )
    service = made["data"]["createServiceToken"]["token"]
    copy = await gql(
        client,
        'mutation { createApiToken(input: {name: "copy", scopes: ["documents:read"]}) { token } }',
        token=service,
    )
    assert codes(copy) == ["FORBIDDEN"], copy
    assert codes(await gql(client, CREATE, _input(), token=service)) == ["FORBIDDEN"]
