"""Input bounds at the edge: whatever a client sends, on whichever transport, a value that is
too deep, too long, or not text answers BAD_USER_INPUT saying why, never INTERNAL. The bounds
hold for every list and string position of the schema (walked from the schema itself)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from graphql import GraphQLNonNull
from websockets.typing import Subprotocol

from prism.execution.inputs import MAX_LIST_LENGTH, MAX_NESTING, MAX_STRING_LENGTH
from prism.models.enums import Role
from prism.schema import build_schema
from tests.factories import Tenant, codes, gql
from tests.schema_inputs import SCHEMA, Position, list_positions, string_positions, valid_value

AUDIT_BY_TYPE = "query($e: [String!]) { auditLog(filter: {eventType: $e}) { edges { cursor } } }"


async def send(
    client: httpx.AsyncClient,
    query: str,
    variables: Any = None,
    token: str | None = None,
) -> dict[str, Any]:
    """POST with the standard library's JSON (it escapes what httpx cannot encode)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    payload = json.dumps({"query": query, "variables": variables}).encode()
    response = await client.post("/graphql", content=payload, headers=headers)
    body: dict[str, Any] = response.json()
    body["_status"] = response.status_code
    return body


def refused(body: dict[str, Any], *words: str) -> bool:
    """Refused as bad input, with a message that says why."""
    errors = body.get("errors") or []
    return (
        body["_status"] < 500
        and len(errors) == 1
        and errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        and all(word in errors[0]["message"] for word in words)
    )


# --- The reported cases -------------------------------------------------------------------


async def test_a_list_past_postgresqls_bind_parameters_is_bad_input(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = await send(client, AUDIT_BY_TYPE, {"e": ["x"] * 40_000}, tenant.tokens[Role.ADMIN])
    assert refused(body, "$e", "40000", str(MAX_LIST_LENGTH)), body


async def test_a_lone_surrogate_is_bad_input_wherever_it_is_written(
    client: httpx.AsyncClient,
) -> None:
    login = 'mutation($e: String!) { login(input: {email: $e, password: "x"}) { accessToken } }'
    as_variable = await send(client, login, {"e": "\ud800@example.com"})
    assert refused(as_variable, "not valid JSON"), as_variable
    # In the document: escaped for GraphQL (the JSON is fine), then raw in the JSON.
    for literal in ("\\ud800", "\ud800"):
        document = (
            'mutation { login(input: {email: "' + literal + '@example.com", password: "x"}) '
            "{ accessToken } }"
        )
        body = await send(client, document)
        assert body["_status"] < 500, body
        assert codes(body) == ["BAD_USER_INPUT"], body


@pytest.mark.parametrize("depth", [MAX_NESTING + 8, 1_100, 100_000])
@pytest.mark.parametrize("where", ["variables", "extensions", "unused variable"])
async def test_deep_json_in_a_post_body_is_bad_input(
    client: httpx.AsyncClient, tenant: Tenant, depth: int, where: str
) -> None:
    deep = "[" * depth + "]" * depth
    query = json.dumps(AUDIT_BY_TYPE)
    raw = {
        "variables": f'{{"query": {query}, "variables": {{"e": {deep}}}}}',
        "extensions": f'{{"query": {query}, "extensions": {deep}}}',
        "unused variable": f'{{"query": {query}, "variables": {{"zzz": {deep}}}}}',
    }[where]
    response = await client.post(
        "/graphql",
        content=raw.encode(),
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {tenant.tokens[Role.ADMIN]}",
        },
    )
    assert response.status_code == 400
    assert refused({**response.json(), "_status": 400}, "JSON"), response.text


@pytest.mark.parametrize("parameter", ["variables", "extensions"])
async def test_deep_json_in_a_get_query_string_is_bad_input(
    client: httpx.AsyncClient, tenant: Tenant, parameter: str
) -> None:
    deep = "[" * 5_000 + "]" * 5_000
    response = await client.get(
        "/graphql",
        params={"query": "{ viewer { user { id } } }", parameter: f'{{"e": {deep}}}'},
        headers={"authorization": f"Bearer {tenant.tokens[Role.ADMIN]}"},
    )
    assert response.status_code == 400
    assert refused({**response.json(), "_status": 400}, "nests deeper"), response.text


@pytest.mark.parametrize("part", ["operations", "map"])
async def test_deep_json_in_multipart_fields_is_bad_input(
    client: httpx.AsyncClient, tenant: Tenant, part: str
) -> None:
    deep = "[" * 2_000 + "]" * 2_000
    operations = json.dumps(
        {
            "query": "mutation($f: Upload!) { uploadDocument(input: {file: $f}) { document "
            "{ id } } }",
            "variables": {"f": None},
        }
    )
    fields = {"operations": operations, "map": '{"0": ["variables.f"]}'}
    fields[part] = deep
    response = await client.post(
        "/graphql",
        data=fields,
        files={"0": ("a.txt", b"hello", "text/plain")},
        headers={
            "authorization": f"Bearer {tenant.tokens[Role.ADMIN]}",
            "apollo-require-preflight": "true",
        },
    )
    assert response.status_code == 400
    assert refused({**response.json(), "_status": 400}, "JSON"), response.text


@pytest.mark.parametrize("body", ["5", '"x"', "true", "null"])
async def test_a_body_that_is_not_an_object_is_bad_input(
    client: httpx.AsyncClient, body: str
) -> None:
    response = await client.post(
        "/graphql", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert refused({**response.json(), "_status": 400}), response.text


UPLOAD = "mutation($f: Upload!) { uploadDocument(input: {file: $f}) { document { id } } }"
OPERATIONS = json.dumps({"query": UPLOAD, "variables": {"f": None}})


async def _multipart(
    client: httpx.AsyncClient, token: str, operations: str, files_map: str
) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        data={"operations": operations, "map": files_map},
        files={"0": ("a.txt", b"hello", "text/plain")},
        headers={"authorization": f"Bearer {token}", "apollo-require-preflight": "true"},
    )
    return {**response.json(), "_status": response.status_code}


@pytest.mark.parametrize(
    ("operations", "files_map"),
    [
        ("5", '{"0": ["variables.f"]}'),
        ("[]", '{"0": ["variables.f"]}'),
        (OPERATIONS, "[]"),
        (OPERATIONS, '{"0": 5}'),
        (OPERATIONS, '{"0": [5]}'),
        (OPERATIONS, '{"0": ["variables.f.x.y"]}'),
        (OPERATIONS, '{"0": ["variables.f.0"]}'),
        (OPERATIONS, '{"0": ["variables.f", "variables.f"]}'),
        (OPERATIONS, '{"1": ["variables.f"]}'),
        (json.dumps({"query": UPLOAD, "variables": {"f": [None]}}), '{"0": ["variables.f.5"]}'),
        (json.dumps({"query": UPLOAD, "variables": {"f": "s"}}), '{"0": ["variables.f.0"]}'),
    ],
)
async def test_multipart_operations_and_map_that_do_not_fit_are_bad_input(
    client: httpx.AsyncClient, tenant: Tenant, operations: str, files_map: str
) -> None:
    body = await _multipart(client, tenant.tokens[Role.ADMIN], operations, files_map)
    assert body["_status"] == 400, body
    assert refused(body), body


async def test_multipart_variables_are_bounded_like_any_others(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = (
        "mutation($f: Upload!, $t: DocumentType) { uploadDocument(input: {file: $f, "
        "documentType: $t}) { document { id } } }"
    )
    operations = json.dumps({"query": query, "variables": {"f": None, "t": "CONTRACT\x00"}})
    body = await _multipart(client, tenant.tokens[Role.ADMIN], operations, '{"0": ["variables.f"]}')
    assert refused(body, "$t", "NUL"), body


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_json_numbers_that_are_not_numbers_are_bad_input(
    client: httpx.AsyncClient, tenant: Tenant, number: str
) -> None:
    query = json.dumps("query($f: Int) { users(first: $f) { edges { cursor } } }")
    response = await client.post(
        "/graphql",
        content=f'{{"query": {query}, "variables": {{"f": {number}}}}}'.encode(),
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {tenant.tokens[Role.ADMIN]}",
        },
    )
    assert response.status_code == 400
    assert refused({**response.json(), "_status": 400}, "not valid JSON"), response.text


@pytest.mark.parametrize("number", [2**31, -(2**31) - 1, 2**64, 10**30, 1.5])
async def test_an_int_out_of_range_is_bad_input(
    client: httpx.AsyncClient, tenant: Tenant, number: int | float
) -> None:
    query = "query($f: Int) { users(first: $f) { edges { cursor } } }"
    body = await send(client, query, {"f": number}, tenant.tokens[Role.ADMIN])
    assert codes(body) == ["BAD_USER_INPUT"], body


# --- Every list and every string position of the schema ------------------------------------


def _element(position: Position) -> Any:
    return valid_value(position.leaf)[0]  # type: ignore[arg-type]


@pytest.mark.parametrize("position", list_positions(), ids=str)
async def test_every_list_argument_is_bounded(
    client: httpx.AsyncClient, tenant: Tenant, position: Position
) -> None:
    element = _element(position)
    document, variables = position.request([element] * (MAX_LIST_LENGTH + 1))
    body = await send(client, document, variables, tenant.tokens[Role.ADMIN])
    assert refused(body, f"${position.argument}", str(MAX_LIST_LENGTH)), (document, body)


async def test_nodes_declares_a_smaller_limit_within_the_bound(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    (position,) = (p for p in list_positions() if p.field == "nodes")
    document, variables = position.request([_element(position)] * MAX_LIST_LENGTH)
    body = await send(client, document, variables, tenant.tokens[Role.ADMIN])
    assert codes(body) == ["BAD_USER_INPUT"], body
    assert body["errors"][0]["message"] == "At most 100 ids."


def _string_cases() -> list[Any]:
    cases = []
    for position in string_positions():
        for name, value, words in [
            ("nul", "a\x00b", ("NUL",)),
            ("long", "x" * (MAX_STRING_LENGTH + 1), (str(MAX_STRING_LENGTH),)),
        ]:
            cases.append(pytest.param(position, value, words, id=f"{position}-{name}"))
    return cases


@pytest.mark.parametrize(("position", "value", "words"), _string_cases())
async def test_every_string_argument_refuses_nul_and_absurd_lengths(
    client: httpx.AsyncClient,
    tenant: Tenant,
    position: Position,
    value: str,
    words: tuple[str, ...],
) -> None:
    document, variables = position.request(value)
    body = await send(client, document, variables, tenant.tokens[Role.ADMIN])
    assert refused(body, f"${position.argument}", *words), (document, body)


@pytest.mark.parametrize(
    ("literal", "words"),
    [
        ('["' + '", "'.join(["x"] * (MAX_LIST_LENGTH + 1)) + '"]', ("eventType", "list")),
        ('["a\\u0000b"]', ("eventType[0]", "NUL")),
        ('["' + "x" * (MAX_STRING_LENGTH + 1) + '"]', ("eventType[0]", "characters")),
    ],
    ids=["long-list", "nul", "long-string"],
)
async def test_literals_in_the_document_are_bounded_too(
    client: httpx.AsyncClient, tenant: Tenant, literal: str, words: tuple[str, ...]
) -> None:
    query = "{ auditLog(filter: {eventType: " + literal + "}) { edges { cursor } } }"
    body = await send(client, query, None, tenant.tokens[Role.ADMIN])
    assert refused(body, *words), body


@pytest.mark.parametrize("extra", [0, 1])
async def test_json_nested_to_the_bound_is_read_and_past_it_refused(
    client: httpx.AsyncClient, tenant: Tenant, extra: int
) -> None:
    """The body is level 1 and `variables` level 2: lists around "x" fill the rest."""
    nested: Any = "x"
    for _ in range(MAX_NESTING - 3 + extra):
        nested = [nested]
    body = await send(client, AUDIT_BY_TYPE, {"e": nested}, tenant.tokens[Role.ADMIN])
    assert codes(body) == ["BAD_USER_INPUT"], body
    refused_for_depth = f"deeper than {MAX_NESTING}" in body["errors"][0]["message"]
    assert refused_for_depth == bool(extra), body


async def test_the_bounds_hold_without_any_transport() -> None:
    """The schema itself refuses (for callers that execute it directly, not through JSON)."""
    deep: Any = "x"
    for _ in range(MAX_NESTING + 5):
        deep = [deep]
    schema = build_schema()
    for variables, words in [
        ({"e": deep}, ("$e", "nested deeper")),
        ({"e": ["x"] * (MAX_LIST_LENGTH + 1)}, ("$e", str(MAX_LIST_LENGTH))),
        ({"e": ["\ud800"]}, ("$e[0]", "surrogate")),
        ({"e": [float("nan")]}, ("$e[0]", "not finite")),
    ]:
        result = await schema.execute(AUDIT_BY_TYPE, variable_values=variables)
        assert result.errors, variables
        (error,) = result.errors
        assert error.extensions == {"code": "BAD_USER_INPUT"}
        assert all(word in error.message for word in words), error.message


# --- Identifiers, cursors and times clients make up ----------------------------------------


GARBAGE = [
    ("query($v: ID!) { node(id: $v) { id } }", "!!!"),
    ("query($v: ID!) { node(id: $v) { id } }", "Tm9kZTo="),
    ("query($v: ID!) { document(id: $v) { id } }", "VXNlcjp4"),
    ("query($v: ID!) { job(id: $v) { id } }", "x" * 10_000),
    ("query($v: String) { users(after: $v) { edges { cursor } } }", "!!!"),
    ("query($v: String) { users(after: $v) { edges { cursor } } }", "W1tbW1tbW1tb"),
    ("query($v: String) { documents(after: $v) { totalCount } }", "bnVsbA"),
    ("query($v: String) { auditLog(after: $v) { edges { cursor } } }", "WyJ4Il0"),
    ("query($v: DateTime) { verifyAuditChain(after: $v) { valid } }", "2026-02-30T00:00:00Z"),
    ("query($v: DateTime) { verifyAuditChain(after: $v) { valid } }", "2026-01-01T00:00:00"),
    ("query($v: Date!) { dailySummary(from: $v, to: $v) { date } }", "0000-01-01"),
]
EXTREME = [
    ("query($v: DateTime) { verifyAuditChain(after: $v) { valid } }", "0001-01-01T00:00-14:00"),
    ("query($v: DateTime) { verifyAuditChain(before: $v) { valid } }", "9999-12-31T23:59+14:00"),
]


@pytest.mark.parametrize(("query", "value"), GARBAGE)
async def test_made_up_ids_cursors_and_times_are_bad_input(
    client: httpx.AsyncClient, tenant: Tenant, query: str, value: str
) -> None:
    body = await send(client, query, {"v": value}, tenant.tokens[Role.ADMIN])
    assert body["_status"] < 500, body
    assert codes(body), body
    assert set(codes(body)) <= {"BAD_USER_INPUT", "NOT_FOUND"}, body


@pytest.mark.parametrize(("query", "value"), EXTREME)
async def test_times_at_the_ends_of_the_calendar_are_answered(
    client: httpx.AsyncClient, tenant: Tenant, query: str, value: str
) -> None:
    body = await send(client, query, {"v": value}, tenant.tokens[Role.ADMIN])
    assert body["_status"] == 200, body
    assert "errors" not in body, body


BI_RANGES = sorted(
    name
    for name, field in SCHEMA.query_type.fields.items()  # type: ignore[union-attr]
    if {"from", "to"} <= set(field.args)
)


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
@pytest.mark.parametrize("field", BI_RANGES)
async def test_bi_ranges_at_the_ends_of_the_calendar_are_bad_input(
    client: httpx.AsyncClient, tenant: Tenant, field: str, day: str
) -> None:
    """Found by the fuzz run: a period one day, week or month past 9999-12-31 overflowed."""
    arguments = SCHEMA.query_type.fields[field].args  # type: ignore[union-attr]
    variables = {
        name: day if name in ("from", "to") else valid_value(argument.type)
        for name, argument in arguments.items()
        if isinstance(argument.type, GraphQLNonNull) or name in ("from", "to")
    }
    definitions = ", ".join(f"${name}: {arguments[name].type}" for name in variables)
    passed = ", ".join(f"{name}: ${name}" for name in variables)
    document = f"query({definitions}) {{ {field}({passed}) {{ __typename }} }}"
    body = await send(client, document, variables, tenant.tokens[Role.ADMIN])
    assert refused(body, "outside"), body


# --- WebSocket subscriptions: the same rules -----------------------------------------------


@pytest.fixture
async def served(app: object) -> AsyncIterator[str]:
    """The test app behind a real uvicorn on a free port, in this event loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.02)
    yield f"ws://127.0.0.1:{port}/graphql"
    server.should_exit = True
    await task


async def _subscribe(url: str, token: str, raw_subscribe: str) -> list[Any]:
    async with websockets.connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(raw_subscribe)
        try:
            return [json.loads(await asyncio.wait_for(ws.recv(), 10))]
        except websockets.ConnectionClosed as closed:
            return [("closed", closed.rcvd.code if closed.rcvd else None)]


SUBSCRIBE = "subscription($id: ID!) { documentProgress(id: $id) { processingStatus } }"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a\x00b", ("$id", "NUL")),
        ("x" * (MAX_STRING_LENGTH + 1), ("$id", str(MAX_STRING_LENGTH))),
    ],
    ids=["nul", "long"],
)
async def test_subscription_variables_are_bounded(
    served: str, tenant: Tenant, value: str, words: tuple[str, ...]
) -> None:
    message = {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}
    message["payload"]["variables"] = {"id": value}  # type: ignore[index]
    (answer,) = await _subscribe(served, tenant.tokens[Role.ADMIN], json.dumps(message))
    assert answer["type"] == "error", answer
    (error,) = answer["payload"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert all(word in error["message"] for word in words), error


async def test_deep_json_over_a_websocket_closes_it_as_a_bad_message(
    served: str, tenant: Tenant
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    payload = f'{{"query": {json.dumps(SUBSCRIBE)}, "variables": {{"id": {deep}}}}}'
    raw = f'{{"id": "1", "type": "subscribe", "payload": {payload}}}'
    (answer,) = await _subscribe(served, tenant.tokens[Role.ADMIN], raw)
    assert answer == ("closed", 4400)


async def test_gql_helper_and_bounds_agree(client: httpx.AsyncClient, tenant: Tenant) -> None:
    """A list at the bound is served: the bound refuses only what is past it."""
    body = await gql(
        client, AUDIT_BY_TYPE, {"e": ["x"] * MAX_LIST_LENGTH}, token=tenant.tokens[Role.ADMIN]
    )
    assert "errors" not in body, body
