"""The Done-when query of the foundation, on the real app and database."""

from __future__ import annotations

import httpx

from prism.models.enums import Classification, Role
from prism.services import Services
from tests.factories import Tenant, add_document, gql

DONE_WHEN = """
{ viewer { organization { name } }
  documents(first: 5) {
    totalCount edges { node { filename sections { edges { node { name } } } } } } }
"""


async def test_viewer_and_documents_with_sections(
    client: httpx.AsyncClient, tenant: Tenant, services: Services
) -> None:
    # given
    await add_document(services, tenant, classification=Classification.INTERNAL, filename="a.txt")
    # when
    body = await gql(client, DONE_WHEN, token=tenant.tokens[Role.ADMIN])
    # then
    assert body.get("errors") is None, body
    data = body["data"]
    assert data["viewer"]["organization"]["name"] == tenant.name
    assert data["documents"]["totalCount"] == 1
    node = data["documents"]["edges"][0]["node"]
    assert node["filename"] == "a.txt"
    assert [e["node"]["name"] for e in node["sections"]["edges"]] == [
        "1. Term",
        "2. Liability",
        "3. Termination",
    ]


async def test_health_ready_metrics_and_request_id(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "up"
    response = await client.get("/metrics", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert "prism_db_pool_connections" in response.text
    generated = await client.get("/healthz", headers={"x-request-id": "bad id with spaces"})
    assert len(generated.headers["x-request-id"]) == 32
