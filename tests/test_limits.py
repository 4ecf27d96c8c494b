"""Limits before execution (cost, root fields, tokens, depth, aliases), rate limits by cost
in process and in a real Redis, and a Redis outage in the middle of a run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from prism.cache.store import ResilientStore
from prism.config import Mode, Settings
from prism.models.enums import Role
from prism.services import Services
from tests.conftest import RedisServer, app_with, client_of
from tests.factories import Tenant, add_document, codes, gid, gql

HEAVY = """{ documents(first: 100) { edges { node {
  sections(first: 100) { edges { node { analyses { feedbackItems { category } } } } } } } } }"""


async def test_an_operation_over_the_cost_limit_runs_nothing(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    # a mutation whose answer would be too big: refused before the change is made
    body = await gql(
        client,
        """mutation($id: ID!) { updateDocument(input: {id: $id, documentType: REPORT}) {
          sections(first: 100) { edges { node { document { sections(first: 100) { edges {
          node { analyses { feedbackItems { category } } } } } } } } } } }""",
        {"id": gid("Document", doc.id)},
        token=tenant.tokens[Role.ADMIN],
    )
    assert codes(body) == ["QUERY_TOO_COMPLEX"]
    assert body["extensions"]["cost"]["requested"] > services.settings.max_query_cost
    check = await gql(
        client,
        "query($id: ID!) { document(id: $id) { documentType } }",
        {"id": gid("Document", doc.id)},
        token=tenant.tokens[Role.ADMIN],
    )
    assert check["data"]["document"]["documentType"] == "CONTRACT"
    assert codes(await gql(client, HEAVY, token=tenant.tokens[Role.ADMIN])) == ["QUERY_TOO_COMPLEX"]


async def test_cost_is_reported_requested_and_actual(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    for _ in range(3):
        await add_document(services, tenant)
    body = await gql(
        client,
        "{ documents(first: 10) { edges { node { filename uploadedBy { email } } } } }",
        token=tenant.tokens[Role.VIEWER],
    )
    # 1 (connection) + 10 × (edge + node + uploadedBy); the answer holds 3 of the 10
    assert body["extensions"]["cost"] == {"requested": 31, "actual": 10, "cached": False}
    # lists of objects count each element, so the estimate bounds what comes back
    lists = await gql(
        client,
        """{ documents(first: 10) { edges { node { piiSummary { type count }
          sections(first: 10) { edges { node { analyses { feedbackItems { category } } } } }
        } } } }""",
        token=tenant.tokens[Role.VIEWER],
    )
    cost = lists["extensions"]["cost"]
    assert cost["actual"] > 10
    assert cost["requested"] >= cost["actual"]


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("{ " + " ".join(f"a{i}: viewer {{ scopes }}" for i in range(21)) + " }", "root fields"),
        ("{ viewer { scopes " + "__typename " * 6000 + "} }", "tokens"),
        (
            "{ ...F ...F } fragment F on Query { "
            + " ".join(f"v{i}: viewer {{ scopes }}" for i in range(16))
            + " }",
            "aliases, counted through fragment spreads",
        ),
        (
            '{ node(id: "x") { ... on Document { sections(first: 1) { edges { node {'
            " document { sections(first: 1) { edges { node { document { sections(first: 1) {"
            " edges { node { document { filename } } } } } } } } } } } } } } }",
            "depth",
        ),
    ],
)
async def test_shapes_over_a_limit_are_query_too_complex(
    client: httpx.AsyncClient, tenant: Tenant, query: str, why: str
) -> None:
    # twice: the second validation comes from the validation cache
    for _ in range(2):
        body = await gql(client, query, token=tenant.tokens[Role.VIEWER])
        assert codes(body) == ["QUERY_TOO_COMPLEX"], (why, body)


async def test_a_document_is_validated_once(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validation cache finds a document seen before: its key (schema, document, rules)
    must not change from one request to the next."""
    import prism.execution.validation

    validated = []
    validate = prism.execution.validation.validate

    def counting(*args: Any, **kwargs: Any) -> Any:
        validated.append(1)
        return validate(*args, **kwargs)

    monkeypatch.setattr(prism.execution.validation, "validate", counting)
    query = f"query Once {{ viewer {{ scopes }} }} # {tenant.org_id}"  # new to this process
    for _ in range(3):
        body = await gql(client, query, token=tenant.tokens[Role.VIEWER])
        assert body.get("errors") is None, body
    assert len(validated) == 1


@pytest.fixture(params=["memory", "redis"])
def rate_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    update: dict[str, Any] = {"rate_limit_capacity": 60, "rate_limit_refill_per_second": 2}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        update["redis_url"] = SecretStr(server.url)
    return settings.model_copy(update=update)


async def test_rate_limits_charge_the_cost(
    rate_settings: Settings, database_url: str, tenant: Tenant
) -> None:
    page = "{ documents(first: 20) { edges { node { filename } } } }"  # costs 41
    async with app_with(rate_settings, database_url) as app, client_of(app) as client:
        token = tenant.tokens[Role.VIEWER]
        first = await client.post(
            "/graphql", json={"query": page}, headers={"authorization": f"Bearer {token}"}
        )
        assert first.json().get("errors") is None
        assert first.headers["ratelimit-limit"] == "60"
        # what the answer did not use (no documents: 41 asked, 0 returned) is given back
        assert int(first.headers["ratelimit-remaining"]) == 19
        heavy = "{ documents(first: 30) { edges { node { filename } } } }"  # costs 61
        refused = await client.post(
            "/graphql", json={"query": heavy}, headers={"authorization": f"Bearer {token}"}
        )
        body = refused.json()
        assert codes(body) == ["RATE_LIMITED"]
        retry = body["errors"][0]["extensions"]["retryAfter"]
        assert retry >= 1
        assert refused.headers["retry-after"] == str(retry)
        # another caller has a bucket of its own
        other = await gql(client, page, token=tenant.tokens[Role.AUDITOR])
        assert other.get("errors") is None
        # anonymous callers are limited by address
        for _ in range(40):
            await client.post("/graphql", json={"query": "{ __typename }"})
        anonymous = await client.post(
            "/graphql", json={"query": 'mutation { logout(refreshToken: "x") }'}
        )
        assert "ratelimit-remaining" in anonymous.headers


async def test_a_redis_outage_degrades_and_recovers(
    settings: Settings,
    database_url: str,
    redis_server: RedisServer,
    tenant: Tenant,
) -> None:
    from tests.test_persisted import OPERATIONS, _call, _register

    update = {"redis_url": SecretStr(redis_server.url)}
    async with app_with(settings.model_copy(update=update), database_url) as app:
        services: Services = app.state.services
        registered = await _register(services, OPERATIONS)
        assert isinstance(services.cache, ResilientStore)
        services.cache._retry_seconds = 0.5
        async with client_of(app) as client:
            token = tenant.tokens[Role.REVIEWER]
            digest = registered["DocumentTitles"]
            await _call(client, token, digest, {"first": 2})
            assert (await _call(client, token, digest, {"first": 2}))["extensions"]["cost"][
                "cached"
            ]
            redis_server.stop()
            try:
                for _ in range(3):
                    during = await _call(client, token, digest, {"first": 2})
                    assert during.get("errors") is None, during
                    assert "ratelimit-remaining" in during["_headers"]
                assert services.cache.using_fallback
            finally:
                redis_server.start()
            await asyncio.sleep(0.6)
            await _call(client, token, digest, {"first": 2})
            after = await _call(client, token, digest, {"first": 2})
            assert after["extensions"]["cost"]["cached"] is True
            assert not services.cache.using_fallback


async def test_production_mode_can_still_serve_introspection_when_asked(
    settings: Settings, database_url: str, tenant: Tenant
) -> None:
    prod = settings.model_copy(
        update={"mode": Mode.PRODUCTION, "jwt_secret": SecretStr("p" * 48), "introspection": True}
    )
    async with app_with(prod, database_url) as app, client_of(app) as client:
        body = await gql(
            client, "{ __schema { queryType { name } } }", token=tenant.tokens[Role.VIEWER]
        )
        assert body["data"] == {"__schema": {"queryType": {"name": "Query"}}}
        page = await client.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 404
        assert json.loads(page.text)["errors"][0]["extensions"]["code"] == "NOT_FOUND"
