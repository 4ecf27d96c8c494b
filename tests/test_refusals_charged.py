"""Every request refused before it runs costs its caller, whatever refused it and whatever
the transport; a caller who cannot pay for one more refusal is answered 429 RATE_LIMITED
before the work (the body parsed, the persisted query looked up, the document validated);
an automatic persisted query is stored only for a request that was accepted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from prism.audit import OPERATOR
from prism.config import Settings
from prism.models.enums import Role
from prism.services import Services
from prism.tokens import api_tokens
from tests.conftest import app_with, client_of
from tests.factories import Tenant, codes, gql
from tests.test_websocket_auth import connect, serving

CAPACITY = 3


@pytest.fixture
def stingy(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "rate_limit_capacity": CAPACITY,
            "rate_limit_refill_per_second": 0.01,
            "rate_limit_refusal_cost": 1,
            "websocket_recheck_seconds": 300,
        }
    )


def persisted(digest: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


def random_hash() -> str:
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()


Probe = Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[httpx.Response]]

# Each refusal, as a client sends it; `headers` carries the caller's credential, if any.
REFUSALS: dict[str, Probe] = {
    "unknown persisted-query hash": lambda c, h: c.post(
        "/graphql", json={"extensions": persisted(random_hash())}, headers=h
    ),
    "hash of another text": lambda c, h: c.post(
        "/graphql",
        json={"query": "{ __typename }", "extensions": persisted("0" * 64)},
        headers=h,
    ),
    "persistedQuery version 2": lambda c, h: c.post(
        "/graphql",
        json={"query": "{ __typename }", "extensions": {"persistedQuery": {"version": 2}}},
        headers=h,
    ),
    "unknown operationName": lambda c, h: c.post(
        "/graphql", json={"query": "query A { __typename }", "operationName": "B"}, headers=h
    ),
    "mutation over GET": lambda c, h: c.get(
        "/graphql", params={"query": 'mutation { logout(refreshToken: "x") }'}, headers=h
    ),
    "no query": lambda c, h: c.post("/graphql", json={}, headers=h),
    "bad JSON": lambda c, h: c.post(
        "/graphql", content=b"{", headers={**h, "content-type": "application/json"}
    ),
    "a batch": lambda c, h: c.post("/graphql", json=[{"query": "{ __typename }"}], headers=h),
    "variables not an object": lambda c, h: c.post(
        "/graphql", json={"query": "{ __typename }", "variables": [1]}, headers=h
    ),
    "text/plain": lambda c, h: c.post(
        "/graphql", content=b"{ __typename }", headers={**h, "content-type": "text/plain"}
    ),
    "multipart without its CSRF header": lambda c, h: c.post(
        "/graphql", files={"operations": (None, "{}")}, headers=h
    ),
    "a bearer token that does not authenticate": lambda c, h: c.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers={"authorization": "Bearer prism_pat_" + uuid.uuid4().hex},
    ),
    "invalid document": lambda c, h: c.post(
        "/graphql", json={"query": "{ nope" + uuid.uuid4().hex + " }"}, headers=h
    ),
}


def error_code(response: httpx.Response) -> str:
    body = response.json()
    return str(codes(body)[0])


@pytest.mark.parametrize(
    ("refusal", "caller"),
    [(r, "anonymous") for r in REFUSALS]
    # (a token that does not authenticate is charged to its address: the anonymous case)
    + [(r, "API token") for r in REFUSALS if "bearer" not in r],
)
async def test_every_refusal_is_charged_to_its_caller(
    stingy: Settings, database_url: str, tenant: Tenant, refusal: str, caller: str
) -> None:
    headers = (
        {} if caller == "anonymous" else {"authorization": f"Bearer {tenant.tokens[Role.VIEWER]}"}
    )
    probe = REFUSALS[refusal]
    ip = f"198.51.100.{sorted(REFUSALS).index(refusal) + 1}"
    async with app_with(stingy, database_url) as app, client_of(app, ip=ip) as http:
        answered = [await probe(http, headers) for _ in range(CAPACITY)]
        assert all(r.status_code != 429 for r in answered), [r.text for r in answered]
        assert "RATE_LIMITED" not in {error_code(r) for r in answered}
        # the allowance is spent: the same refusal, then a valid request, answered 429
        for response in (
            await probe(http, headers),
            await http.post("/graphql", json={"query": "{ __typename }"}, headers=headers),
        ):
            assert response.status_code == 429, (refusal, response.text)
            assert error_code(response) == "RATE_LIMITED"
            retry = response.json()["errors"][0]["extensions"]["retryAfter"]
            assert retry >= 1
            assert response.headers["retry-after"] == str(retry)


async def test_a_spent_caller_is_answered_before_the_work(
    stingy: Settings,
    database_url: str,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No JSON decoded, no persisted query looked up in the database, for a caller whose
    allowance is spent."""
    import prism.execution.inputs
    import prism.operations.registry

    decoded: list[int] = []
    looked_up: list[int] = []
    decode, find = prism.execution.inputs.decode_json, prism.operations.registry.find_operation

    def counting_decode(data: Any) -> object:
        decoded.append(1)
        return decode(data)

    async def counting_find(*args: Any, **kwargs: Any) -> Any:
        looked_up.append(1)
        return await find(*args, **kwargs)

    monkeypatch.setattr(prism.execution.inputs, "decode_json", counting_decode)
    monkeypatch.setattr(prism.operations.registry, "find_operation", counting_find)
    async with app_with(stingy, database_url) as app, client_of(app, ip="198.51.100.77") as http:
        for _ in range(CAPACITY):
            response = await http.post("/graphql", json={"extensions": persisted(random_hash())})
            assert error_code(response) == "PERSISTED_QUERY_NOT_FOUND"
        assert len(looked_up) == CAPACITY
        decoded.clear()
        big = "#" + "a" * 900_000 + "\nquery A { __typename }"
        for body in (
            {"extensions": persisted(random_hash())},
            {"query": big, "operationName": "B"},
        ):
            response = await http.post("/graphql", json=body)
            assert response.status_code == 429
        assert looked_up == [1] * CAPACITY
        assert decoded == []


async def test_refusals_over_a_websocket_are_charged_to_the_same_bucket(
    stingy: Settings, database_url: str, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.REVIEWER]
    async with serving(stingy, database_url) as address:
        async with connect(address, token) as ws:
            assert codes(await ws.run("{ viewer { scopez } }")) == ["BAD_USER_INPUT"]
            body = await ws.run(None, None, persisted(random_hash()))
            assert codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]
        async with connect(address, token) as ws:
            # a document that does not parse ends its operation (the socket stays): charged
            assert codes(await ws.run("{ viewer { ")) == ["BAD_USER_INPUT"]
        async with connect(address, token) as ws:
            # spent: a refusal, then a valid operation, then a persisted query (before its
            # lookup), all RATE_LIMITED
            for query, extensions in (
                ("{ viewer { scopez } }", None),
                ("{ viewer { ", None),
                ("{ viewer { scopes } }", None),
                (None, persisted(random_hash())),
            ):
                body = await ws.run(query, None, extensions)
                assert codes(body) == ["RATE_LIMITED"], body
                assert body["errors"][0]["extensions"]["retryAfter"] >= 1
        # the same caller over HTTP: the same bucket
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            response = await http.post(
                "/graphql",
                json={"query": "{ viewer { scopes } }"},
                headers={"authorization": f"Bearer {token}"},
            )
            assert response.status_code == 429
            assert error_code(response) == "RATE_LIMITED"


async def test_a_websocket_operation_with_an_unknown_name_is_charged(
    stingy: Settings, database_url: str, tenant: Tenant
) -> None:
    """Refused by Strawberry before validation (no such operation in the document)."""
    token = tenant.tokens[Role.AUDITOR]
    async with serving(stingy, database_url) as address, connect(address, token) as ws:
        seen = []
        for i in range(CAPACITY + 1):
            op = f"named-{i}"
            payload = {"query": "query A { viewer { scopes } }", "operationName": "B"}
            await ws.ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
            message = await ws.message(op)
            assert message["type"] == "error", message
            seen.append(codes({"errors": message["payload"]}))
        assert "RATE_LIMITED" not in str(seen[:CAPACITY]), seen
        assert seen[CAPACITY] == ["RATE_LIMITED"], seen


async def test_an_automatic_persisted_query_is_stored_only_once_accepted(
    stingy: Settings, database_url: str, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.ADMIN]
    auth = {"authorization": f"Bearer {token}"}

    async def fetch(http: httpx.AsyncClient, digest: str) -> dict[str, Any]:
        response = await http.post("/graphql", json={"extensions": persisted(digest)}, headers=auth)
        body: dict[str, Any] = response.json()
        return body

    async with app_with(stingy, database_url) as app:
        async with client_of(app, ip="198.51.100.80") as http:
            # over the cost limit: refused, not stored
            costly = (
                "{ documents(first: 100) { edges { node { sections(first: 100) { edges { node { "
                "analyses { feedbackItems { category } } } } } } } } } # " + uuid.uuid4().hex
            )
            digest = hashlib.sha256(costly.encode()).hexdigest()
            body = (
                await http.post(
                    "/graphql",
                    json={"query": costly, "extensions": persisted(digest)},
                    headers=auth,
                )
            ).json()
            assert codes(body) == ["QUERY_TOO_COMPLEX"]
            assert codes(await fetch(http, digest)) == ["PERSISTED_QUERY_NOT_FOUND"]
            # spent allowance: refused before anything, not stored either
            for _ in range(CAPACITY):
                await http.post("/graphql", json={"query": "{ nope }"}, headers=auth)
            spent = "{ __typename } # " + uuid.uuid4().hex
            spent_digest = hashlib.sha256(spent.encode()).hexdigest()
            response = await http.post(
                "/graphql",
                json={"query": spent, "extensions": persisted(spent_digest)},
                headers=auth,
            )
            assert error_code(response) == "RATE_LIMITED"
        async with client_of(app, ip="198.51.100.81") as http:
            other = tenant.tokens[Role.AUDITOR]
            auth = {"authorization": f"Bearer {other}"}
            assert codes(await fetch(http, spent_digest)) == ["PERSISTED_QUERY_NOT_FOUND"]
            # accepted: stored, and found by its hash afterwards
            accepted = "{ __typename } # " + uuid.uuid4().hex
            accepted_digest = hashlib.sha256(accepted.encode()).hexdigest()
            response = await http.post(
                "/graphql",
                json={"query": accepted, "extensions": persisted(accepted_digest)},
                headers=auth,
            )
            assert response.json()["data"] == {"__typename": "Query"}
            assert (await fetch(http, accepted_digest))["data"] == {"__typename": "Query"}


async def test_a_bi_token_sending_a_plain_query_is_charged(
    stingy: Settings, database_url: str, tenant: Tenant, services: Services
) -> None:
    bi = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="bi",
        scopes=["bi:read"],
        user_email=tenant.email(Role.ADMIN),
    )
    async with app_with(stingy, database_url) as app, client_of(app, ip="198.51.100.90") as http:
        seen = [
            codes(await gql(http, "{ viewer { scopes } }", token=bi.secret))
            for _ in range(CAPACITY + 1)
        ]
        assert seen[:CAPACITY] == [["PERSISTED_QUERY_REQUIRED"]] * CAPACITY
        assert seen[CAPACITY] == ["RATE_LIMITED"]


async def test_a_websocket_that_does_not_authenticate_is_charged_to_its_address(
    stingy: Settings, database_url: str
) -> None:
    async with serving(stingy, database_url) as address:
        for credential in ["prism_pat_" + uuid.uuid4().hex, "", "prism_pat_x"][:CAPACITY]:
            async with websockets.connect(
                f"ws://{address}/graphql", subprotocols=[Subprotocol("graphql-transport-ws")]
            ) as ws:
                init = {"type": "connection_init", "payload": {"authorization": credential}}
                await ws.send(json.dumps(init))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 4403
        # the address has paid for three refusals: its next request is refused at the door
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            response = await http.post("/graphql", json={"query": "{ __typename }"})
            assert response.status_code == 429, response.text
            assert error_code(response) == "RATE_LIMITED"


async def test_a_caller_with_allowance_passes_the_door_without_asking_the_store(
    app: Any, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The door asks the store only about buckets seen running short: an ordinary accepted
    request takes from its bucket once (its cost), not once more at the door."""
    store = app.state.services.cache
    taken: list[int] = []
    real_take = store.take

    async def counted(key: str, cost: int, rate: Any) -> Any:
        taken.append(cost)
        return await real_take(key, cost, rate)

    monkeypatch.setattr(store, "take", counted)
    async with client_of(app, "198.18.90.1") as http:
        body = await gql(http, "{ viewer { scopes } }", token=tenant.tokens[Role.VIEWER])
    assert body.get("errors") is None, body
    assert taken == [1]
