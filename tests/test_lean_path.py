"""The lean path of a planned answer: PostgreSQL's JSON written as it came, with the same
answer, NOT_FOUND, cost and refund as before."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from prism.config import Settings
from prism.execution.cost import actual
from prism.execution.ids import to_global_id
from prism.models.enums import Role
from prism.operations.persisted import split_operations
from prism.schema import build_schema
from prism.services import Services
from prism.web.lean import LeanGraphQL
from tests.conftest import app_with, client_of
from tests.factories import Tenant, add_document
from tests.test_compiled import OPERATIONS
from tests.test_persisted import _call, _persisted, _register


async def test_planned_answers_report_the_objects_they_hold(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    documents = [await add_document(services, tenant) for _ in range(3)]
    registered = await _register(services, OPERATIONS)
    token = tenant.tokens[Role.REVIEWER]
    one = to_global_id("Document", documents[0].id)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("Nested", {"first": 3}),
        ("Nested", {"first": 0}),
        ("Page", {"first": 2}),
        ("One", {"id": one}),
        ("Count", {}),
        ("People", {}),
    ]
    for name, variables in calls:
        caller = tenant.tokens[Role.ADMIN] if name == "People" else token
        body = await _call(client, caller, registered[name], variables)
        assert body["extensions"]["execution"] == {"path": "compiled"}, (name, body)
        assert not body.get("errors"), body
        assert body["extensions"]["cost"]["actual"] == actual(body["data"]), (name, body)
        assert body["extensions"]["cost"]["actual"] <= body["extensions"]["cost"]["requested"]


async def test_a_missing_document_is_not_found_on_the_interpreted_path(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    registered = await _register(services, OPERATIONS)
    missing = to_global_id("Document", uuid.uuid4())
    body = await _call(client, tenant.tokens[Role.REVIEWER], registered["One"], {"id": missing})
    assert body["extensions"]["execution"] == {"path": "interpreted", "reason": "not found"}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    assert body["errors"][0]["path"] == ["node"]


# -- the lean path (prism.web.lean): answers planned reads itself, identical to the full path --


def _lean_of(app: Any) -> LeanGraphQL:
    """The app's lean path (its middleware, built at the first request)."""
    layer = app.middleware_stack
    while not isinstance(layer, LeanGraphQL):
        layer = layer.app
    return layer


def _answered() -> float:
    return REGISTRY.get_sample_value("prism_lean_path_total", {"outcome": "answered"}) or 0.0


def _handed(reason: str) -> float:
    return REGISTRY.get_sample_value("prism_lean_path_total", {"outcome": reason}) or 0.0


async def _both(
    client: httpx.AsyncClient, app: Any, body: dict[str, Any], headers: dict[str, str]
) -> tuple[httpx.Response, httpx.Response, float]:
    """The same request answered by the lean path, then by the full path; how many of the
    two the lean path answered."""
    lean = _lean_of(app)
    before = _answered()
    first = await client.post("/graphql", json=body, headers=headers)
    lean.enabled = False
    try:
        second = await client.post("/graphql", json=body, headers=headers)
    finally:
        lean.enabled = True
    return first, second, _answered() - before


def _same(lean: httpx.Response, full: httpx.Response) -> None:
    assert lean.status_code == full.status_code
    assert lean.content == full.content, (lean.content, full.content)
    differ = {"x-request-id"}
    assert [(k, v) for k, v in lean.headers.multi_items() if k not in differ] == [
        (k, v) for k, v in full.headers.multi_items() if k not in differ
    ]


@pytest.fixture
async def generous(settings: Settings, database_url: str) -> AsyncIterator[Any]:
    """An app whose buckets refill faster than a test asks (equal RateLimit-* headers on two
    consecutive requests), with the response cache on."""
    changed = settings.model_copy(
        update={
            "rate_limit_capacity": 100_000,
            "rate_limit_refill_per_second": 10_000_000.0,
            "response_cache_ttl_seconds": 60,
            "max_query_cost": 1_000,
        }
    )
    async with app_with(changed, database_url) as application:
        yield application


async def test_the_lean_path_answers_as_the_full_path_does(
    generous: Any, services: Services, tenant: Tenant
) -> None:
    documents = [await add_document(services, tenant) for _ in range(3)]
    registered = await _register(services, OPERATIONS)
    token = tenant.tokens[Role.REVIEWER]
    one = to_global_id("Document", documents[0].id)
    headers = {"authorization": f"Bearer {token}", "user-agent": "lean-test"}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("Nested", {"first": 3}),
        ("Page", {"first": 2}),
        ("One", {"id": one}),
        ("Count", {}),
    ]
    async with client_of(generous) as client:
        for name, variables in calls:
            body = {"extensions": _persisted(registered[name]), "variables": variables}
            # A registered query: its answer goes to the response cache at the first call.
            await client.post("/graphql", json=body, headers=headers)
            counted = {"operation": name, "type": "query"}
            before = REGISTRY.get_sample_value("prism_graphql_operations_total", counted)
            timing = {"operation": name}
            timed = REGISTRY.get_sample_value("prism_graphql_operation_seconds_count", timing)
            lean, full, answered = await _both(client, generous, body, headers)
            assert answered == 1, name
            _same(lean, full)
            # Counted and timed once by each path.
            after = REGISTRY.get_sample_value("prism_graphql_operations_total", counted)
            assert after == (before or 0) + 2
            assert (
                REGISTRY.get_sample_value("prism_graphql_operation_seconds_count", timing)
                == (timed or 0) + 2
            )
            assert lean.headers["x-prism-cache"] in {"cacheable", "uncacheable"}
            assert "etag" in lean.headers
            assert "ratelimit-remaining" in lean.headers
            # The client's copy is current: 304, with the same headers.
            current = {**headers, "if-none-match": lean.headers["etag"]}
            lean, full, answered = await _both(client, generous, body, current)
            assert answered == 1, name
            assert lean.status_code == 304
            _same(lean, full)
        # Sent as text: planned, not cached, no validators; first seen, it is validated,
        # planned and answered here too.
        text = {"query": "{ documents(first: 2) { edges { node { id filename } } } }"}
        before = _answered()
        first = await client.post("/graphql", json=text, headers=headers)
        assert _answered() == before + 1
        assert first.json()["extensions"]["execution"] == {"path": "compiled"}
        lean, full, answered = await _both(client, generous, text, headers)
        assert answered == 1
        _same(lean, full)
        assert lean.json()["extensions"]["execution"] == {"path": "compiled"}
        assert "etag" not in lean.headers


async def test_what_the_lean_path_does_not_answer_is_answered_as_before(
    generous: Any, services: Services, tenant: Tenant
) -> None:
    registered = await _register(services, OPERATIONS)
    token = tenant.tokens[Role.REVIEWER]
    headers = {"authorization": f"Bearer {token}"}
    missing = to_global_id("Document", uuid.uuid4())
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        # not found: the interpreted path answers NOT_FOUND
        (
            {"extensions": _persisted(registered["One"]), "variables": {"id": missing}},
            headers,
            "interpreted",
        ),
        # a variable that does not coerce
        (
            {"extensions": _persisted(registered["Nested"]), "variables": {"first": "x"}},
            headers,
            "interpreted",
        ),
        # a root field not planned (the audit chain's verification)
        (
            {"query": "{ documents(first: 1) { totalCount } verifyAuditChain { valid } }"},
            headers,
            "interpreted",
        ),
        # over the cost limit
        (
            {
                "query": "{ documents(first: 100) { edges { node { sections(first: 100) { "
                "edges { node { id } } } } } } }"
            },
            headers,
            "cost",
        ),
        # a document that does not validate
        ({"query": "{ documents { nope } }"}, headers, "not valid"),
        # a mutation
        ({"query": 'mutation { logout(refreshToken: "x") }'}, headers, "not a query"),
        # an unknown persisted query
        ({"extensions": _persisted("0" * 64)}, headers, "persisted query"),
        # a bearer that does not authenticate
        ({"query": "{ viewer { scopes } }"}, {"authorization": "Bearer nope"}, "not authenticated"),
        # not JSON
        ({"query": "{ viewer { scopes } }"}, {**headers, "content-type": "text/plain"}, "not json"),
        # a body in another charset, or compressed
        (
            {"query": "{ viewer { scopes } }"},
            {**headers, "content-type": "application/json; charset=latin-1"},
            "refused before reading",
        ),
        (
            {"query": "{ viewer { scopes } }"},
            {**headers, "content-encoding": "gzip"},
            "refused before reading",
        ),
        # a batch
        ([{"query": "{ viewer { scopes } }"}], headers, "not one operation"),  # type: ignore[list-item]
    ]
    async with client_of(generous) as client:
        for body, sent, reason in cases:
            content = orjson.dumps(body)
            request = {"content-type": "application/json", **sent}
            await client.post("/graphql", content=content, headers=request)  # validated once
            before_answered, before_reason = _answered(), _handed(reason)
            lean = await client.post("/graphql", content=content, headers=request)
            assert _answered() == before_answered, (reason, lean.content)
            assert _handed(reason) == before_reason + 1, (reason, lean.content)
            _lean_of(generous).enabled = False
            try:
                full = await client.post("/graphql", content=content, headers=request)
            finally:
                _lean_of(generous).enabled = True
            assert lean.status_code == full.status_code, reason
            assert lean.json() == full.json(), reason


@pytest.fixture
async def slow_refill(settings: Settings, database_url: str) -> AsyncIterator[Any]:
    changed = settings.model_copy(update={"rate_limit_refill_per_second": 0.01})
    async with app_with(changed, database_url) as application:
        yield application


async def test_a_lean_answer_charges_and_refunds_as_the_full_path(
    slow_refill: Any, services: Services, tenant: Tenant
) -> None:
    """The default buckets: what two requests leave in the caller's bucket is the same
    whichever path answers (charged the estimate, refunded what the answer did not use)."""
    await add_document(services, tenant)
    token = tenant.tokens[Role.REVIEWER]
    headers = {"authorization": f"Bearer {token}"}
    # As text: not cached; its first request validates it (on the full path).
    query = split_operations(OPERATIONS, build_schema()._schema)[0][1]
    body = {"query": query, "variables": {"first": 5}}
    async with client_of(slow_refill) as client:
        warm = await client.post("/graphql", json=body, headers=headers)
        lean, full, answered = await _both(client, slow_refill, body, headers)
    assert answered == 1
    cost = lean.json()["extensions"]["cost"]
    assert cost == full.json()["extensions"]["cost"] == warm.json()["extensions"]["cost"]
    assert cost["requested"] > cost["actual"] > 0
    # Each charged the estimate up front and refunded what its answer did not use: the next
    # charge starts from there, whichever path answered.
    remaining = [int(r.headers["ratelimit-remaining"]) for r in (warm, lean, full)]
    for before, after in itertools.pairwise(remaining):
        assert -cost["actual"] <= after - before <= -cost["actual"] + 1  # and the refill


async def test_lean_transactions_give_their_connections_back(
    generous: Any, services: Services, tenant: Tenant
) -> None:
    """A lean request's transaction runs on a pooled connection's driver: answered or handed
    over (not found), every connection goes back to the pool, out of its transaction."""
    document = await add_document(services, tenant)
    registered = await _register(services, OPERATIONS)
    headers = {"authorization": f"Bearer {tenant.tokens[Role.REVIEWER]}"}
    found = to_global_id("Document", document.id)
    missing = to_global_id("Document", uuid.uuid4())
    db = generous.state.services.db
    async with client_of(generous) as client:
        for _ in range(3):
            for variables in ({"id": found}, {"id": missing}):
                body = {"extensions": _persisted(registered["One"]), "variables": variables}
                answer = await client.post("/graphql", json=body, headers=headers)
                assert answer.status_code == 200
        assert db.pool_status()["checked_out"] == 0
        async with db.engine.connect() as connection:  # the one returned last
            raw = await connection.get_raw_connection()
            assert not raw.driver_connection.is_in_transaction()
        text = {"query": "{ documents(first: 1) { edges { node { id } } } }"}
        before = _answered()
        for _ in range(3):
            answer = await client.post("/graphql", json=text, headers=headers)
            assert not answer.json().get("errors"), answer.json()
        assert _answered() >= before + 2
        assert db.pool_status()["checked_out"] == 0


async def test_a_read_connection_holding_another_organization_answers_nothing(
    generous: Any, services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    """A planned read checks, in its own statement, that its session holds the organization
    it was given: a session that holds another one (a pooler in transaction mode handing out
    another client's server session, or a setting changed behind Prism's back) answers
    nothing, its connection is dropped, and the full path answers with the caller's rows."""
    ours = await add_document(services, tenant, filename="ours.txt")
    await add_document(services, other_tenant, filename="theirs.txt")
    headers = {"authorization": f"Bearer {tenant.tokens[Role.REVIEWER]}"}
    text = {"query": "{ documents(first: 5) { edges { node { id filename } } } }"}
    statements = generous.state.services.db.statements
    async with client_of(generous) as client:
        for _ in range(2):
            answer = await client.post("/graphql", json=text, headers=headers)
            assert answer.json()["data"]["documents"]["edges"][0]["node"]["filename"] == "ours.txt"
        # every idle read connection now holds the other organization, unknown to the pool
        idle = [held for group in statements._idle.values() for held in group]
        assert idle
        for held in idle:
            await held.connection.execute(
                f"SELECT set_config('prism.org_id', '{other_tenant.org_id}', false)"
            )
        failed, answered = _handed("statement failed"), _answered()
        answer = await client.post("/graphql", json=text, headers=headers)
        edges = answer.json()["data"]["documents"]["edges"]
        assert [e["node"]["id"] for e in edges] == [to_global_id("Document", ours.id)]
        assert _handed("statement failed") == failed + 1
        assert _answered() == answered
        assert all(held.connection.is_closed() for held in idle)
