"""Persisted queries (automatic and registered), the safelist, GET, and the response cache,
against the in-process store and a real Redis."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from prism.config import Settings
from prism.models.enums import Classification, Role
from prism.models.registered_operations import register_operations
from prism.operations.persisted import split_operations
from prism.schema import build_schema
from prism.services import Services
from tests.conftest import RedisServer, app_with, client_of
from tests.factories import Tenant, add_document, codes, gid, gql
from tests.pipeline_helpers import upload

OPERATIONS = """
query DocumentTitles($first: Int!) {
  documents(first: $first, orderBy: {field: CREATED_AT, direction: DESC}) {
    totalCount edges { node { ...Title } } }
}
query Me { viewer { user { email } scopes } }
query JobOf($id: ID!) { job(id: $id) { state } }
mutation Retype($id: ID!) { updateDocument(input: {id: $id, documentType: REPORT}) { id } }
fragment Title on Document { filename classification }
"""


async def _register(services: Services, source: str) -> dict[str, str]:
    found = split_operations(source, build_schema()._schema)
    async with services.db.transaction(None) as session:
        stored = await register_operations(session, found)
    return {name: digest for name, digest, _ in stored}


@pytest.fixture
async def registered(services: Services) -> dict[str, str]:
    return await _register(services, OPERATIONS)


@pytest.fixture(params=["memory", "redis"])
async def store_client(
    request: pytest.FixtureRequest, settings: Settings, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its cache in process memory, or in a real Redis."""
    update: dict[str, Any] = {}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        update["redis_url"] = SecretStr(server.url)
    async with (
        app_with(settings.model_copy(update=update), database_url) as app,
        client_of(app) as http,
    ):
        yield http


def _persisted(digest: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


async def _call(
    client: httpx.AsyncClient,
    token: str,
    digest: str,
    variables: dict[str, Any] | None = None,
    *,
    query: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"extensions": _persisted(digest), "variables": variables or {}}
    if query is not None:
        body["query"] = query
    sent = {"authorization": f"Bearer {token}", **(headers or {})}
    response = await client.post("/graphql", json=body, headers=sent)
    answer: dict[str, Any] = response.json()
    answer["_headers"] = response.headers
    return answer


async def test_split_operations_names_each_with_its_fragments() -> None:
    found = dict(split_operations(OPERATIONS, build_schema()._schema))
    assert set(found) == {"DocumentTitles", "Me", "JobOf", "Retype"}
    assert "fragment Title on Document" in found["DocumentTitles"]
    assert "fragment Title" not in found["Me"]


async def test_automatic_persisted_queries(store_client: httpx.AsyncClient, tenant: Tenant) -> None:
    token = tenant.tokens[Role.VIEWER]
    query = f"query Apq {{ viewer {{ scopes }} }} # {tenant.org_id}"  # new to this server
    digest = hashlib.sha256(query.encode()).hexdigest()
    unknown = await _call(store_client, token, digest)
    assert codes(unknown) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert unknown["errors"][0]["message"] == "PersistedQueryNotFound"
    registered = await _call(store_client, token, digest, query=query)
    assert registered.get("errors") is None, registered
    again = await _call(store_client, token, digest)
    assert again["data"] == registered["data"]
    wrong = await _call(store_client, token, "0" * 64, query=query)
    assert codes(wrong) == ["BAD_USER_INPUT"]
    for bad in ({"version": 2, "sha256Hash": digest}, {"version": 1, "sha256Hash": "xyz"}):
        body = await store_client.post(
            "/graphql",
            json={"extensions": {"persistedQuery": bad}},
            headers={"authorization": f"Bearer {token}"},
        )
        assert codes(body.json()) == ["BAD_USER_INPUT"]


async def test_bi_tokens_run_registered_operations_only(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, registered: dict[str, str]
) -> None:
    from prism.audit import OPERATOR
    from prism.tokens import api_tokens

    bi = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="grafana",
        scopes=["bi:read", "documents:read"],
        role=Role.AUDITOR,
    )
    ad_hoc = await gql(client, "{ viewer { scopes } }", token=bi.secret)
    assert codes(ad_hoc) == ["PERSISTED_QUERY_REQUIRED"]
    query = "query Other { viewer { scopes } }"
    apq = await _call(client, bi.secret, hashlib.sha256(query.encode()).hexdigest(), query=query)
    assert codes(apq) == ["PERSISTED_QUERY_REQUIRED"]
    ok = await _call(client, bi.secret, registered["Me"])
    assert ok["data"] == {"viewer": {"user": None, "scopes": ["bi:read", "documents:read"]}}
    titles = await _call(client, bi.secret, registered["DocumentTitles"], {"first": 5})
    assert titles.get("errors") is None, titles
    # a token that can also write is not a BI token: it may send any query
    writer = await api_tokens.create_token(
        services, OPERATOR, tenant.org_id, name="etl", scopes=["bi:read", "documents:write"]
    )
    assert (await gql(client, "{ viewer { scopes } }", token=writer.secret)).get("errors") is None
    # over GET, as a BI tool or an HTTP cache would send it
    response = await client.get(
        "/graphql",
        params={"operationName": "Me", "extensions": json.dumps(_persisted(registered["Me"]))},
        headers={"authorization": f"Bearer {bi.secret}"},
    )
    assert response.json()["data"] == ok["data"]
    # a mutation is never run over GET, registered or not
    mutation = await client.get(
        "/graphql",
        params={
            "extensions": json.dumps(_persisted(registered["Retype"])),
            "variables": json.dumps({"id": gid("Document", tenant.org_id)}),
        },
        headers={"authorization": f"Bearer {tenant.tokens[Role.ADMIN]}"},
    )
    assert mutation.status_code == 400


async def test_the_safelist_can_be_enforced_for_everyone(
    settings: Settings, database_url: str, tenant: Tenant, registered: dict[str, str]
) -> None:
    strict = settings.model_copy(update={"registered_operations_only": True})
    async with app_with(strict, database_url) as app, client_of(app) as client:
        token = tenant.tokens[Role.ADMIN]
        assert codes(await gql(client, "{ viewer { scopes } }", token=token)) == [
            "PERSISTED_QUERY_REQUIRED"
        ]
        assert (await _call(client, token, registered["Me"])).get("errors") is None


async def test_cached_answers_follow_writes(
    store_client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    registered: dict[str, str],
) -> None:
    doc = await add_document(services, tenant)
    token = tenant.tokens[Role.REVIEWER]
    first = await _call(store_client, token, registered["DocumentTitles"], {"first": 5})
    assert first["extensions"]["cost"]["cached"] is False
    second = await _call(store_client, token, registered["DocumentTitles"], {"first": 5})
    assert second["extensions"]["cost"]["cached"] is True
    assert second["data"] == first["data"]
    assert second["_headers"]["cache-control"] == "private, no-cache"
    # other variables are another entry
    other = await _call(store_client, token, registered["DocumentTitles"], {"first": 4})
    assert other["extensions"]["cost"]["cached"] is False
    # any committed write of the organization retires its cached answers
    retype = await _call(store_client, token, registered["Retype"], {"id": gid("Document", doc.id)})
    assert retype.get("errors") is None, retype
    third = await _call(store_client, token, registered["DocumentTitles"], {"first": 5})
    assert third["extensions"]["cost"]["cached"] is False
    # so does a write made elsewhere (a worker, another server): the version is in the database
    await add_document(services, tenant, filename="from-a-worker.txt")
    fourth = await _call(store_client, token, registered["DocumentTitles"], {"first": 5})
    assert fourth["extensions"]["cost"]["cached"] is False
    assert fourth["data"]["documents"]["totalCount"] == first["data"]["documents"]["totalCount"] + 1


async def test_organizations_and_clearances_never_share_an_entry(
    store_client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    other_tenant: Tenant,
    registered: dict[str, str],
) -> None:
    await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    await add_document(services, other_tenant, classification=Classification.INTERNAL)
    digest = registered["DocumentTitles"]
    callers = [
        (tenant, Role.REVIEWER),  # CONFIDENTIAL clearance
        (tenant, Role.VIEWER),  # INTERNAL clearance, same organization
        (other_tenant, Role.REVIEWER),  # same role and clearance, other organization
    ]
    answers = []
    for owner, role in callers:
        fresh = await _call(store_client, owner.tokens[role], digest, {"first": 10})
        assert fresh["extensions"]["cost"]["cached"] is False, (owner.name, role)
        cached = await _call(store_client, owner.tokens[role], digest, {"first": 10})
        assert cached["extensions"]["cost"]["cached"] is True
        assert cached["data"] == fresh["data"]
        answers.append(fresh["data"]["documents"])
    confidential, internal, elsewhere = answers
    assert {e["node"]["classification"] for e in confidential["edges"]} == {"CONFIDENTIAL"}
    assert internal == {"totalCount": 0, "edges": []}
    assert {e["node"]["classification"] for e in elsewhere["edges"]} == {"INTERNAL"}


async def test_personal_answers_are_cached_per_caller_and_others_not_at_all(
    store_client: httpx.AsyncClient, tenant: Tenant, registered: dict[str, str]
) -> None:
    me = {}
    for role in (Role.REVIEWER, Role.APPROVER):  # same clearance, different people
        for _ in range(2):
            me[role] = await _call(store_client, tenant.tokens[role], registered["Me"])
        assert me[role]["extensions"]["cost"]["cached"] is True
        assert me[role]["data"]["viewer"]["user"]["email"] == tenant.email(role)
    # a job's state moves without any write the data version sees: never cached
    uploaded = await upload(
        store_client, tenant.tokens[Role.ADMIN], "job.txt", f"{tenant.org_id}\n1. Term".encode()
    )
    job_id = uploaded.json()["data"]["uploadDocument"]["job"]["id"]
    for _ in range(2):
        job = await _call(
            store_client, tenant.tokens[Role.ADMIN], registered["JobOf"], {"id": job_id}
        )
        assert job["data"] == {"job": {"state": "QUEUED"}}
        assert job["extensions"]["cost"]["cached"] is False
        assert job["_headers"]["x-prism-cache"] == "uncacheable"


async def test_etags_answer_304_when_the_copy_is_current(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, registered: dict[str, str]
) -> None:
    token = tenant.tokens[Role.AUDITOR]
    params = {
        "operationName": "DocumentTitles",
        "variables": json.dumps({"first": 3}),
        "extensions": json.dumps(_persisted(registered["DocumentTitles"])),
    }
    headers = {"authorization": f"Bearer {token}"}
    first = await client.get("/graphql", params=params, headers=headers)
    etag = first.headers["etag"]
    again = await client.get("/graphql", params=params, headers={**headers, "if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    await add_document(services, tenant, classification=Classification.PUBLIC)
    changed = await client.get(
        "/graphql", params=params, headers={**headers, "if-none-match": etag}
    )
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
