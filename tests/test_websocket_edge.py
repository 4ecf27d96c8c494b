"""A WebSocket message is held to what an HTTP request is held to, before it is parsed.

Real uvicorn, real graphql-transport-ws frames. A message larger than an HTTP JSON body may
be is refused whole (close 4400) without being decoded; a subscribe whose payload HTTP would
refuse (query, variables, extensions or operationName of the wrong type, no document, an
operation name the document lacks) is answered with an `error` message coded
BAD_USER_INPUT, the same text as over HTTP, and nothing is logged as a server fault; a
message that is not a protocol message (no string id, payload not an object) closes the
socket with 4400, the protocol's answer for a malformed message."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from prism.config import Settings
from prism.models.documents import Document
from prism.models.enums import ProcessingStatus, Role
from prism.services import Services
from prism.web.edge import MAX_JSON_BODY
from tests.factories import Tenant, add_document, gid
from tests.test_websocket_auth import serving

TYPENAME = "query Named { __typename }"


@pytest.fixture(scope="module")
async def address(settings: Settings, database_url: str) -> AsyncIterator[str]:
    quiet = settings.model_copy(update={"websocket_recheck_seconds": 300})
    async with serving(quiet, database_url) as served:
        yield served


async def _open(address: str, token: str) -> websockets.ClientConnection:
    ws = await websockets.connect(
        f"ws://{address}/graphql",
        subprotocols=[Subprotocol("graphql-transport-ws")],
        max_size=None,
    )
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    )
    ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ack["type"] == "connection_ack", ack
    return ws


async def _closed(ws: websockets.ClientConnection, within: float = 10) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(within):
            while True:
                message = json.loads(await ws.recv())
                assert message.get("type") in {"ping", "pong"}, message
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def _answer(ws: websockets.ClientConnection, op: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            message = json.loads(await ws.recv())
            if message.get("id") == op:
                return dict(message)


async def _http(address: str, token: str, body: object) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"http://{address}/graphql",
            content=json.dumps(body),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        )


# --- size -------------------------------------------------------------------------------------


async def test_a_message_larger_than_an_http_body_is_refused_before_it_is_parsed(
    address: str, tenant: Tenant
) -> None:
    """15 MB of comment before `{ __typename }`: over HTTP a 413, over a WebSocket a 4400
    close, fast: the document is never parsed (it stalled the event loop for seconds)."""
    token = tenant.tokens[Role.VIEWER]
    padding = "#" + "a" * 15_000_000 + "\n{ __typename }"
    big = {"id": "1", "type": "subscribe", "payload": {"query": padding}}
    ws = await _open(address, token)
    started = time.perf_counter()
    await ws.send(json.dumps(big))
    code, reason = await _closed(ws)
    assert code == 4400
    assert str(MAX_JSON_BODY) in reason
    assert time.perf_counter() - started < 2
    over_http = await _http(address, token, {"query": padding})
    assert over_http.status_code == 413
    assert over_http.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_the_limit_is_the_http_body_limit_in_bytes(address: str, tenant: Tenant) -> None:
    """Just under the limit runs; one byte over is refused, counted in UTF-8 bytes (a
    message of multi-byte characters is not four times as large as an ASCII one may be)."""
    token = tenant.tokens[Role.VIEWER]

    def message(filler: str, size: int) -> str:
        head = '{"id":"1","type":"subscribe","payload":{"query":"#'
        tail = '\\n{ __typename }"}}'
        room = size - len(head.encode()) - len(tail.encode())
        text = head + filler * (room // len(filler.encode())) + tail
        assert len(text.encode()) == size, (len(text.encode()), size)
        return text

    ws = await _open(address, token)
    await ws.send(message("a", MAX_JSON_BODY))
    answer = await _answer(ws, "1")
    assert answer["type"] == "next", str(answer)[:300]
    assert answer["payload"]["data"] == {"__typename": "Query"}
    await ws.close()

    ws = await _open(address, token)
    await ws.send(message("a", MAX_JSON_BODY + 1))
    assert (await _closed(ws))[0] == 4400

    ws = await _open(address, token)
    wide = json.dumps(
        {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": "#" + "\u00e9" * (MAX_JSON_BODY // 2)},
        },
        ensure_ascii=False,
    )
    assert len(wide) < MAX_JSON_BODY < len(wide.encode())
    await ws.send(wide)
    assert (await _closed(ws))[0] == 4400


# --- payload shapes ---------------------------------------------------------------------------

_REFUSED_PAYLOADS: list[tuple[str, dict[str, Any]]] = [
    ("query a number", {"query": 5}),
    ("query an object", {"query": {"q": "{ __typename }"}}),
    ("variables a list", {"query": TYPENAME, "variables": [1]}),
    ("variables a string", {"query": TYPENAME, "variables": "{}"}),
    ("variables a number", {"query": TYPENAME, "variables": 7}),
    ("extensions a list", {"query": TYPENAME, "extensions": []}),
    ("extensions a string", {"query": TYPENAME, "extensions": "x"}),
    ("operationName a number", {"query": TYPENAME, "operationName": 5}),
    ("operationName a list", {"query": TYPENAME, "operationName": ["Named"]}),
    ("no query", {}),
    ("no query, empty extensions", {"extensions": {}}),
    ("unknown operationName", {"query": TYPENAME, "operationName": "Other"}),
    ("no operation", {"query": "fragment F on Query { __typename }"}),
]


@pytest.mark.parametrize(
    ("case", "payload"), _REFUSED_PAYLOADS, ids=[c for c, _ in _REFUSED_PAYLOADS]
)
async def test_a_payload_http_refuses_is_a_coded_client_error_over_websocket(
    address: str, tenant: Tenant, case: str, payload: dict[str, Any], caplog: Any
) -> None:
    token = tenant.tokens[Role.VIEWER]
    over_http = await _http(address, token, payload)
    assert over_http.status_code == 400, (case, over_http.text)
    http_error = over_http.json()["errors"][0]
    assert http_error["extensions"]["code"] == "BAD_USER_INPUT", over_http.text

    caplog.set_level(logging.WARNING)
    ws = await _open(address, token)
    await ws.send(json.dumps({"id": "op", "type": "subscribe", "payload": payload}))
    answer = await _answer(ws, "op")
    assert answer["type"] == "error", answer
    [error] = answer["payload"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", answer
    assert error["message"] == http_error["message"]
    # the socket is still usable, and nothing was logged as a fault of the server
    await ws.send(json.dumps({"id": "next", "type": "subscribe", "payload": {"query": TYPENAME}}))
    assert (await _answer(ws, "next"))["payload"]["data"] == {"__typename": "Query"}
    await ws.close()
    faults = [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert faults == [], [r.getMessage() for r in faults]


_REFUSED_MESSAGES: list[tuple[str, dict[str, Any]]] = [
    ("id a number", {"id": 5, "type": "subscribe", "payload": {"query": TYPENAME}}),
    ("id null", {"id": None, "type": "subscribe", "payload": {"query": TYPENAME}}),
    ("id an object", {"id": {"a": 1}, "type": "subscribe", "payload": {"query": TYPENAME}}),
    ("id empty", {"id": "", "type": "subscribe", "payload": {"query": TYPENAME}}),
    ("no id", {"type": "subscribe", "payload": {"query": TYPENAME}}),
    ("no payload", {"id": "1", "type": "subscribe"}),
    ("payload null", {"id": "1", "type": "subscribe", "payload": None}),
    ("payload a list", {"id": "1", "type": "subscribe", "payload": [TYPENAME]}),
    ("complete without id", {"type": "complete"}),
    ("complete with a number id", {"type": "complete", "id": 5}),
]


@pytest.mark.parametrize(
    ("case", "message"), _REFUSED_MESSAGES, ids=[c for c, _ in _REFUSED_MESSAGES]
)
async def test_a_malformed_protocol_message_closes_the_socket_with_4400(
    address: str, tenant: Tenant, case: str, message: dict[str, Any], caplog: Any
) -> None:
    caplog.set_level(logging.WARNING)
    ws = await _open(address, tenant.tokens[Role.VIEWER])
    await ws.send(json.dumps(message))
    code, reason = await _closed(ws)
    assert code == 4400, (case, code, reason)
    faults = [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert faults == [], [r.getMessage() for r in faults]


async def test_an_id_in_use_closes_the_socket_with_4409(
    address: str, services: Services, tenant: Tenant
) -> None:
    document = await add_document(services, tenant)
    async with services.db.transaction(tenant.org_id) as session:
        row = await session.get(Document, document.id)
        assert row is not None
        row.processing_status = ProcessingStatus.ANALYZING
    ws = await _open(address, tenant.tokens[Role.VIEWER])
    progress = "subscription($id: ID!) { documentProgress(id: $id) { processingStatus } }"
    running = {"query": progress, "variables": {"id": gid("Document", document.id)}}
    await ws.send(json.dumps({"id": "same", "type": "subscribe", "payload": running}))
    await asyncio.sleep(0.3)
    await ws.send(json.dumps({"id": "same", "type": "subscribe", "payload": running}))
    code, _ = await _closed_ignoring_errors(ws)
    assert code == 4409


async def _closed_ignoring_errors(ws: websockets.ClientConnection) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.parametrize("text", ["5", "[]", '"subscribe"', "null", '{"type": 5}', "{}"])
async def test_a_message_that_is_not_an_object_with_a_type_closes_the_socket_with_4400(
    address: str, tenant: Tenant, text: str, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING)
    ws = await _open(address, tenant.tokens[Role.VIEWER])
    await ws.send(text)
    assert (await _closed(ws))[0] == 4400
    faults = [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert faults == [], [r.getMessage() for r in faults]


async def test_a_document_that_does_not_parse_ends_its_operation_not_the_socket(
    address: str, services: Services, tenant: Tenant
) -> None:
    """A syntax error is that operation's coded error; a subscription running on the same
    socket goes on (Strawberry closed the socket, every operation with it)."""
    document = await add_document(services, tenant)
    async with services.db.transaction(tenant.org_id) as session:
        row = await session.get(Document, document.id)
        assert row is not None
        row.processing_status = ProcessingStatus.ANALYZING
    ws = await _open(address, tenant.tokens[Role.VIEWER])
    progress = "subscription($id: ID!) { documentProgress(id: $id) { processingStatus } }"
    running = {"query": progress, "variables": {"id": gid("Document", document.id)}}
    await ws.send(json.dumps({"id": "sub", "type": "subscribe", "payload": running}))
    await asyncio.sleep(0.3)
    await ws.send(json.dumps({"id": "bad", "type": "subscribe", "payload": {"query": "{ nope("}}))
    answer = await _answer(ws, "bad")
    assert answer["type"] == "error", answer
    [error] = answer["payload"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", answer
    assert error["message"].startswith("Syntax Error")
    await ws.send(json.dumps({"id": "after", "type": "subscribe", "payload": {"query": TYPENAME}}))
    assert (await _answer(ws, "after"))["payload"]["data"] == {"__typename": "Query"}
    # the subscription is still there: its id is still in use
    await ws.send(json.dumps({"id": "sub", "type": "subscribe", "payload": running}))
    assert (await _closed_ignoring_errors(ws))[0] == 4409


# --- sockets per credential -------------------------------------------------------------------


async def test_a_credential_holds_a_bounded_number_of_open_sockets(
    settings: Settings, database_url: str, tenant: Tenant
) -> None:
    """Two per credential here: the third socket of one token is closed with 4429 after its
    connection_init; another credential is not affected; a closed socket frees its place."""
    update = {"websocket_recheck_seconds": 300, "websocket_max_sockets_per_credential": 2}
    async with serving(settings.model_copy(update=update), database_url) as served:
        token = tenant.tokens[Role.VIEWER]
        first = await _open(served, token)
        second = await _open(served, token)
        third = await websockets.connect(
            f"ws://{served}/graphql", subprotocols=[Subprotocol("graphql-transport-ws")]
        )
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        await third.send(json.dumps(init))
        code, reason = await _closed(third)
        assert code == 4429
        assert "2 open WebSockets" in reason
        other = await _open(served, tenant.tokens[Role.REVIEWER])
        # the two open sockets still work
        for ws in (first, second, other):
            await ws.send(
                json.dumps({"id": "q", "type": "subscribe", "payload": {"query": TYPENAME}})
            )
            assert (await _answer(ws, "q"))["payload"]["data"] == {"__typename": "Query"}
        await first.close()
        async with asyncio.timeout(10):
            while True:  # the server sees the close soon after
                try:
                    again = await _open(served, token)
                    break
                except (AssertionError, websockets.ConnectionClosed):
                    await asyncio.sleep(0.1)
        await again.close()
        await second.close()
        await other.close()
