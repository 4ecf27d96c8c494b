from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from prism.audit import OPERATOR
from prism.models.enums import Classification, Role
from prism.models.users import ApiToken
from prism.services import Services
from prism.tokens import api_tokens
from tests.factories import Tenant, gql

CREATE = """mutation($n: String!, $s: [String!]!) { createApiToken(input: {name: $n, scopes: $s}) {
  token apiToken { id role expiresAt } } }"""
REVOKE = "mutation($id: ID!) { revokeApiToken(id: $id) { id revokedAt } }"
VIEW = "{ viewer { scopes organization { id } } }"


async def test_service_token_clones_itself(client: httpx.AsyncClient, services: Services, tenant: Tenant) -> None:
    parent = await api_tokens.create_token(
        services, OPERATOR, tenant.org_id, name="partner", scopes=["tokens:admin", "documents:read"],
        role=Role.ADMIN, clearance=Classification.RESTRICTED, expires_in_days=1)
    print("PARENT expires", parent.token.expires_at)
    body = await gql(client, CREATE, {"n": "clone", "s": ["tokens:admin", "documents:read"]}, token=parent.secret)
    print("CLONE", body.get("data"), body.get("errors"))
    child = body["data"]["createApiToken"]
    # the organization's ADMIN revokes the leaked partner token
    from prism.execution.ids import to_global_id
    r = await gql(client, REVOKE, {"id": to_global_id("ApiToken", parent.token.id)}, token=tenant.tokens[Role.ADMIN])
    print("REVOKE parent", r.get("data"), r.get("errors"))
    print("PARENT after revoke", (await gql(client, VIEW, {}, token=parent.secret)).get("errors"))
    print("CHILD after revoke", await gql(client, VIEW, {}, token=child["token"]))
    # grandchild still possible
    body = await gql(client, CREATE, {"n": "clone2", "s": ["tokens:admin"]}, token=child["token"])
    print("GRANDCHILD", body.get("data"), body.get("errors"))
