"""The `events` subscription: the organization's outbox, live, over graphql-transport-ws.

Real uvicorn servers on the test database and real graphql-transport-ws frames; the changes
are made over HTTP by another app (its own connections), by the job worker of the test
process, or written to the outbox directly. An event arrives after the change that commits
it, in the organization's order, filtered by type and by what the caller may see (clearance,
department, role, token scopes); a stream resumes after the last event id it received, and
says RESUME_POINT_LOST when the outbox no longer holds it; a client that falls behind the
server's buffer is ended with SUBSCRIBER_TOO_SLOW; an ended credential ends the stream; and
nothing of another organization ever arrives."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from prism.audit import OPERATOR
from prism.authz.policy import EVENT_RULES, may_receive_event
from prism.authz.principal import Principal
from prism.config import Settings
from prism.db.engine import url_for_asyncpg
from prism.events import catalog
from prism.events.live import LiveEvents
from prism.models import outbox
from prism.models.enums import Classification, Role
from prism.schema.subscription import TOO_SLOW_CLOSE
from prism.services import Services
from prism.tokens import api_tokens
from prism.web.app import create_app
from tests.factories import Tenant, add_document, add_user, codes, gid, gql, make_tenant
from tests.pipeline_helpers import run_jobs, upload
from tests.test_websocket_auth import Socket, connect

EVENTS = """subscription($types: [String!], $after: ID) {
  events(types: $types, after: $after) {
    id type source subject time sequence classification department data
  }
}"""
RETYPE = (
    "mutation($id: ID!, $t: DocumentType!) { updateDocument(input: {id: $id, documentType: $t})"
    " { documentType } }"
)
# Each retype changes the type (an update that changes nothing records no event).
TYPES = itertools.cycle(["REPORT", "POLICY"])
RECLASSIFY = (
    "mutation($id: ID!, $c: Classification!) { updateDocument(input: {id: $id, "
    "classification: $c}) { id } }"
)
UPDATED = "prism.document.updated"
RECLASSIFIED = "prism.document.reclassified"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def serving(settings: Settings, database_url: str) -> AsyncIterator[tuple[str, Starlette]]:
    """The app under uvicorn on a free local port, in this event loop; its address and app."""
    port = _free_port()
    app = create_app(settings, database_url=database_url)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, "the server did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture(scope="module")
async def server(settings: Settings, database_url: str) -> AsyncIterator[tuple[str, Starlette]]:
    quiet = settings.model_copy(update={"websocket_recheck_seconds": 300})
    async with serving(quiet, database_url) as served:
        yield served


@pytest.fixture
def address(server: tuple[str, Starlette]) -> str:
    return server[0]


@pytest.fixture
def live(server: tuple[str, Starlette]) -> LiveEvents:
    return _live(server[1])


def _live(app: Starlette) -> LiveEvents:
    services: Services = app.state.services
    assert services.live_events is not None
    return services.live_events


async def _event(ws: Socket, op: str, within: float = 10) -> dict[str, Any]:
    """The next event of the subscription ``op`` (failing on an error or its end)."""
    message = await asyncio.wait_for(ws.message(op), within)
    assert message["type"] == "next", message
    assert message["payload"].get("errors") is None, message
    event: dict[str, Any] = message["payload"]["data"]["events"]
    return event


async def _ended(ws: Socket, op: str, within: float = 10) -> list[str]:
    """The codes the subscription ``op`` ended with."""
    message = await asyncio.wait_for(ws.message(op), within)
    if message["type"] == "error":
        return [e["extensions"]["code"] for e in message["payload"]]
    assert message["type"] == "next", message
    assert message["payload"]["data"] is None, message
    assert (await asyncio.wait_for(ws.message(op), within))["type"] == "complete"
    return codes(message["payload"])


async def _nothing(ws: Socket, op: str, within: float) -> None:
    """No message of the subscription ``op`` arrives within ``within`` seconds."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.message(op), within)


async def _subscribed(ws: Socket, live: LiveEvents, variables: dict[str, Any] | None = None) -> str:
    """Subscribe, and return once the stream has joined its organization's reader (what is
    committed from then on reaches it)."""
    joined = live.subscribers
    op = await ws.start(EVENTS, variables or {})
    deadline = time.monotonic() + 10
    while live.subscribers <= joined:
        assert time.monotonic() < deadline, "the subscription did not start"
        await asyncio.sleep(0.01)
    return op


async def _retype(client: httpx.AsyncClient, token: str, document_id: uuid.UUID) -> str:
    variables = {"id": gid("Document", document_id), "t": next(TYPES)}
    body = await gql(client, RETYPE, variables, token=token)
    assert body.get("errors") is None, body
    return str(variables["t"])


async def _reclassify(
    client: httpx.AsyncClient, token: str, document_id: uuid.UUID, classification: str
) -> None:
    body = await gql(
        client,
        RECLASSIFY,
        {"id": gid("Document", document_id), "c": classification},
        token=token,
    )
    assert body.get("errors") is None, body


async def test_an_event_arrives_after_a_mutation_commits(
    address: str, live: LiveEvents, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    async with connect(address, tenant.tokens[Role.VIEWER]) as ws:
        op = await _subscribed(ws, live)
        retyped = await _retype(client, tenant.tokens[Role.REVIEWER], doc.id)
        event = await _event(ws, op)
    assert event["type"] == UPDATED
    assert event["subject"] == f"Document/{doc.id}"
    assert event["source"] == f"/prism/organizations/{tenant.org_id}"
    assert event["classification"] == "INTERNAL"
    assert event["data"]["resourceId"] == str(doc.id)
    assert event["data"]["documentType"] == retyped
    # the same event the outbox holds (and Kafka carries)
    async with services.db.transaction(tenant.org_id) as session:
        rows = await outbox.read_rows(session, tenant.org_id, int(event["sequence"]) - 1, 1)
    stored = json.loads(rows[0].event)
    assert event["id"] == stored["id"]
    assert event["sequence"] == stored["sequence"]
    assert datetime.fromisoformat(event["time"]) == datetime.fromisoformat(stored["time"])


async def test_only_the_types_asked_for_arrive(
    address: str, live: LiveEvents, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    admin = tenant.tokens[Role.ADMIN]
    async with connect(address, admin) as ws:
        op = await _subscribed(ws, live, {"types": [RECLASSIFIED]})
        await _retype(client, admin, doc.id)  # prism.document.updated: not asked for
        await _reclassify(client, admin, doc.id, "CONFIDENTIAL")
        event = await _event(ws, op)
        assert event["type"] == RECLASSIFIED
        assert event["data"]["previous"]["classification"] == "INTERNAL"
        await _nothing(ws, op, 0.5)
        unknown = await ws.run(EVENTS, {"types": ["prism.document.exploded"]})
        assert codes(unknown) == ["BAD_USER_INPUT"]
        # a VIEWER may never read sign-ins (the audit log's): asking for them only is refused
        async with connect(address, tenant.tokens[Role.VIEWER]) as viewer:
            refused = await viewer.run(EVENTS, {"types": ["prism.auth.signed_in"]})
            assert codes(refused) == ["FORBIDDEN"]


async def test_a_stream_resumes_after_the_last_event_it_received(
    address: str, live: LiveEvents, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    reviewer = tenant.tokens[Role.REVIEWER]
    token = tenant.tokens[Role.APPROVER]
    variables: dict[str, Any] = {"types": [UPDATED, RECLASSIFIED]}
    async with connect(address, token) as ws:
        op = await _subscribed(ws, live, variables)
        await _retype(client, reviewer, doc.id)
        first = await _event(ws, op)
    # while disconnected: two more changes
    await _reclassify(client, token, doc.id, "CONFIDENTIAL")
    await _retype(client, reviewer, doc.id)
    async with connect(address, token) as ws:
        op = await ws.start(EVENTS, {**variables, "after": first["id"]})
        second = await _event(ws, op)
        third = await _event(ws, op)
        assert [second["type"], third["type"]] == [RECLASSIFIED, UPDATED]
        assert int(first["sequence"]) < int(second["sequence"]) < int(third["sequence"])
        # and then live: the next change follows the replay
        await _reclassify(client, token, doc.id, "INTERNAL")
        fourth = await _event(ws, op)
        assert fourth["type"] == RECLASSIFIED
        assert int(fourth["sequence"]) > int(third["sequence"])


async def test_a_lost_resume_point_is_said_not_skipped(
    address: str,
    live: LiveEvents,
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    database_url: str,
) -> None:
    doc = await add_document(services, tenant)
    token = tenant.tokens[Role.ADMIN]
    async with connect(address, token) as ws:
        never = await ws.start(EVENTS, {"after": str(uuid.uuid4())})
        assert await _ended(ws, never) == ["RESUME_POINT_LOST"]
        op = await _subscribed(ws, live, {"types": [UPDATED]})
        await _retype(client, token, doc.id)
        seen = await _event(ws, op)
    # The outbox prunes the event (as prism_outbox_prune does after the retention window).
    conn = await asyncpg.connect(url_for_asyncpg(database_url))
    try:
        await conn.execute(
            "DELETE FROM outbox_events WHERE organization_id = $1 AND sequence <= $2",
            tenant.org_id,
            int(seen["sequence"]),
        )
    finally:
        await conn.close()
    async with connect(address, token) as ws:
        pruned = await ws.start(EVENTS, {"after": seen["id"]})
        assert await _ended(ws, pruned) == ["RESUME_POINT_LOST"]
        # a resume point that is still there, with events after it pruned: not skipped either
        op = await _subscribed(ws, live, {"types": [UPDATED]})
        await _retype(client, token, doc.id)
        kept = await _event(ws, op)
        await _retype(client, token, doc.id)
        await _retype(client, token, doc.id)
        await _event(ws, op)
        await _event(ws, op)
    conn = await asyncpg.connect(url_for_asyncpg(database_url))
    try:
        await conn.execute(
            "DELETE FROM outbox_events WHERE organization_id = $1 AND sequence = $2",
            tenant.org_id,
            int(kept["sequence"]) + 1,
        )
    finally:
        await conn.close()
    async with connect(address, token) as ws:
        gap = await ws.start(EVENTS, {"after": kept["id"]})
        assert await _ended(ws, gap) == ["RESUME_POINT_LOST"]
        assert codes(await ws.run(EVENTS, {"after": "not-an-id"})) == ["BAD_USER_INPUT"]


async def test_events_above_the_clearance_or_outside_the_department_do_not_arrive(
    address: str, live: LiveEvents, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    _, internal = await add_user(
        services, tenant, role=Role.REVIEWER, clearance=Classification.INTERNAL
    )
    _, restricted_hr = await add_user(
        services, tenant, role=Role.REVIEWER, clearance=Classification.RESTRICTED, department="hr"
    )
    public = await add_document(services, tenant, classification=Classification.PUBLIC)
    confidential = await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    restricted = await add_document(
        services, tenant, classification=Classification.RESTRICTED, department="legal"
    )
    admin = tenant.tokens[Role.ADMIN]
    async with (
        connect(address, internal) as low,
        connect(address, restricted_hr) as hr,
        connect(address, admin) as top,
    ):
        ops = [await _subscribed(s, live) for s in (low, hr, top)]
        for doc in (confidential, restricted, public):
            await _retype(client, admin, doc.id)
        # the admin (RESTRICTED, every department) sees all three, in order
        seen = [await _event(top, ops[2]) for _ in range(3)]
        assert [e["subject"] for e in seen] == [
            f"Document/{d.id}" for d in (confidential, restricted, public)
        ]
        # INTERNAL clearance: the PUBLIC document's only
        assert (await _event(low, ops[0]))["subject"] == f"Document/{public.id}"
        # RESTRICTED of another department: CONFIDENTIAL and PUBLIC, not legal's RESTRICTED
        got = [(await _event(hr, ops[1]))["subject"] for _ in range(2)]
        assert got == [f"Document/{confidential.id}", f"Document/{public.id}"]
        await _nothing(low, ops[0], 0.3)
        await _nothing(hr, ops[1], 0.3)


async def test_a_lowered_clearance_narrows_a_running_stream(
    address: str, live: LiveEvents, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    reader, token = await add_user(
        services, tenant, role=Role.REVIEWER, clearance=Classification.CONFIDENTIAL
    )
    confidential = await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    public = await add_document(services, tenant, classification=Classification.PUBLIC)
    admin = tenant.tokens[Role.ADMIN]
    async with connect(address, token) as ws:
        op = await _subscribed(ws, live, {"types": [UPDATED]})
        await _retype(client, admin, confidential.id)
        assert (await _event(ws, op))["subject"] == f"Document/{confidential.id}"
        lowered = await gql(
            client,
            "mutation($id: ID!) { updateUser(input: {id: $id, clearance: INTERNAL}) { clearance }"
            " }",
            {"id": gid("User", reader.id)},
            token=admin,
        )
        assert lowered["data"] == {"updateUser": {"clearance": "INTERNAL"}}, lowered
        await _retype(client, admin, confidential.id)
        await _retype(client, admin, public.id)
        # the CONFIDENTIAL document's second event is not delivered any more
        assert (await _event(ws, op))["subject"] == f"Document/{public.id}"


async def test_what_a_role_or_a_token_may_not_read_does_not_arrive(
    address: str, live: LiveEvents, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    no_scope = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="no events",
        scopes=["documents:read"],
        user_email=tenant.email(Role.ADMIN),
    )
    documents_only = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="document events",
        scopes=["documents:read", "events:read"],
        user_email=tenant.email(Role.ADMIN),
    )
    async with connect(address, no_scope.secret) as ws:
        assert codes(await ws.run(EVENTS)) == ["FORBIDDEN"]
    async with (
        connect(address, documents_only.secret) as partner,
        connect(address, tenant.tokens[Role.VIEWER]) as viewer,
        connect(address, tenant.tokens[Role.AUDITOR]) as auditor,
    ):
        ops = [await _subscribed(s, live) for s in (partner, viewer, auditor)]
        # a token change (the audit log's) and then a document change
        made = await gql(
            client,
            'mutation { createApiToken(input: {name: "t", scopes: ["documents:read"]}) { token } }',
            token=tenant.tokens[Role.REVIEWER],
        )
        assert made.get("errors") is None, made
        await _retype(client, tenant.tokens[Role.REVIEWER], doc.id)
        # the AUDITOR (audit:read) sees the token's creation first; the others do not
        assert (await _event(auditor, ops[2]))["type"] == "prism.token.created"
        assert (await _event(auditor, ops[2]))["type"] == UPDATED
        # an ADMIN's token without audit:read, and a VIEWER: the document's event only
        assert (await _event(partner, ops[0]))["type"] == UPDATED
        assert (await _event(viewer, ops[1]))["type"] == UPDATED


async def test_a_revoked_token_ends_its_stream(
    address: str, live: LiveEvents, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    created = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="revoked",
        scopes=["documents:read", "events:read"],
        user_email=tenant.email(Role.REVIEWER),
    )
    admin = tenant.tokens[Role.ADMIN]
    async with connect(address, created.secret) as ws:
        op = await _subscribed(ws, live, {"types": [UPDATED]})
        await _retype(client, admin, doc.id)
        assert (await _event(ws, op))["type"] == UPDATED
        revoked = await gql(
            client,
            "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }",
            {"id": gid("ApiToken", created.token.id)},
            token=admin,
        )
        assert revoked.get("errors") is None, revoked
        await _retype(client, admin, doc.id)
        assert await _ended(ws, op) == ["UNAUTHENTICATED"]


async def test_an_idle_stream_of_an_ended_credential_is_closed(
    settings: Settings, database_url: str, client: httpx.AsyncClient, services: Services
) -> None:
    tenant = await make_tenant(services)
    created = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="idle",
        scopes=["documents:read", "events:read"],
        user_email=tenant.email(Role.REVIEWER),
    )
    watchful = settings.model_copy(update={"websocket_recheck_seconds": 0.5})
    async with (
        serving(watchful, database_url) as (address, app),
        connect(address, created.secret) as ws,
    ):
        # a type nothing here makes: the stream stays idle, and the socket's re-check ends it
        await _subscribed(ws, _live(app), {"types": ["prism.document.erased"]})
        revoked = await gql(
            client,
            "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }",
            {"id": gid("ApiToken", created.token.id)},
            token=tenant.tokens[Role.ADMIN],
        )
        assert revoked.get("errors") is None, revoked
        assert await ws.closed(within=5) == 4401


async def test_a_change_made_by_the_worker_arrives(
    address: str, live: LiveEvents, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.ADMIN]
    async with connect(address, token) as ws:
        op = await _subscribed(
            ws, live, {"types": ["prism.document.uploaded", "prism.document.processed"]}
        )
        sent = await upload(
            client, tenant.tokens[Role.REVIEWER], "worker.txt", b"Payment is due in 30 days.\n"
        )
        assert sent.status_code == 200, sent.text
        uploaded = await _event(ws, op)
        assert uploaded["type"] == "prism.document.uploaded"
        # the job worker of this process: its own engine and connections
        assert await run_jobs(services) >= 1
        processed = await _event(ws, op, within=30)
    assert processed["type"] == "prism.document.processed"
    assert processed["subject"] == uploaded["subject"]
    assert processed["data"]["sections"] >= 1


async def test_another_organization_s_events_never_arrive(
    address: str,
    live: LiveEvents,
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    mine = await add_document(services, tenant)
    theirs = await add_document(services, other_tenant)
    async with connect(address, tenant.tokens[Role.ADMIN]) as ws:
        op = await _subscribed(ws, live)
        await _retype(client, other_tenant.tokens[Role.ADMIN], theirs.id)
        await _retype(client, tenant.tokens[Role.ADMIN], mine.id)
        event = await _event(ws, op)
        assert event["subject"] == f"Document/{mine.id}"
        assert event["source"] == f"/prism/organizations/{tenant.org_id}"
        await _nothing(ws, op, 0.5)
    # the other organization's event id is no resume point (row-level security)
    async with services.db.transaction(other_tenant.org_id) as session:
        head = await outbox.head_sequence(session, other_tenant.org_id)
        (theirs_event,) = await outbox.read_rows(session, other_tenant.org_id, head - 1, 1)
    async with connect(address, tenant.tokens[Role.ADMIN]) as ws:
        resumed = await ws.start(EVENTS, {"after": str(theirs_event.id)})
        assert await _ended(ws, resumed) == ["RESUME_POINT_LOST"]


async def test_one_reader_per_organization_feeds_every_subscriber(
    server: tuple[str, Starlette], client: httpx.AsyncClient, services: Services
) -> None:
    address, app = server
    live = _live(app)
    tenant = await make_tenant(services)
    doc = await add_document(services, tenant)
    tokens = [tenant.tokens[r] for r in (Role.ADMIN, Role.APPROVER, Role.VIEWER)]
    async with (
        connect(address, tokens[0]) as a,
        connect(address, tokens[1]) as b,
        connect(address, tokens[2]) as c,
    ):
        ops = [await _subscribed(s, live, {"types": [UPDATED]}) for s in (a, b, c)]
        before = live.reads
        await _retype(client, tenant.tokens[Role.REVIEWER], doc.id)
        ids = {(await _event(s, o))["id"] for s, o in zip((a, b, c), ops, strict=True)}
        assert len(ids) == 1
        # the event's row was read once for the three (other tests' organizations aside)
        assert live.reads - before == 1
    # the sockets gone, their streams leave the reader (nothing is kept for them)
    deadline = time.monotonic() + 5
    while live.subscribers:
        assert time.monotonic() < deadline, "subscribers left behind"
        await asyncio.sleep(0.01)


async def test_a_burst_reaches_a_client_that_keeps_up(
    settings: Settings, database_url: str, services: Services
) -> None:
    """A burst larger than the buffer: the reader waits for the client to take what it holds,
    and every event arrives, in order."""
    tenant = await make_tenant(services)
    small = settings.model_copy(
        update={"websocket_recheck_seconds": 300, "events_subscription_buffer": 5}
    )
    async with (
        serving(small, database_url) as (address, app),
        connect(address, tenant.tokens[Role.ADMIN]) as ws,
    ):
        op = await _subscribed(ws, _live(app))
        async with services.db.transaction(tenant.org_id) as session:
            for _ in range(40):
                await outbox.append_event(session, _snapshot(tenant.org_id))
        got = [int((await _event(ws, op))["sequence"]) for _ in range(40)]
        assert got == list(range(got[0], got[0] + 40))


async def test_a_client_that_does_not_read_is_disconnected_and_memory_stays_bounded(
    settings: Settings, database_url: str, services: Services
) -> None:
    tenant = await make_tenant(services)
    small = settings.model_copy(
        update={"websocket_recheck_seconds": 300, "events_subscription_buffer": 5}
    )
    written = 0
    async with serving(small, database_url) as (address, app):
        live = _live(app)
        joined = live.subscribers
        client = await RawClient.open(address, tenant.tokens[Role.ADMIN])
        try:
            client.send({"id": "1", "type": "subscribe", "payload": {"query": EVENTS}})
            deadline = time.monotonic() + 10
            while live.subscribers <= joined:
                assert time.monotonic() < deadline, "the subscription did not start"
                await asyncio.sleep(0.01)
            # The client reads nothing: its socket fills, the server's sends wait, the
            # subscriber's buffer fills, and the socket is closed. Events are committed until
            # it is.
            deadline = time.monotonic() + 60
            while live.subscribers > joined:
                assert time.monotonic() < deadline, "the subscriber was never ended"
                async with services.db.transaction(tenant.org_id) as session:
                    for _ in range(200):
                        await outbox.append_event(session, _big_snapshot(tenant.org_id))
                written += 200
                await asyncio.sleep(0.1)
            # Now read: the events that were on their way, then the close frame and its code.
            frames = await client.read_all()
        finally:
            client.close()
    delivered = [f for f in frames if f[0] == 1 and json.loads(f[1])["type"] == "next"]
    assert 0 < len(delivered) < written
    closing = [f for f in frames if f[0] == 8]
    assert closing, frames[-3:]
    assert int.from_bytes(closing[0][1][:2], "big") == TOO_SLOW_CLOSE
    assert closing[0][1][2:] == b"SUBSCRIBER_TOO_SLOW"


class RawClient:
    """A graphql-transport-ws client on a bare socket with a small receive buffer: after its
    handshake it reads nothing until asked, so only the kernel's buffers hold what the server
    sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def open(cls, address: str, token: str) -> RawClient:
        host, port = address.split(":")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(raw, (host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /graphql HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        )
        await loop.sock_sendall(raw, request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await asyncio.wait_for(loop.sock_recv(raw, 1), 10)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        client = cls(raw)
        client.send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        # the ack: read byte by byte, so nothing after it is taken off the socket
        header = await client._exactly(2)
        ack = await client._exactly(header[1] & 0x7F)
        assert json.loads(ack)["type"] == "connection_ack", ack
        return client

    def send(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        assert len(payload) < 65536
        mask = os.urandom(4)
        size = (
            bytes([0x80 | len(payload)])
            if len(payload) < 126
            else bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
        )
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.setblocking(True)
        self.sock.sendall(bytes([0x81]) + size + mask + body)
        self.sock.setblocking(False)

    async def _exactly(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        data = b""
        while len(data) < n:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, n - len(data)), 10)
            assert chunk, "closed"
            data += chunk
        return data

    async def read_all(self) -> list[tuple[int, bytes]]:
        """Every frame until the server's close frame (or the end of the stream)."""
        frames: list[tuple[int, bytes]] = []
        while True:
            try:
                first = await self._exactly(2)
            except AssertionError:
                return frames
            size = first[1] & 0x7F
            if size == 126:
                size = int.from_bytes(await self._exactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await self._exactly(8), "big")
            frames.append((first[0] & 0x0F, await self._exactly(size)))
            if frames[-1][0] == 8:
                return frames

    def close(self) -> None:
        self.sock.close()


def _snapshot(organization_id: uuid.UUID) -> outbox.Draft:
    return catalog.envelope(
        event_id=uuid.uuid4(),
        organization_id=organization_id,
        type=catalog.METRICS_SNAPSHOT,
        topic=catalog.SYSTEM_METRICS,
        time=datetime.now(UTC),
        subject=None,
        classification=None,
        department=None,
        data={"organizationId": str(organization_id)},
    )


def _big_snapshot(organization_id: uuid.UUID) -> outbox.Draft:
    """A metrics snapshot of many figures (a few KiB): sockets fill sooner."""
    draft = _snapshot(organization_id)
    draft.event["data"]["jobs"] = {f"kind{n}": {"QUEUED": n} for n in range(100)}
    return draft


# --- the policy of each event type -----------------------------------------------------------


def test_every_event_type_the_catalog_makes_has_a_rule() -> None:
    assert set(EVENT_RULES) == catalog.TYPES


def _principal(
    role: Role,
    clearance: Classification,
    department: str | None = "legal",
    scopes: frozenset[str] | None = None,
) -> Principal:
    return Principal(
        organization_id=ORG,
        user_id=uuid.uuid4(),
        api_token_id=None if scopes is None else uuid.uuid4(),
        role=role,
        clearance=clearance,
        department=department,
        scopes=scopes,
    )


ORG = uuid.uuid4()


def _receives(
    principal: Principal,
    event_type: str,
    classification: Classification | None = None,
    department: str | None = None,
    organization_id: uuid.UUID = ORG,
) -> bool:
    return may_receive_event(
        principal,
        organization_id=organization_id,
        event_type=event_type,
        classification=classification,
        department=department,
    )


def test_each_event_is_decided_like_a_read_of_what_it_concerns() -> None:
    admin = _principal(Role.ADMIN, Classification.RESTRICTED)
    admin_confidential = _principal(Role.ADMIN, Classification.CONFIDENTIAL)
    viewer = _principal(Role.VIEWER, Classification.INTERNAL)
    auditor = _principal(Role.AUDITOR, Classification.CONFIDENTIAL)
    processed = "prism.document.processed"
    assert _receives(viewer, processed, Classification.INTERNAL)
    assert not _receives(viewer, processed, Classification.CONFIDENTIAL)
    # a document event without a classification is read as RESTRICTED of no department
    assert not _receives(viewer, processed)
    assert not _receives(admin_confidential, processed)
    assert _receives(admin, processed)
    # another organization's, never
    assert not _receives(admin, processed, Classification.PUBLIC, organization_id=uuid.uuid4())
    # the audit log's events: AUDIT_READ
    assert _receives(auditor, "prism.auth.signed_in")
    assert not _receives(viewer, "prism.auth.signed_in")
    # who opened an original is the document's audit trail: its classification counts
    assert _receives(auditor, "prism.document.original_read", Classification.CONFIDENTIAL)
    assert not _receives(auditor, "prism.document.original_read", Classification.RESTRICTED)
    # figures over every document: an ADMIN cleared for RESTRICTED
    assert _receives(admin, catalog.METRICS_SNAPSHOT)
    assert not _receives(auditor, catalog.METRICS_SNAPSHOT)
    assert not _receives(admin_confidential, "prism.lifecycle.purged")
    # a type without a rule: nobody (fail closed)
    assert not _receives(admin, "prism.document.exploded", Classification.PUBLIC)
    # a token needs events:read, and the scope of the event's own action
    token = frozenset({"documents:read"})
    assert not _receives(
        _principal(Role.ADMIN, Classification.RESTRICTED, scopes=token),
        processed,
        Classification.PUBLIC,
    )
    reader = _principal(Role.ADMIN, Classification.RESTRICTED, scopes=token | {"events:read"})
    assert _receives(reader, processed, Classification.PUBLIC)
    assert not _receives(reader, "prism.auth.signed_in")
