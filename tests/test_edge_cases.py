"""Requests and dependencies at the edges: what every refusal looks like (a JSON error with
its code, never plain text or INTERNAL), and dependencies that answer something other than
what they are (a proxy's login page for OpenSearch, a reply Redis's client cannot parse).

The misbehaving dependencies are real servers on 127.0.0.1 that answer those bytes; where
a test reads what Prism logs, Prism runs as `prism serve` does, its log in a file."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import sys
import zlib
from collections.abc import AsyncIterator
from typing import ClassVar

import httpx
import orjson
from graphql import (
    GraphQLArgument,
    GraphQLError,
    GraphQLField,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    graphql_sync,
)
from pydantic import SecretStr

from prism.cache.store import Rate, build_store
from prism.config import SearchFallback, Settings
from prism.execution.extensions import _is_client_error
from prism.models.enums import Role
from prism.schema import _parse_datetime
from prism.services import Services
from tests.conftest import app_with, client_of
from tests.factories import Tenant, add_document, codes, gid, gql
from tests.pipeline_helpers import UPLOAD
from tests.search_helpers import SEARCH, opensearch_settings
from tests.test_faults import ServedApp

DOCUMENTS = "{ documents(first: 1) { totalCount } }"
PROGRESS = 'subscription { documentProgress(id: "x") { processingStatus } }'


@contextlib.asynccontextmanager
async def _served(settings: Settings) -> AsyncIterator[ServedApp]:
    """Prism in a uvicorn process of its own, started while this event loop keeps serving
    the stub dependencies."""
    served = ServedApp(settings)
    await asyncio.to_thread(served.__enter__)
    try:
        yield served
    finally:
        await asyncio.to_thread(served.__exit__, None, None, None)


def _auth(tenant: Tenant) -> dict[str, str]:
    return {"authorization": f"Bearer {tenant.tokens[Role.ADMIN]}"}


def _refused(response: httpx.Response, status: int, code: str) -> str:
    """The typed error shape with this status and code; its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert codes(body) == [code], body
    message: str = body["errors"][0]["message"]
    return message


# --- operation types over HTTP ---------------------------------------------------------------


async def test_a_subscription_over_http_is_refused_pointing_to_the_websocket(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    operations = orjson.dumps({"query": PROGRESS, "variables": {}}).decode()
    sent = {
        "POST": client.post("/graphql", json={"query": PROGRESS}, headers=_auth(tenant)),
        "GET": client.get("/graphql", params={"query": PROGRESS}, headers=_auth(tenant)),
        "multipart": client.post(
            "/graphql",
            data={"operations": operations, "map": "{}"},
            files={"x": ("a.txt", b"x", "text/plain")},
            headers={**_auth(tenant), "apollo-require-preflight": "1"},
        ),
    }
    for transport, request in sent.items():
        message = _refused(await request, 400, "BAD_USER_INPUT")
        assert "WebSocket" in message, transport
        assert "graphql-transport-ws" in message, transport
    # Queries and mutations are answered as before (a mutation over GET still is not).
    assert (await gql(client, DOCUMENTS, token=tenant.tokens[Role.ADMIN])).get("errors") is None
    over_get = await client.get(
        "/graphql", params={"query": 'mutation { logout(refreshToken: "x") }'}
    )
    assert "mutations are not allowed" in _refused(over_get, 400, "BAD_USER_INPUT")


# --- media types, charsets, encodings --------------------------------------------------------


async def test_media_types_are_case_insensitive(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = orjson.dumps({"query": DOCUMENTS})
    for content_type in (
        "APPLICATION/JSON",
        "Application/Json; Charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json; charset=utf8",
    ):
        answered = await client.post(
            "/graphql", content=body, headers={**_auth(tenant), "content-type": content_type}
        )
        assert answered.status_code == 200, (content_type, answered.text)
        assert answered.json().get("errors") is None, (content_type, answered.text)


async def test_a_multipart_body_in_any_case_needs_the_csrf_header(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Spelled in capitals, a multipart upload is still one: the CSRF header is required
    and the upload limit (not the JSON one) applies."""
    operations = orjson.dumps({"query": UPLOAD, "variables": {"input": {"file": None}}})
    files_map = orjson.dumps({"0": ["variables.input.file"]})
    body = b"".join(
        [
            b'--B\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
            + operations
            + b"\r\n",
            b'--B\r\nContent-Disposition: form-data; name="map"\r\n\r\n' + files_map + b"\r\n",
            b'--B\r\nContent-Disposition: form-data; name="0"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nHello contract\r\n",
            b"--B--\r\n",
        ]
    )
    for content_type in ("MULTIPART/FORM-DATA; boundary=B", "Multipart/Form-Data; boundary=B"):
        forged = await client.post(
            "/graphql", content=body, headers={**_auth(tenant), "content-type": content_type}
        )
        assert "Apollo-Require-Preflight" in _refused(forged, 400, "BAD_USER_INPUT")


async def test_a_compressed_body_is_refused_saying_so(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = orjson.dumps({"query": DOCUMENTS})
    for encoding, encoded in (
        ("gzip", gzip.compress(body)),
        ("GZIP", gzip.compress(body)),
        ("deflate", zlib.compress(body)),
        ("br", body),
        ("gzip, identity", gzip.compress(body)),
    ):
        refused = await client.post(
            "/graphql",
            content=encoded,
            headers={
                **_auth(tenant),
                "content-type": "application/json",
                "content-encoding": encoding,
            },
        )
        message = _refused(refused, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert "Content-Encoding" in message, encoding
        assert "uncompressed" in message, encoding
    # identity is no encoding at all
    plain = await client.post(
        "/graphql",
        content=body,
        headers={
            **_auth(tenant),
            "content-type": "application/json",
            "content-encoding": "identity",
        },
    )
    assert plain.status_code == 200, plain.text
    assert plain.json().get("errors") is None, plain.text


async def test_a_charset_other_than_utf8_is_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """A JSON body is UTF-8 (RFC 8259): another declared charset is refused, not guessed at,
    whether the bytes are in that charset or (mislabelled) UTF-8."""
    body = orjson.dumps({"query": DOCUMENTS})
    for charset, sent in (
        ("utf-16", body),
        ("utf-16", body.decode().encode("utf-16")),
        ("latin-1", body),
        ("ISO-8859-1", body),
        ('"utf-16"', body),
    ):
        refused = await client.post(
            "/graphql",
            content=sent,
            headers={**_auth(tenant), "content-type": f"application/json; charset={charset}"},
        )
        message = _refused(refused, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert "UTF-8" in message, charset


# --- the multipart parser's refusals ---------------------------------------------------------


def _parts(count: int, *, files: bool) -> bytes:
    filename = b'; filename="a.txt"' if files else b""
    return b"".join(
        b'--B\r\nContent-Disposition: form-data; name="f%d"%s\r\n\r\nx\r\n' % (i, filename)
        for i in range(count)
    )


async def test_every_multipart_refusal_is_typed(client: httpx.AsyncClient, tenant: Tenant) -> None:
    headers = {**_auth(tenant), "apollo-require-preflight": "1"}
    operations = orjson.dumps({"query": UPLOAD, "variables": {"input": {"file": None}}})
    form = (
        b'--B\r\nContent-Disposition: form-data; name="operations"\r\n\r\n' + operations + b"\r\n"
        b'--B\r\nContent-Disposition: form-data; name="map"\r\n\r\n{}\r\n'
    )
    cases: list[tuple[str, bytes, str, int, str]] = [
        ("no boundary", form + b"--B--\r\n", "multipart/form-data", 400, "BAD_USER_INPUT"),
        (
            "an empty boundary",
            form + b"--B--\r\n",
            "multipart/form-data; boundary=",
            400,
            "BAD_USER_INPUT",
        ),
        (
            "a part without a name",
            form + b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--\r\n",
            "multipart/form-data; boundary=B",
            400,
            "BAD_USER_INPUT",
        ),
        (
            "5,000 fields",
            _parts(5_000, files=False) + form + b"--B--\r\n",
            "multipart/form-data; boundary=B",
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "2,000 files",
            _parts(2_000, files=True) + form + b"--B--\r\n",
            "multipart/form-data; boundary=B",
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ]
    for label, body, content_type, status, code in cases:
        refused = await client.post(
            "/graphql", content=body, headers={**headers, "content-type": content_type}
        )
        assert refused.status_code == status, (label, refused.status_code, refused.text)
        _refused(refused, status, code)


# --- DateTime values out of range once in UTC ------------------------------------------------


OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
DATETIME_ARGUMENTS = [
    "query($a: DateTime){ auditLog(filter: {after: $a}, first: 1){ edges { node { id } } } }",
    "query($a: DateTime){ documents(filter: {createdAfter: $a}, first: 1){ totalCount } }",
    "query($a: DateTime){ verifyAuditChain(after: $a){ valid } }",
    'mutation($a: DateTime){ createApiToken(input: {name: "dt", scopes: ["documents:read"], '
    "expiresAt: $a}){ token } }",
]


async def test_a_datetime_whose_offset_leaves_the_representable_years_is_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.ADMIN]
    for query in DATETIME_ARGUMENTS:
        for value in OUT_OF_RANGE:
            # as a variable
            answered = await gql(client, query, {"a": value}, token=token)
            assert codes(answered) == ["BAD_USER_INPUT"], (query, value, answered)
            assert "once converted to UTC" in answered["errors"][0]["message"], answered
            # and as a literal in the document
            literal = query.replace("($a: DateTime)", "").replace("$a", f'"{value}"')
            answered = await gql(client, literal, token=token)
            assert codes(answered) == ["BAD_USER_INPUT"], (literal, answered)
            assert "once converted to UTC" in answered["errors"][0]["message"], answered
    # the edges of the range themselves are fine
    assert _parse_datetime("0001-01-01T00:00:00-14:00").year == 1
    assert _parse_datetime("9999-12-31T23:59:59+14:00").year == 9999


# --- which errors are the client's -----------------------------------------------------------


def test_only_values_graphql_core_coerces_make_a_value_error_the_clients() -> None:
    """A scalar's ValueError, raised where graphql-core coerces a literal or a variable, is
    the client's (BAD_USER_INPUT with its message). The same ValueError or TypeError raised
    anywhere else with no path (a dependency's client library in an extension, our own
    code) is an internal error, masked."""

    def parse(value: object) -> object:
        raise ValueError(f"bad value {value!r}")

    scalar = GraphQLScalarType("D", parse_value=parse)
    schema = GraphQLSchema(
        GraphQLObjectType(
            "Query",
            {
                "f": GraphQLField(
                    GraphQLString, args={"a": GraphQLArgument(scalar)}, resolve=lambda *_, **k: "x"
                )
            },
        )
    )
    from_variable = graphql_sync(schema, "query($a: D){ f(a: $a) }", variable_values={"a": "z"})
    from_literal = graphql_sync(schema, '{ f(a: "z") }')
    coerced = [*(from_variable.errors or []), *(from_literal.errors or [])]
    assert len(coerced) == 2
    assert all(_is_client_error(error) for error in coerced), coerced
    for internal in (ValueError("Protocol error, got '$' as reply type byte"), TypeError("x")):
        assert not _is_client_error(GraphQLError(str(internal), original_error=internal))


# --- a Redis that answers what its client cannot parse ---------------------------------------


class BrokenRedis:
    """A TCP server on 127.0.0.1 that answers every command with RESP its client cannot
    parse (a negative bulk length, then a non-numeric integer)."""

    REPLY = b"$-5\r\n+OK\r\n:zz\r\n"

    def __init__(self) -> None:
        self.port = 0
        self.commands = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                self.commands += 1
                writer.write(self.REPLY)
                await writer.drain()
        writer.close()

    async def __aenter__(self) -> BrokenRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


async def test_a_redis_reply_the_client_cannot_parse_is_an_outage() -> None:
    async with BrokenRedis() as redis:
        store = build_store(redis.url, retry_seconds=60)
        try:
            await store.set("k", b"v", 60)
            assert redis.commands > 0  # Redis was asked, and its answer was garbage
            assert await store.get("k") == b"v"  # kept in memory meanwhile
            bucket = await store.take("b", 1, Rate(capacity=2, refill_per_second=0.01))
            assert bucket.allowed
            assert bucket.remaining == 1
        finally:
            await store.close()


async def test_requests_and_persisted_queries_survive_a_redis_speaking_garbage(
    settings: Settings, tenant: Tenant
) -> None:
    async with BrokenRedis() as redis:
        broken = settings.model_copy(update={"redis_url": SecretStr(redis.url)})
        async with (
            _served(broken) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
        ):
            answered = await gql(client, DOCUMENTS, token=tenant.tokens[Role.ADMIN])
            assert answered.get("errors") is None, answered
            assert redis.commands > 0
            unknown = await client.post(
                "/graphql",
                json={"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "a" * 64}}},
                headers=_auth(tenant),
            )
            assert codes(unknown.json()) == ["PERSISTED_QUERY_NOT_FOUND"], unknown.text
            assert unknown.status_code < 500
            again = await gql(client, DOCUMENTS, token=tenant.tokens[Role.ADMIN])
            assert again.get("errors") is None, again
    # one switch to memory, logged once, however many calls it served
    assert served.logs.count("redis unusable") == 1, served.logs


# --- an OpenSearch that answers what OpenSearch does not -------------------------------------


class FakeOpenSearch:
    """An HTTP server on 127.0.0.1 standing where OpenSearch should be: index management
    succeeds (so search gets as far as querying), and searches are answered as ``mode``
    says: a proxy's login page, a JSON that does not parse, a refusal of the credentials, a
    JSON that is not a search result."""

    ANSWERS: ClassVar[dict[str, tuple[str, str, bytes]]] = {
        "html": ("200 OK", "text/html", b"<html><body>Please log in</body></html>"),
        "broken-json": ("200 OK", "application/json", b"{not json"),
        "401": ("401 Unauthorized", "application/json", b'{"error": "unauthorized"}'),
        "403": (
            "403 Forbidden",
            "application/json",
            b'{"error": {"type": "security_exception", "reason": "no permissions"}}',
        ),
        "401-html": ("401 Unauthorized", "text/html", b"<html>Sign in</html>"),
        "not-a-result": ("200 OK", "application/json", b'{"hits": {"hits": [{"_id": "zz"}]}}'),
        "a-list": ("200 OK", "application/json", b"[]"),
    }

    def __init__(self) -> None:
        self.mode = "html"
        self.port = 0
        self.searches = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                if "/_search" in path:
                    self.searches += 1
                    status, content_type, body = self.ANSWERS[self.mode]
                else:
                    status, content_type, body = "200 OK", "application/json", b"{}"
                if method == "HEAD":
                    body = b""
                writer.write(
                    f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        writer.close()

    async def __aenter__(self) -> FakeOpenSearch:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


async def test_an_opensearch_answer_that_is_not_opensearchs_is_an_outage(
    settings: Settings, database_url: str, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.ADMIN]
    async with FakeOpenSearch() as fake:
        strict_settings = opensearch_settings(settings, fake.url)
        lenient_settings = opensearch_settings(settings, fake.url, fallback=SearchFallback.POSTGRES)
        async with (
            _served(strict_settings) as served,
            httpx.AsyncClient(base_url=served.url, timeout=30) as strict,
            app_with(lenient_settings, database_url) as lenient_app,
            client_of(lenient_app) as lenient,
        ):
            for mode in FakeOpenSearch.ANSWERS:
                fake.mode = mode
                searches = fake.searches
                down = await gql(strict, SEARCH, {"q": "liability"}, token=token)
                assert fake.searches > searches, mode  # the search reached OpenSearch's place
                assert codes(down) == ["SERVICE_UNAVAILABLE"], (mode, down)
                assert down["_status"] == 503, (mode, down)
                # with the PostgreSQL fallback, PostgreSQL answers, saying why
                answered = await gql(lenient, SEARCH, {"q": "liability"}, token=token)
                assert answered.get("errors") is None, (mode, answered)
                assert answered["extensions"]["search"]["fallback"] is True, (mode, answered)
    logged = served.logs
    assert "refused Prism's credentials (401)" in logged
    assert "refused Prism's credentials (403)" in logged
    assert "is not JSON" in logged
    assert "is not a search result" in logged


async def test_a_failed_field_leaves_no_loader_holding_a_connection(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    # given a mutation whose answer has a field that fails (a bad cursor) beside one that a
    # DataLoader batch reads after the request's transaction has ended
    document = await add_document(services, tenant)
    mutation = """mutation($id: ID!) { updateDocument(input: {id: $id, classification: PUBLIC}) {
      mimeType uploadedBy { createdAt } feedback(first: 0, after: "") { edges { cursor } } } }"""
    leaks: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda found: leaks.append(str(found.exc_value))
    try:
        gc.collect()
        body = await gql(
            client, mutation, {"id": gid("Document", document.id)}, token=tenant.tokens[Role.ADMIN]
        )
        await asyncio.sleep(0.05)  # the late batch runs
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert codes(body) == ["BAD_USER_INPUT"]
    # then no pooled connection was left for the garbage collector to find
    assert not [leak for leak in leaks if "non-checked-in connection" in leak], leaks
