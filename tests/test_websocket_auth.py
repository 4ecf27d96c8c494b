"""A WebSocket has the rights of an HTTP request, operation by operation.

Real uvicorn servers on the test database, real graphql-transport-ws frames. Each operation
on a socket authenticates its credential again and runs in a context of its own; a
credential that ends (revoked API token, signed-out session, expired JWT) is refused on the
socket's next operation and closes it (4401) within seconds even while it is idle; a
demotion, a lowered clearance or a reclassified document take effect on the next operation
and on a running subscription's next event; the registered-operations rule and the request
limits are the same as over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import uvicorn
import websockets
from websockets.typing import Subprotocol

from prism import bootstrap
from prism.audit import OPERATOR
from prism.authn.secrets import AccessTokens
from prism.config import Settings
from prism.documents.processing import PROGRESS_CHANNEL
from prism.models.documents import Document
from prism.models.enums import Classification, ProcessingStatus, Role
from prism.models.registered_operations import register_operations
from prism.operations.persisted import split_operations
from prism.schema import build_schema
from prism.services import Services
from prism.tokens import api_tokens
from prism.web.app import create_app
from tests.factories import PASSWORD, Tenant, add_document, add_user, codes, gid, gql

ME = "query WsMe { viewer { scopes } }"
MINT = 'mutation { createApiToken(input: {name: "minted", scopes: ["documents:read"]}) { token } }'
DOCUMENT = "query($id: ID!) { document(id: $id) { filename classification } }"
RETYPE = "mutation($id: ID!) { updateDocument(input: {id: $id, documentType: REPORT}) { id } }"
PROGRESS = (
    "subscription($id: ID!) { documentProgress(id: $id) { processingStatus"
    " document { filename } } }"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def serving(settings: Settings, database_url: str) -> AsyncIterator[str]:
    """The app under uvicorn on a free local port, in this event loop."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings, database_url=database_url),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, "the server did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture(scope="module")
async def plain(settings: Settings, database_url: str) -> AsyncIterator[str]:
    """A server whose periodic re-check is out of the way: what is seen is per operation."""
    quiet = settings.model_copy(update={"websocket_recheck_seconds": 300})
    async with serving(quiet, database_url) as address:
        yield address


@pytest.fixture(scope="module")
async def watchful(settings: Settings, database_url: str) -> AsyncIterator[str]:
    """Re-checks every half second; a small rate-limit bucket (60, +2/s)."""
    update = {
        "websocket_recheck_seconds": 0.5,
        "rate_limit_capacity": 60,
        "rate_limit_refill_per_second": 2,
    }
    async with serving(settings.model_copy(update=update), database_url) as address:
        yield address


@pytest.fixture(scope="module")
async def safelisted(settings: Settings, database_url: str) -> AsyncIterator[str]:
    strict = settings.model_copy(
        update={"registered_operations_only": True, "websocket_recheck_seconds": 300}
    )
    async with serving(strict, database_url) as address:
        yield address


class Socket:
    """One graphql-transport-ws connection; messages are filed by operation id."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.inbox: dict[str | None, list[dict[str, Any]]] = defaultdict(list)

    async def start(
        self,
        query: str | None,
        variables: dict[str, Any] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> str:
        op = str(next(self.ids))
        payload: dict[str, Any] = {"variables": variables or {}}
        if query is not None:
            payload["query"] = query
        if extensions is not None:
            payload["extensions"] = extensions
        await self.ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
        return op

    async def message(self, op: str) -> dict[str, Any]:
        while not self.inbox[op]:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            self.inbox[message.get("id")].append(message)
        return self.inbox[op].pop(0)

    async def run(
        self,
        query: str | None,
        variables: dict[str, Any] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A query or mutation: its result, or the errors of an `error` message."""
        op = await self.start(query, variables, extensions)
        first = await self.message(op)
        if first["type"] == "error":
            return {"data": None, "errors": first["payload"]}
        assert first["type"] == "next", first
        assert (await self.message(op))["type"] == "complete"
        payload: dict[str, Any] = first["payload"]
        return payload

    async def closed(self, within: float) -> int:
        """Wait for the server to close the socket; its close code. Nothing but protocol
        chatter (no data) may arrive meanwhile."""
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(within):
                while True:
                    message = json.loads(await self.ws.recv())
                    assert message.get("type") in {"ping", "pong", "error", "complete"}, message
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code


@asynccontextmanager
async def connect(address: str, token: str) -> AsyncIterator[Socket]:
    async with websockets.connect(
        f"ws://{address}/graphql", subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        yield Socket(ws)


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    body = await gql(
        client,
        "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken } }",
        {"input": {"email": email, "password": PASSWORD}},
    )
    assert body.get("errors") is None, body
    payload: dict[str, Any] = body["data"]["login"]
    return payload


@dataclass
class Credential:
    token: str
    end: Callable[[], Awaitable[None]]


async def _credential(
    kind: str, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> Credential:
    """A working credential of a fresh user, and how to end it."""
    user, _ = await add_user(
        services, tenant, role=Role.REVIEWER, clearance=Classification.CONFIDENTIAL
    )
    admin = tenant.tokens[Role.ADMIN]
    if kind == "revoked API token":
        created = await api_tokens.create_token(
            services,
            OPERATOR,
            tenant.org_id,
            name="ws",
            scopes=["documents:read", "tokens:admin"],
            user_email=user.email,
        )

        async def revoke() -> None:
            body = await gql(
                client,
                "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }",
                {"id": gid("ApiToken", created.token.id)},
                token=admin,
            )
            assert body.get("errors") is None, body

        return Credential(created.secret, revoke)
    signed_in = await _login(client, user.email)
    if kind == "signed-out session":

        async def sign_out() -> None:
            body = await gql(
                client,
                "mutation($t: String!) { logout(refreshToken: $t) }",
                {"t": signed_in["refreshToken"]},
            )
            assert body["data"] == {"logout": True}, body

        return Credential(signed_in["accessToken"], sign_out)
    assert kind == "expired JWT"
    # A JWT of the same live session, issued with a two-second lifetime.
    session_id = services.access_tokens.verify(signed_in["accessToken"]).session_id
    short = AccessTokens(
        bootstrap.jwt_key(services.settings),
        key_id=services.settings.jwt_key_id,
        ttl=timedelta(seconds=2),
    )
    token, expires = short.issue(user.id, tenant.org_id, session_id)

    async def expire() -> None:
        await asyncio.sleep(max(0.0, expires.timestamp() - time.time()) + 0.5)

    return Credential(token, expire)


ENDINGS = ["revoked API token", "signed-out session", "expired JWT"]


@pytest.mark.parametrize("kind", ENDINGS)
async def test_an_ended_credential_is_refused_on_its_open_socket_and_closes_it(
    kind: str, plain: str, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    credential = await _credential(kind, client, services, tenant)
    async with connect(plain, credential.token) as ws:
        assert (await ws.run(ME))["data"]["viewer"]["scopes"]
        await credential.end()
        # the next operation (here: minting a token that would outlive this one) is refused
        body = await ws.run(MINT)
        assert body["data"] is None
        assert codes(body) == ["UNAUTHENTICATED"]
        assert await ws.closed(within=5) == 4401
    # and so is it over HTTP: the two transports agree
    assert codes(await gql(client, ME, token=credential.token)) == ["UNAUTHENTICATED"]


@pytest.mark.parametrize("kind", ENDINGS)
async def test_an_idle_socket_is_closed_within_seconds_when_its_credential_ends(
    kind: str, watchful: str, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    credential = await _credential(kind, client, services, tenant)
    async with connect(watchful, credential.token) as ws:
        assert (await ws.run(ME))["data"]["viewer"]["scopes"]
        await credential.end()
        ended = time.monotonic()
        # re-checked every 0.5 s: closed well within 3 s, with no operation sent
        assert await ws.closed(within=3) == 4401
        assert time.monotonic() - ended < 3


async def test_a_demoted_user_loses_the_rights_on_its_open_socket(
    plain: str, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    approver, token = await add_user(
        services, tenant, role=Role.APPROVER, clearance=Classification.CONFIDENTIAL
    )
    doc = await add_document(services, tenant)
    variables = {"id": gid("Document", doc.id)}
    async with connect(plain, token) as ws:
        assert (await ws.run(RETYPE, variables)).get("errors") is None
        demoted = await gql(
            client,
            "mutation($id: ID!) { updateUser(input: {id: $id, role: VIEWER}) { role } }",
            {"id": gid("User", approver.id)},
            token=tenant.tokens[Role.ADMIN],
        )
        assert demoted["data"] == {"updateUser": {"role": "VIEWER"}}, demoted
        refused = await ws.run(RETYPE, variables)
        assert refused["data"] is None
        assert codes(refused) == ["FORBIDDEN"]
        # reads a VIEWER may do still work on the same socket
        assert (await ws.run(DOCUMENT, variables))["data"]["document"] is not None


async def _notify(services: Services, tenant: Tenant, document: Document) -> None:
    """A progress event for the document, as the pipeline sends one (NOTIFY at commit)."""
    payload = orjson.dumps(
        {"o": str(tenant.org_id), "d": str(document.id), "s": "EXTRACTING", "a": 0, "t": 0}
    ).decode()
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(sa.select(sa.func.pg_notify(PROGRESS_CHANNEL, payload)))


async def _being_analyzed(services: Services, tenant: Tenant, document: Document) -> None:
    """Where a worker would be midway through the analysis (a subscription keeps waiting)."""
    async with services.db.transaction(tenant.org_id) as session:
        row = await session.get(Document, document.id)
        assert row is not None
        row.processing_status = ProcessingStatus.ANALYZING


async def _stopped(ws: Socket, op: str) -> dict[str, Any]:
    """The running subscription's answer to the next event: no document, NOT_FOUND, and
    then the end of the stream."""
    event = await ws.message(op)
    payload: dict[str, Any] = event["payload"]
    if event["type"] == "next":
        assert payload["data"] is None, payload
        assert (await ws.message(op))["type"] == "complete"
        return {"data": None, "errors": payload["errors"]}
    assert event["type"] == "error", event
    return {"data": None, "errors": payload}


async def test_a_lowered_clearance_hides_documents_on_the_open_socket_and_its_subscription(
    plain: str, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    reader, token = await add_user(
        services, tenant, role=Role.REVIEWER, clearance=Classification.CONFIDENTIAL
    )
    doc = await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    await _being_analyzed(services, tenant, doc)
    variables = {"id": gid("Document", doc.id)}
    async with connect(plain, token) as ws:
        watching = await ws.start(PROGRESS, variables)
        first = await ws.message(watching)
        assert first["payload"]["data"]["documentProgress"]["document"]["filename"] == (
            doc.filename
        )
        assert (await ws.run(DOCUMENT, variables))["data"]["document"]["filename"] == (doc.filename)
        lowered = await gql(
            client,
            "mutation($id: ID!) { updateUser(input: {id: $id, clearance: INTERNAL}) { clearance }"
            " }",
            {"id": gid("User", reader.id)},
            token=tenant.tokens[Role.ADMIN],
        )
        assert lowered["data"] == {"updateUser": {"clearance": "INTERNAL"}}, lowered
        hidden = await ws.run(DOCUMENT, variables)
        assert hidden["data"] == {"document": None}
        assert codes(hidden) == ["NOT_FOUND"]
        await _notify(services, tenant, doc)
        assert codes(await _stopped(ws, watching)) == ["NOT_FOUND"]


async def test_a_reclassified_document_is_not_served_again_on_the_same_socket(
    plain: str, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    _, token = await add_user(
        services, tenant, role=Role.REVIEWER, clearance=Classification.INTERNAL
    )
    doc = await add_document(services, tenant, classification=Classification.INTERNAL)
    await _being_analyzed(services, tenant, doc)
    variables = {"id": gid("Document", doc.id)}
    node = "query($id: ID!) { node(id: $id) { ... on Document { filename } } }"
    async with connect(plain, token) as ws:
        watching = await ws.start(PROGRESS, variables)
        assert (await ws.message(watching))["type"] == "next"
        assert (await ws.run(DOCUMENT, variables))["data"]["document"] is not None
        assert (await ws.run(node, variables))["data"]["node"] is not None
        moved = await gql(
            client,
            "mutation($id: ID!) { updateDocument(input: {id: $id, classification: RESTRICTED})"
            " { classification } }",
            variables,
            token=tenant.tokens[Role.ADMIN],
        )
        assert moved["data"] == {"updateDocument": {"classification": "RESTRICTED"}}, moved
        for query, field in ((DOCUMENT, "document"), (node, "node")):
            again = await ws.run(query, variables)
            assert again["data"] == {field: None}, again
            assert codes(again) == ["NOT_FOUND"]
        await _notify(services, tenant, doc)
        assert codes(await _stopped(ws, watching)) == ["NOT_FOUND"]


async def _register(services: Services, source: str) -> dict[str, str]:
    found = split_operations(source, build_schema()._schema)
    async with services.db.transaction(None) as session:
        stored = await register_operations(session, found)
    return {name: digest for name, digest, _ in stored}


def _persisted(digest: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


async def _only_registered_operations_run(address: str, token: str, services: Services) -> None:
    registered = await _register(services, ME)
    other = "query Other { viewer { scopes } }"
    other_hash = hashlib.sha256(other.encode()).hexdigest()
    async with connect(address, token) as ws:
        for query, extensions in (
            ("{ viewer { scopes } }", None),
            (MINT, None),
            ('subscription { documentProgress(id: "x") { processingStatus } }', None),
            # an automatic persisted query is not a registered one
            (other, _persisted(other_hash)),
        ):
            refused = await ws.run(query, extensions=extensions)
            assert refused["data"] is None, (query, refused)
            assert codes(refused) == ["PERSISTED_QUERY_REQUIRED"], (query, refused)
        ran = await ws.run(None, extensions=_persisted(registered["WsMe"]))
        assert ran.get("errors") is None, ran
        assert ran["data"]["viewer"]["scopes"]


async def test_a_bi_token_runs_registered_operations_only_over_websocket(
    plain: str, services: Services, tenant: Tenant
) -> None:
    bi = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="grafana",
        scopes=["bi:read", "documents:read"],
        role=Role.AUDITOR,
    )
    await _only_registered_operations_run(plain, bi.secret, services)


async def test_the_registered_operations_setting_holds_over_websocket(
    safelisted: str, services: Services, tenant: Tenant
) -> None:
    await _only_registered_operations_run(safelisted, tenant.tokens[Role.ADMIN], services)


async def test_persisted_queries_run_over_websocket(
    plain: str, services: Services, tenant: Tenant
) -> None:
    """Automatic persisted queries as over HTTP: the hash alone first (not found), then with
    the text, then the hash alone again."""
    query = f"query Apq{uuid.uuid4().hex[:8]} {{ viewer {{ scopes }} }}"
    digest = hashlib.sha256(query.encode()).hexdigest()
    async with connect(plain, tenant.tokens[Role.VIEWER]) as ws:
        unknown = await ws.run(None, extensions=_persisted(digest))
        assert codes(unknown) == ["PERSISTED_QUERY_NOT_FOUND"]
        sent = await ws.run(query, extensions=_persisted(digest))
        assert sent.get("errors") is None, sent
        again = await ws.run(None, extensions=_persisted(digest))
        assert again["data"] == sent["data"]


async def test_request_limits_apply_to_websocket_operations(
    watchful: str, services: Services, tenant: Tenant
) -> None:
    _, token = await add_user(services, tenant, role=Role.VIEWER, clearance=Classification.INTERNAL)
    inner = "filename"
    for _ in range(4):
        inner = f"sections {{ edges {{ node {{ document {{ {inner} }} }} }} }}"
    nested = f"query($id: ID!) {{ node(id: $id) {{ ... on Document {{ {inner} }} }} }}"
    heavy = """{ documents(first: 100) { edges { node {
      sections(first: 100) { edges { node { analyses { feedbackItems { category } } } } } } } } }"""
    async with connect(watchful, token) as ws:
        too_deep = await ws.run(nested, {"id": gid("Document", tenant.org_id)})
        assert codes(too_deep) == ["QUERY_TOO_COMPLEX"], too_deep
        too_big = await ws.run(heavy)
        assert codes(too_big) == ["QUERY_TOO_COMPLEX"], too_big
        # the bucket holds 60: a page of 30 costs 61
        page = "{ documents(first: 30) { edges { node { filename } } } }"
        limited = await ws.run(page)
        assert codes(limited) == ["RATE_LIMITED"], limited
        assert limited["errors"][0]["extensions"]["retryAfter"] >= 1


async def test_a_document_the_transport_did_not_resolve_is_refused_by_the_schema(
    services: Services, tenant: Tenant
) -> None:
    """The schema's own check (fail closed): a caller held to registered operations whose
    document is not the registered one its transport resolved runs nothing."""
    from prism.authn.bearer import authenticate_bearer
    from prism.execution.context import Context, RequestTransaction
    from prism.models.audit import RequestMeta

    registered = await _register(services, ME)
    bi = await api_tokens.create_token(
        services, OPERATOR, tenant.org_id, name="bi-schema", scopes=["bi:read", "documents:read"]
    )
    principal = await authenticate_bearer(services.db, services.access_tokens, bi.secret)
    schema = build_schema(services.settings)

    def context() -> Context:
        return Context(
            services=services,
            principal=principal,
            meta=RequestMeta(ip_address=None, user_agent=None, request_id=None),
            transaction=RequestTransaction(services.db, tenant.org_id),
        )

    unresolved = await schema.execute(ME, context_value=context())
    assert unresolved.data is None
    assert [e.extensions["code"] for e in unresolved.errors or []] == ["PERSISTED_QUERY_REQUIRED"]
    # resolved by the registry, then swapped for another document: refused as well
    swapped = context()
    await swapped.resolve_operation(None, _persisted(registered["WsMe"]))
    other = await schema.execute("{ viewer { scopes } }", context_value=swapped)
    assert [e.extensions["code"] for e in other.errors or []] == ["PERSISTED_QUERY_REQUIRED"]
    resolved = context()
    operation = await resolved.resolve_operation(None, _persisted(registered["WsMe"]))
    ran = await schema.execute(operation.query, context_value=resolved)
    assert ran.errors is None
    assert ran.data == {"viewer": {"scopes": ["bi:read", "documents:read"]}}


async def test_the_legacy_graphql_ws_protocol_is_not_served(plain: str, tenant: Tenant) -> None:
    """Only graphql-transport-ws, whose operations are each authenticated: the legacy
    protocol's handler would run every operation in the connection's one context."""
    with pytest.raises((websockets.InvalidHandshake, websockets.ConnectionClosed)) as refused:
        async with websockets.connect(
            f"ws://{plain}/graphql", subprotocols=[Subprotocol("graphql-ws")]
        ) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"authorization": f"Bearer {tenant.tokens[Role.VIEWER]}"},
                    }
                )
            )
            await asyncio.wait_for(ws.recv(), 10)
    if isinstance(refused.value, websockets.ConnectionClosed):
        assert refused.value.rcvd is not None
        assert refused.value.rcvd.code == 4406
