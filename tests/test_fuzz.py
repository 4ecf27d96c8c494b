"""Generated requests over the whole schema, against the real app: whatever a client sends,
the answer is a typed one. Every response is HTTP < 500, every error carries
``extensions.code``, and none is INTERNAL.

Operations come from hypothesis-graphql (valid ones, and ones with one schema violation),
for every root field, as an ADMIN of an organization with documents, analyses and users, and
anonymously; hostile variable values come from a strategy of this file, walked from each
argument's type. Runs are derandomized (the same examples every run, no example database):
a failure here fails the same way in CI. Identifiers are placeholders that the test swaps
for real ones of the organization, so generated mutations reach real rows."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import graphql
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, mutations, queries

from prism.config import Settings
from prism.execution.ids import to_global_id
from prism.execution.inputs import MAX_LIST_LENGTH, MAX_STRING_LENGTH
from prism.models.enums import Role
from prism.services import Services
from tests.conftest import app_with, client_of
from tests.factories import Tenant, add_document, gql
from tests.schema_inputs import SCHEMA, valid_value

# --- What to generate -----------------------------------------------------------------------

# Rows of the organization, swapped in by the test (see `Pool`); "@x<n>" stands for n times
# "x", "@deep<n>" for a value nested n levels and `Repeated` for a long list, so that a
# failing example prints short (and the test's own encoder does not recurse).
PLACEHOLDERS = ("@document", "@section", "@analysis", "@user", "@token")
GARBAGE_IDS = [
    "",
    "!!!",
    "AAAA",
    "Tm9kZTo=",  # "Node:"
    "VXNlcjp4",  # "User:x"
    to_global_id("Document", uuid.UUID(int=0)),
    to_global_id("Nope", uuid.uuid5(uuid.NAMESPACE_DNS, "prism")),
    "@x5000",
]
ODD_STRINGS = [
    "",
    " ",
    "a\x00b",
    f"@x{MAX_STRING_LENGTH + 1}",
    "@x10001",
    "'; DROP TABLE users; --",
    "%_\\",
    "\u202egnp.exe",
    "\ud800@example.com",  # a lone surrogate: sent escaped, as JSON allows
    "😀" * 50,
    "𝕏\u0301",
    "../../etc/passwd",
    "1e309",
    "NaN",
    "null",
    "admin@example.com",
    "2026-01-01T00:00:00Z",
]
ODD_TIMES = [
    "2026-01-01T00:00:00Z",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59+14:00",
    "2026-02-30T00:00:00Z",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "yesterday",
    "",
]
ODD_DATES = ["2026-01-01", "0001-01-01", "9999-12-31", "2026-02-30", "0000-00-00", "x", ""]

_ids = st.sampled_from(PLACEHOLDERS) | st.sampled_from(GARBAGE_IDS) | st.text(max_size=12)
_strings = st.sampled_from(ODD_STRINGS) | st.text(max_size=24)


def _string_node(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[graphql.ValueNode]:
    return strategy.map(lambda value: graphql.StringValueNode(value=value))


_numbers = st.integers(min_value=-(2**40), max_value=2**40).map(
    lambda n: graphql.IntValueNode(value=str(n))
) | st.sampled_from(["0", "-1", "1e308", "1.5"]).map(lambda n: graphql.FloatValueNode(value=n))

# Mostly values the resolvers accept, so that generated operations get past the arguments
# and into the resolvers; the rest odd.
_recent_days = st.dates(min_value=dt.date(2025, 1, 1), max_value=dt.date(2027, 12, 31))
_small_ints = st.integers(min_value=0, max_value=30).map(
    lambda n: graphql.IntValueNode(value=str(n))
)

CUSTOM_SCALARS: dict[str, st.SearchStrategy[graphql.ValueNode]] = {
    "ID": _string_node(st.sampled_from(PLACEHOLDERS)) | _string_node(_ids),
    "Int": _small_ints | _small_ints | _numbers,
    "DateTime": _string_node(
        st.sampled_from(ODD_TIMES)
        | st.datetimes(timezones=st.timezones(), allow_imaginary=False).map(lambda d: d.isoformat())
    ),
    "Date": _string_node(
        _recent_days.map(dt.date.isoformat)
        | _recent_days.map(dt.date.isoformat)
        | st.sampled_from(ODD_DATES)
        | st.dates().map(dt.date.isoformat)
    ),
    "Decimal": _string_node(st.sampled_from(["0", "-1", "1e400", "x"])) | _numbers,
    "Long": _numbers,
    "JSON": _string_node(_strings) | _numbers,
    "Upload": _string_node(_strings) | st.just(graphql.NullValueNode()),
}
QUERY_FIELDS = sorted(SCHEMA.query_type.fields)  # type: ignore[union-attr]
MUTATION_FIELDS = sorted(SCHEMA.mutation_type.fields)  # type: ignore[union-attr]


def operations(kind: str) -> st.SearchStrategy[str]:
    """One root field at a time, so every field is reached (a whole-root selection would
    mostly be refused for its size)."""
    build = queries if kind == "query" else mutations
    fields = QUERY_FIELDS if kind == "query" else MUTATION_FIELDS
    return st.sampled_from(fields).flatmap(
        lambda field: build(SCHEMA, fields=[field], custom_scalars=CUSTOM_SCALARS)
    )


def invalid_operations(kind: str) -> st.SearchStrategy[str]:
    """Operations with one schema violation (a wrong type, a missing argument, an unknown
    enum value), anywhere under the root."""
    build = queries if kind == "query" else mutations
    return build(SCHEMA, custom_scalars=CUSTOM_SCALARS, mode=Mode.NEGATIVE)


_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _strings
)
_anything = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
# Nested around the bound of variables (28 levels, inside the request's own 4), and far past
# what a recursive decoder survives.
_deep_values = (st.integers(min_value=26, max_value=34) | st.just(2_000)).map(
    lambda depth: f"@deep{depth}"
)


def hostile(type_: graphql.GraphQLInputType) -> st.SearchStrategy[Any]:
    """Values for an input type: mostly of its shape with odd contents, sometimes anything."""
    if isinstance(type_, graphql.GraphQLNonNull):
        return hostile(type_.of_type)
    shaped: st.SearchStrategy[Any]
    if isinstance(type_, graphql.GraphQLList):
        inner = hostile(type_.of_type)
        # Long lists of one valid element: the bound, not the element, must refuse them.
        element = valid_value(type_.of_type)
        shaped = (
            st.lists(inner, max_size=3)
            | inner
            | st.sampled_from([MAX_LIST_LENGTH + 1, 40_000]).map(lambda n: Repeated(element, n))
        )
    elif isinstance(type_, graphql.GraphQLInputObjectType):
        required = {
            name: hostile(field.type)
            for name, field in type_.fields.items()
            if isinstance(field.type, graphql.GraphQLNonNull)
        }
        optional = {
            name: hostile(f.type) for name, f in type_.fields.items() if name not in required
        }
        shaped = st.fixed_dictionaries(required, optional=optional)
    elif isinstance(type_, graphql.GraphQLEnumType):
        shaped = st.sampled_from(sorted(type_.values)) | _strings
    else:
        assert isinstance(type_, graphql.GraphQLScalarType)
        shaped = {
            "ID": _ids,
            "String": _strings,
            "Int": st.integers(min_value=-(2**64), max_value=2**64)
            | st.sampled_from([0, -1, 2**31 - 1, 2**31, 10**30]),
            "Float": st.floats(allow_nan=False, allow_infinity=False),
            "Boolean": st.booleans(),
            "DateTime": st.sampled_from(ODD_TIMES),
            "Date": st.sampled_from(ODD_DATES),
        }.get(type_.name, _anything)
    return st.one_of(shaped, shaped, shaped, shaped, shaped, shaped, _anything, _deep_values)


def _hostile_request(operation: str, name: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    root = SCHEMA.query_type if operation == "query" else SCHEMA.mutation_type
    assert root is not None
    field = root.fields[name]
    definitions = ", ".join(f"${arg}: {a.type}" for arg, a in field.args.items())
    arguments = ", ".join(f"{arg}: ${arg}" for arg in field.args)
    named = graphql.get_named_type(field.type)
    selection = " { __typename }" if graphql.is_composite_type(named) else ""
    document = f"{operation}({definitions}) {{ {name}({arguments}){selection} }}"
    values = st.fixed_dictionaries({arg: hostile(a.type) for arg, a in field.args.items()})
    return values.map(lambda variables: (document, variables))


HOSTILE_REQUESTS = st.sampled_from(
    [("query", f) for f in QUERY_FIELDS if SCHEMA.query_type.fields[f].args]  # type: ignore[union-attr]
    + [("mutation", f) for f in MUTATION_FIELDS if SCHEMA.mutation_type.fields[f].args]  # type: ignore[union-attr]
).flatmap(lambda pair: _hostile_request(*pair))


UPLOAD = "mutation($f: Upload!) { uploadDocument(input: {file: $f}) { document { id } } }"
_documents = st.sampled_from(
    [
        "{ viewer { user { id } } }",
        "query Q { viewer { user { id } } } query R { apiTokens { id } }",
        UPLOAD,
    ]
)
_hashes = st.text("0123456789abcdef", min_size=64, max_size=64)
_persisted = st.fixed_dictionaries(
    {}, optional={"version": st.just(1) | _anything, "sha256Hash": _hashes | _strings | _anything}
)
ENVELOPES = (
    st.fixed_dictionaries(
        {},
        optional={
            "query": _documents | _strings | _anything,
            "variables": st.dictionaries(st.sampled_from(["f", "x", ""]), _anything, max_size=2)
            | _anything,
            "operationName": st.sampled_from(["Q", "R"]) | _strings | _anything,
            "extensions": st.fixed_dictionaries({"persistedQuery": _persisted}) | _anything,
        },
    )
    | _anything
)
_paths = st.sampled_from(["variables.f", "0.variables.f", "variables.f.0", "query", "", "."])
FILE_MAPS = (
    st.dictionaries(
        st.sampled_from(["0", "1"]), st.lists(_paths | _strings, max_size=2), max_size=2
    )
    | _anything
)
MULTIPART = st.tuples(
    st.fixed_dictionaries({"query": st.just(UPLOAD), "variables": st.just({"f": None})})
    | ENVELOPES,
    FILE_MAPS,
)


# --- Against what ---------------------------------------------------------------------------


class Pool:
    """Real identifiers of the organization, for the placeholders (never the ADMIN's own user
    or token, so that generated mutations cannot lock the fuzzing caller out)."""

    def __init__(self, ids: dict[str, list[str]]) -> None:
        self.ids = ids
        self.turn = 0

    def fill(self, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            choices = self.ids.get(match.group(0)) or GARBAGE_IDS
            self.turn += 1
            return choices[self.turn % len(choices)]

        text = _DEEP.sub(lambda m: "[" * int(m.group(1)) + '"x"' + "]" * int(m.group(1)), text)
        return _LONG.sub(lambda m: "x" * int(m.group(1)), _PLACEHOLDER.sub(one, text))


def _fits_a_url(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


_PLACEHOLDER = re.compile("|".join(PLACEHOLDERS))
_LONG = re.compile(r"@x(\d+)")
_DEEP = re.compile(r'"@deep(\d+)"')


@dataclass(frozen=True)
class Repeated:
    """A list of one element ``times`` over."""

    element: Any
    times: int

    def __repr__(self) -> str:
        return f"[{self.element!r}] * {self.times}"


def _expand(value: object) -> object:
    if isinstance(value, Repeated):
        return [value.element] * value.times
    raise TypeError(type(value))


def encode(value: Any) -> str:
    return json.dumps(value, default=_expand)


class Fuzz:
    def __init__(self, client: httpx.AsyncClient, token: str | None, pool: Pool) -> None:
        self.client = client
        self.token = token
        self.pool = pool
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.codes: dict[str, int] = {}

    async def send(self, document: str, variables: Any = None, *, via_get: bool = False) -> None:
        document = self.pool.fill(document)
        encoded_variables = self.pool.fill(encode(variables)) if variables else None
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        params = {"query": document, **({"variables": encoded_variables} if variables else {})}
        if via_get and len(encode(params)) < 20_000:
            response = await self.client.get("/graphql", params=params, headers=headers)
        else:
            body = f'{{"query": {json.dumps(document)}, "variables": {encoded_variables or "{}"}}}'
            response = await self.client.post(
                "/graphql",
                content=body.encode(),
                headers={**headers, "content-type": "application/json"},
            )
        self.check(response, f"{document}\nvariables: {(encoded_variables or '')[:2_000]}")

    async def send_envelope(self, envelope: Any, via: str) -> None:
        """A whole request as a client might shape it, over GET, POST or multipart."""
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        encoded = self.pool.fill(encode(envelope))
        if via == "get":
            fields = envelope if isinstance(envelope, dict) else {"query": envelope}
            params = {
                k: self.pool.fill(v if isinstance(v, str) else encode(v)) for k, v in fields.items()
            }
            if len(encoded) > 20_000 or not all(map(_fits_a_url, params.values())):
                via = "post"  # a URL holds neither
            else:
                response = await self.client.get("/graphql", params=params, headers=headers)
        if via == "post":
            response = await self.client.post(
                "/graphql",
                content=encoded.encode(),
                headers={**headers, "content-type": "application/json"},
            )
        elif via == "multipart":
            operations, files_map = (self.pool.fill(encode(part)) for part in envelope)
            response = await self.client.post(
                "/graphql",
                data={"operations": operations, "map": files_map},
                files={"0": ("a.txt", b"hello", "text/plain")},
                headers={**headers, "apollo-require-preflight": "true"},
            )
        self.check(response, f"{via}: {encoded[:2_000]}")

    def check(self, response: httpx.Response, request: str) -> None:
        self.sent += 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, f"{response.status_code} for\n{request}"
        if response.headers["content-type"].startswith("text/html"):
            return  # GraphiQL, for a GET without a query
        answer = response.json()
        for error in answer.get("errors") or []:
            code = (error.get("extensions") or {}).get("code")
            assert code, f"error without a code: {error} for\n{request}"
            assert code != "INTERNAL", f"INTERNAL for\n{request}"
            self.codes[code] = self.codes.get(code, 0) + 1
        if response.status_code == 200 and not answer.get("errors"):
            assert answer.get("data") is not None, request


@pytest.fixture(scope="module")
async def fuzz_app(settings: Settings, database_url: str) -> AsyncIterator[object]:
    """The app with a rate limit no fuzz run reaches (a run should test more than the limit)."""
    roomy = settings.model_copy(update={"rate_limit_capacity": 10**9})
    async with app_with(roomy, database_url) as application:
        yield application


@pytest.fixture(scope="module")
async def fuzz_tenant(services: Services) -> Tenant:
    from tests.factories import make_tenant

    tenant = await make_tenant(services)
    for _ in range(2):
        await add_document(services, tenant)
    return tenant


@pytest.fixture(scope="module")
async def pool(fuzz_app: object, fuzz_tenant: Tenant) -> Pool:
    admin = fuzz_tenant.tokens[Role.ADMIN]
    async with client_of(fuzz_app) as client:
        body = await gql(
            client,
            """{ documents { edges { node { id sections { edges { node { id
                 analyses { id } } } } } } }
                 users { edges { node { id email } } } apiTokens { id name } }""",
            token=admin,
        )
    data = body["data"]
    documents = [e["node"] for e in data["documents"]["edges"]]
    sections = [s["node"] for d in documents for s in d["sections"]["edges"]]
    admin_email = fuzz_tenant.email(Role.ADMIN)
    return Pool(
        {
            "@document": [d["id"] for d in documents],
            "@section": [s["id"] for s in sections],
            "@analysis": [a["id"] for s in sections for a in s["analyses"]],
            "@user": [
                u["node"]["id"] for u in data["users"]["edges"] if u["node"]["email"] != admin_email
            ],
            "@token": [t["id"] for t in data["apiTokens"] if not t["name"].startswith("admin")],
        }
    )


@pytest.fixture
async def as_admin(fuzz_app: object, fuzz_tenant: Tenant, pool: Pool) -> AsyncIterator[Fuzz]:
    # An address of its own: the generated sign-ins fail, and failures count per source
    # (the suite's other clients would find their source locked).
    async with client_of(fuzz_app, ip="198.51.100.8") as client:
        fuzz = Fuzz(client, fuzz_tenant.tokens[Role.ADMIN], pool)
        yield fuzz
        _report(fuzz)


@pytest.fixture
async def anonymous(fuzz_app: object, pool: Pool) -> AsyncIterator[Fuzz]:
    async with client_of(fuzz_app, ip="198.51.100.9") as client:
        fuzz = Fuzz(client, None, pool)
        yield fuzz
        _report(fuzz)


_STARTED = time.perf_counter()


def _report(fuzz: Fuzz) -> None:
    print(  # shown with -s; the figures of a run
        f"\nfuzz: {fuzz.sent} requests, statuses {dict(sorted(fuzz.statuses.items()))}, "
        f"codes {dict(sorted(fuzz.codes.items()))}, {time.perf_counter() - _STARTED:.1f}s"
    )


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# --- The runs ---------------------------------------------------------------------------------


@fuzz_settings(examples=600)
@given(document=operations("query"), via_get=st.booleans())
async def test_generated_queries_as_an_admin(as_admin: Fuzz, document: str, via_get: bool) -> None:
    await as_admin.send(document, via_get=via_get)


@fuzz_settings(examples=600)
@given(document=operations("mutation"))
async def test_generated_mutations_as_an_admin(as_admin: Fuzz, document: str) -> None:
    await as_admin.send(document)


@fuzz_settings(examples=300)
@given(document=invalid_operations("query") | invalid_operations("mutation"))
async def test_generated_invalid_operations_as_an_admin(as_admin: Fuzz, document: str) -> None:
    await as_admin.send(document)


@fuzz_settings(examples=300)
@given(document=operations("query") | operations("mutation"))
async def test_generated_operations_anonymously(anonymous: Fuzz, document: str) -> None:
    await anonymous.send(document)


@fuzz_settings(examples=800)
@given(request=HOSTILE_REQUESTS, via_get=st.booleans())
async def test_hostile_variables_as_an_admin(
    as_admin: Fuzz, request: tuple[str, dict[str, Any]], via_get: bool
) -> None:
    document, variables = request
    await as_admin.send(document, variables, via_get=via_get and document.startswith("query"))


@fuzz_settings(examples=300)
@given(envelope=ENVELOPES, via=st.sampled_from(["get", "post"]))
async def test_generated_request_envelopes(as_admin: Fuzz, envelope: Any, via: str) -> None:
    """Whatever shape the request itself has (query, variables, operationName, extensions of
    any JSON type, persisted-query hashes)."""
    await as_admin.send_envelope(envelope, via)


@fuzz_settings(examples=200)
@given(envelope=MULTIPART)
async def test_generated_multipart_requests(as_admin: Fuzz, envelope: Any) -> None:
    """Multipart `operations` and `map` of any shape, with one file part."""
    await as_admin.send_envelope(envelope, "multipart")
