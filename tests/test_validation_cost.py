"""What the checks before execution cost Prism: work linear in the document whatever its
shape (counted, not timed), exponential documents refused before the standard rules run,
refused requests charged to their caller, and no name suggested in production."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from graphql import parse, specified_rules
from pydantic import SecretStr
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from prism.config import Mode, Settings
from prism.execution.cost import estimate, operation_of
from prism.execution.validation import (
    MAX_ARGUMENTS,
    MAX_ERRORS,
    MAX_FIELD_COMPARISONS,
    MAX_FIELD_PAIRS,
    MAX_MESSAGE_LENGTH,
    MAX_OBJECT_FIELDS,
    Analysis,
    Limits,
    analyse,
    validate_document,
)
from prism.models.enums import Role
from prism.schema import MAX_ALIASES, MAX_DEPTH, build_schema
from tests.conftest import RedisServer, app_with, client_of
from tests.factories import Tenant, codes, gql

LIMITS = Limits(max_depth=MAX_DEPTH, max_aliases=MAX_ALIASES, max_selections=5_000)
SCHEMA = build_schema()._schema


def doubling(n: int, leaf: str = "viewer { scopes }", on: str = "Query") -> str:
    """``F0`` spreads ``F1`` twice, which spreads ``F2`` twice, ...: ``2**n`` leaves."""
    head = "{ ...F0 }" if on == "Query" else '{ node(id: "x") { ...F0 } }'
    body = [f"fragment F{i} on {on} {{ ...F{i + 1} ...F{i + 1} }}" for i in range(n)]
    return " ".join([head, *body, f"fragment F{n} on {on} {{ {leaf} }}"])


# Times each selection as written is looked at, at most: measured, spreads followed, and
# walked once more for its arguments' values.
WORK_PER_NODE = 4


def written(query: str) -> int:
    """Definitions and selections as written (fields, spreads, inline fragments): the
    document's size."""
    from graphql import (
        FieldNode,
        FragmentDefinitionNode,
        FragmentSpreadNode,
        InlineFragmentNode,
        OperationDefinitionNode,
        Visitor,
        visit,
    )

    class Count(Visitor):
        seen = 0

        def enter(self, node: object, *_: object) -> None:
            if isinstance(
                node,
                FieldNode
                | FragmentSpreadNode
                | InlineFragmentNode
                | FragmentDefinitionNode
                | OperationDefinitionNode,
            ):
                Count.seen += 1

    visit(parse(query), Count())
    return Count.seen


def analysed(query: str) -> Analysis:
    return analyse(parse(query), LIMITS)


def messages(analysis: Analysis) -> list[str]:
    return [e.message for e in analysis.errors]


# -- linear work --------------------------------------------------------------------------


def test_doubling_fragment_chains_cost_work_linear_in_their_size() -> None:
    works = {}
    for n in range(5, 21):
        query = doubling(n)
        found = analysed(query)
        assert found.selections == 2 ** (n + 2) - 1  # spreads, viewers and scopes
        # each selection as written is looked at a bounded number of times; the walk of
        # the expanded document (to count same-place fields) only runs within the limit
        expanded_walk = found.selections if found.selections <= LIMITS.max_selections else 0
        assert found.work <= WORK_PER_NODE * written(query) + expanded_walk, (n, found.work)
        works[n] = found.work
        if found.selections > LIMITS.max_selections:
            assert any("once its fragments are expanded" in m for m in messages(found))
    # past the limit: each step adds one fragment, and a constant amount of work
    steps = {works[n + 1] - works[n] for n in range(13, 20)}
    assert len(steps) == 1, works
    assert steps.pop() <= 10, works


@pytest.mark.parametrize(
    ("shape", "query", "refused"),
    [
        (
            "inline fragments nested",
            "{ " + "... on Query { " * 60 + "viewer { scopes } " + "} " * 60 + "}",
            None,
        ),
        (
            "one fragment spread many times in one selection set",
            "{ " + "...F " * 2000 + "} fragment F on Query { viewer { scopes } }",
            "once its fragments are expanded",
        ),
        (
            "deep nesting",
            '{ node(id: "x") { ... on Document { '
            + "sections(first: 1) { edges { node { document { " * 4
            + "filename"
            + " } } } }" * 4
            + " } } }",
            "exceeds maximum operation depth of 12",
        ),
        (
            "aliases doubled by fragments",
            doubling(12, leaf="a: viewer { scopes }"),
            "aliases found. Allowed: 30",
        ),
        (
            "fragments on an interface",
            doubling(20, leaf="id", on="Node"),
            "once its fragments are expanded",
        ),
        (
            "inline fragments inside doubling fragments",
            doubling(20, leaf="... on Query { ... on Query { viewer { scopes } } }"),
            "once its fragments are expanded",
        ),
        (
            "the same field repeated in one place",
            "{ " + "viewer { scopes } " * 200 + "}",
            "The same field is selected too many times",
        ),
        (
            "a long chain of fragments spreading the next once",
            "{ ...F0 } "
            + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(300))
            + " fragment F300 on Query { viewer { scopes } }",
            "Fragments spread one another 301 deep",
        ),
    ],
)
def test_every_shape_is_measured_in_linear_work(
    shape: str, query: str, refused: str | None
) -> None:
    found = analysed(query)
    bounded = min(found.selections, LIMITS.max_selections)
    assert found.work <= WORK_PER_NODE * written(query) + bounded, (
        shape,
        found.work,
        written(query),
    )
    if refused is None:
        assert found.errors == [], shape
    else:
        assert any(refused in m for m in messages(found)), (shape, messages(found))
        assert all(e.extensions == {"code": "QUERY_TOO_COMPLEX"} for e in found.errors)


def test_cycles_and_unknown_fragments_are_found_by_the_same_pass() -> None:
    """Invalid anyway; graphql-core's rules would compare every two of these spreads."""
    cycles = (
        "{ "
        + " ".join(f"...F{i}" for i in range(450))
        + " } "
        + " ".join(f"fragment F{i} on Query {{ ...F{i} }}" for i in range(450))
    )
    unknown = "{ " + "...Nowhere " * 1000 + " ...Elsewhere }"
    for query, first in [
        (cycles, "Cannot spread fragment 'F0' within itself."),
        (unknown, "Unknown fragment 'Nowhere'."),
    ]:
        found = analysed(query)
        assert found.work <= WORK_PER_NODE * written(query)
        assert messages(found)[0] == first
        assert len(found.errors) <= 100
    assert messages(analysed(unknown)) == [
        "Unknown fragment 'Nowhere'.",
        "Unknown fragment 'Elsewhere'.",
    ]


def test_depth_and_aliases_are_counted_through_fragments_as_before() -> None:
    # depth: fields that select something, through spreads and inline fragments
    twelve = (
        '{ node(id: "x") { ...D } } fragment D on Document { ... on Document { '
        "sections(first: 1) { edges { node { document { sections(first: 1) { edges { node { "
        "...E } } } } } } } } } fragment E on Section { document { sections(first: 1) { "
        "edges { node { id } } } } }"
    )
    assert analysed(twelve).errors == []
    thirteen = twelve.replace("node { id }", "node { document { filename } }")
    assert messages(analysed(thirteen)) == ["'anonymous' exceeds maximum operation depth of 12"]
    # introspection fields do not count (as in Strawberry's limiter)
    introspection = "{ __schema { types { " + "ofType { " * 14 + "name" + " }" * 14 + " } } }"
    assert analysed(introspection).errors == []
    # aliases: every spread counts its fragment's aliases again
    fifteen = " ".join(f"a{i}: viewer {{ scopes }}" for i in range(15))
    thirty = "{ ...A ...A } fragment A on Query { " + fifteen + " }"
    assert analysed(thirty).errors == []
    assert messages(analysed(thirty.replace("...A ...A", "...A ...A ...A"))) == [
        "45 aliases found. Allowed: 30"
    ]


def test_the_cost_estimate_walks_each_fragment_once_and_stays_exact() -> None:
    for n in range(5, 21):
        query = doubling(n)
        document = parse(query)
        operation = operation_of(document, None)
        assert operation is not None
        found = estimate(SCHEMA, document, operation, {})
        assert found.cost == 2**n  # one viewer object per leaf: still the upper bound
        assert found.root_fields == ["viewer"]
        assert found.root_field_count == 2**n
        assert found.work <= 3 * written(query), (n, found.work)
    # memoized per enclosing page size and variables: a fragment on a connection spread
    # under two different `first` costs what each asks
    pages = parse(
        "query($n: Int) { a: documents(first: 2) { ...C } b: documents(first: $n) { ...C } }"
        " fragment C on DocumentConnection { edges { node { filename uploadedBy { email } } } }"
    )
    operation = operation_of(pages, None)
    assert operation is not None
    # each: 1 (connection) + first × (edge + node + uploadedBy)
    assert estimate(SCHEMA, pages, operation, {"n": 10}).cost == (1 + 2 * 3) + (1 + 10 * 3)
    assert estimate(SCHEMA, pages, operation, {"n": 30}).cost == (1 + 2 * 3) + (1 + 30 * 3)


# -- through the server -------------------------------------------------------------------


@pytest.fixture
def standard_rules(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times graphql-core's standard rules ran."""
    import prism.execution.validation

    ran: list[int] = []
    validate = prism.execution.validation.validate

    def counting(*args: Any, **kwargs: Any) -> Any:
        ran.append(1)
        return validate(*args, **kwargs)

    monkeypatch.setattr(prism.execution.validation, "validate", counting)
    return ran


async def test_the_audit_document_is_refused_before_the_standard_rules(
    client: httpx.AsyncClient, standard_rules: list[int]
) -> None:
    attack = doubling(20).replace("viewer { scopes }", "viewer { scopes user { email } }")
    attack += " " + "#" * (1_699 - len(attack))  # the size the audit sent: 1.7 KB
    assert len(attack.encode()) == 1_700
    for _ in range(2):  # the second answer comes from the validation cache
        body = await gql(client, attack)  # anonymous
        assert codes(body) == ["QUERY_TOO_COMPLEX"], body
        assert "once its fragments are expanded" in body["errors"][0]["message"]
    assert standard_rules == []
    # the same-place bound too: graphql-core compares such fields pairwise
    repeated = "{ " + "viewer { scopes } " * (MAX_FIELD_PAIRS // 10) + "}"
    assert codes(await gql(client, repeated)) == ["QUERY_TOO_COMPLEX"]
    assert standard_rules == []
    # spreads of fragments that spread themselves, or of none: invalid, and refused first
    cycles = (
        "{ " + "...F ...G " * 300 + "} fragment F on Query { ...G } fragment G on Query { ...F }"
    )
    body = await gql(client, cycles)
    assert set(codes(body)) == {"BAD_USER_INPUT"}
    assert "within itself" in body["errors"][0]["message"]
    assert standard_rules == []
    # a document within the limits is validated by them as usual
    fresh = f"{{ viewer {{ scopez }} }} # {uuid.uuid4()}"
    assert codes(await gql(client, fresh)) == ["BAD_USER_INPUT"]
    assert standard_rules == [1]


# -- refused requests are charged ---------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def stingy(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    update: dict[str, Any] = {
        "rate_limit_capacity": 8,
        "rate_limit_refill_per_second": 0.01,
        "rate_limit_refusal_cost": 1,
    }
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        update["redis_url"] = SecretStr(server.url)
    return settings.model_copy(update=update)


INVALID = [
    "{ viewer { scopez } }",  # validation
    "{ viewer { ",  # does not parse
    "query($k: DocumentTyp) { viewer { scopes } }",  # unknown type
    "{ documents(first: 100) { edges { node { sections(first: 100) { edges { node { "
    "analyses { feedbackItems { category } } } } } } } } }",  # over the cost limit
]


async def test_refused_requests_spend_the_callers_allowance(
    stingy: Settings, database_url: str, tenant: Tenant, standard_rules: list[int]
) -> None:
    async with app_with(stingy, database_url) as app, client_of(app, ip="198.51.100.9") as http:
        token = tenant.tokens[Role.VIEWER]
        seen = []
        for i in range(12):
            response = await http.post(
                "/graphql",
                json={"query": INVALID[i % len(INVALID)] + f" # {i}"},
                headers={"authorization": f"Bearer {token}"},
            )
            seen.append(codes(response.json())[0])
            if seen[-1] == "RATE_LIMITED":
                retry = response.json()["errors"][0]["extensions"]["retryAfter"]
                assert retry >= 1
                assert response.headers["retry-after"] == str(retry)
        # the first eight are answered for what they are; then the allowance is spent
        assert set(seen[:8]) == {"BAD_USER_INPUT", "QUERY_TOO_COMPLEX"}, seen
        assert seen[8:] == ["RATE_LIMITED"] * 4, seen
        # spent: a new invalid document is not even validated
        before = len(standard_rules)
        limited = await gql(http, "{ viewer { emial } }", token=token)
        assert codes(limited) == ["RATE_LIMITED"]
        assert len(standard_rules) == before
        # nor is a valid one run
        assert codes(await gql(http, "{ viewer { scopes } }", token=token)) == ["RATE_LIMITED"]
        # another caller has an allowance of its own
        other = tenant.tokens[Role.AUDITOR]
        assert codes(await gql(http, "{ viewer { scopez } }", token=other)) == ["BAD_USER_INPUT"]
        assert (await gql(http, "{ viewer { scopes } }", token=other)).get("errors") is None
        # anonymous callers are charged by address
        anonymous = [codes(await gql(http, "{ viewer { " + f" # {i}")) for i in range(10)]
        assert anonymous[0] == ["BAD_USER_INPUT"]
        assert anonymous[-1] == ["RATE_LIMITED"]
    async with app_with(stingy, database_url) as app, client_of(app, ip="198.51.100.10") as http:
        # ... and another address is another caller
        assert codes(await gql(http, "{ viewer { " + " # new")) == ["BAD_USER_INPUT"]


# -- no suggestions in production ---------------------------------------------------------

MISSPELLED = [
    ("field", "{ documents { edges { node { filenam } } } }", None),
    ("argument", "{ documents(firts: 2) { totalCount } }", None),
    ("input field", "{ documents(filter: { documentTyp: [REPORT] }) { totalCount } }", None),
    ("enum value", "{ documents(filter: { documentType: [REPORTS] }) { totalCount } }", None),
    ("type name", "query($f: DocumentFiltr) { documents(filter: $f) { totalCount } }", None),
    ("directive argument", "{ viewer @include(iff: true) { scopes } }", None),
    (
        "input field in a default value",
        "query($f: DocumentFilter = { documentTyp: [REPORT] }) { documents(filter: $f) "
        "{ totalCount } }",
        None,
    ),
    (
        "enum value in a variable",
        "query($f: DocumentFilter) { documents(filter: $f) { totalCount } }",
        {"f": {"documentType": ["REPORTS"]}},
    ),
    (
        "input field in a variable",
        "query($f: DocumentFilter) { documents(filter: $f) { totalCount } }",
        {"f": {"documentTyp": ["REPORT"]}},
    ),
    (
        "mutation input in a variable",
        "mutation($i: UpdateDocumentInput!) { updateDocument(input: $i) { id } }",
        {"i": {"id": "x", "documentTyp": "REPORT"}},
    ),
]


@pytest.mark.parametrize("production", [True, False], ids=["production", "development"])
async def test_production_suggests_no_name(
    settings: Settings, database_url: str, tenant: Tenant, production: bool
) -> None:
    update: dict[str, Any] = {"mode": Mode.PRODUCTION if production else Mode.DEVELOPMENT}
    if production:
        update["jwt_secret"] = SecretStr("p" * 48)
    chosen = settings.model_copy(update=update)
    async with app_with(chosen, database_url) as app, client_of(app) as http:
        suggested = []
        for what, query, variables in MISSPELLED:
            body = await gql(http, query, variables, token=tenant.tokens[Role.ADMIN])
            assert codes(body), (what, body)
            assert set(codes(body)) == {"BAD_USER_INPUT"}, (what, body)
            if any("Did you mean" in e["message"] for e in body["errors"]):
                suggested.append(what)
    if production:
        assert suggested == []
    else:  # the same mistakes are suggested a fix in development: the test can tell
        assert len(suggested) == len(MISSPELLED), suggested


# -- the standard rules' own work is bounded too ------------------------------------------


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The work OverlappingFieldsCanBeMerged did, in graphql-core's own units (every
    comparison of fragments, fields and arguments spends some)."""
    from graphql.validation.rules import overlapping_fields_can_be_merged as rule

    spent: list[int] = []
    spend = rule.spend_complexity_budget

    def counting(context: Any, cost: int) -> None:
        spent.append(cost)
        spend(context, cost)

    monkeypatch.setattr(rule, "spend_complexity_budget", counting)
    return spent


def checked(query: str) -> list[str]:
    errors = validate_document(SCHEMA, parse(query), specified_rules, LIMITS, hide_suggestions=True)
    return [e.message for e in errors]


def distinct_fragments(n: int, on: str, at: str, field: str = "x") -> str:
    spreads = " ".join(f"...F{i}" for i in range(n))
    fragments = " ".join(f"fragment F{i} on {on} {{ {field}{i} }}" for i in range(n))
    return at.replace("SPREADS", spreads) + " " + fragments


@pytest.mark.parametrize(
    ("shape", "query"),
    [
        (
            "the audit's: 550 fragments at one place",
            distinct_fragments(550, "Viewer", "query{a:viewer{SPREADS}}"),
        ),
        ("at the root", distinct_fragments(550, "Query", "{ SPREADS }")),
        ("on an interface", distinct_fragments(550, "Node", '{ node(id: "x") { SPREADS } }')),
        (
            "spread in inline fragments (flattened into one place)",
            "{ viewer { "
            + " ".join(f"... on Viewer {{ ...F{i} }}" for i in range(300))
            + " } } "
            + " ".join(f"fragment F{i} on Viewer {{ x{i} }}" for i in range(300)),
        ),
    ],
)
def test_fragment_comparisons_are_bounded(shape: str, query: str, comparisons: list[int]) -> None:
    """graphql-core compares every two fragments spread at one place, whatever their
    fields (its own budget allows 500,000 units: seconds). Prism's allows
    MAX_FIELD_COMPARISONS, then refuses the document as too complex."""
    found = checked(query)
    assert sum(comparisons) <= MAX_FIELD_COMPARISONS + 2, (shape, sum(comparisons))
    assert any(
        "takes too much work" in m or "once its fragments" in m or "aliases" in m for m in found
    ), (shape, found[:3])


def test_real_documents_stay_far_within_the_comparison_budget(comparisons: list[int]) -> None:
    twenty = (
        "{ viewer { scopes "
        + " ".join(f"...F{i}" for i in range(20))
        + " } } "
        + " ".join(f"fragment F{i} on Viewer {{ scopes user {{ email }} }}" for i in range(20))
    )
    assert checked(twenty) == []
    # twenty fragments at one place, all selecting the same fields (compared in depth):
    # about a tenth of the budget
    assert 0 < sum(comparisons) < MAX_FIELD_COMPARISONS / 4, sum(comparisons)


@pytest.mark.parametrize(
    ("shape", "query"),
    [
        (
            "an object value with many unknown fields",
            "{ documents(filter: {"
            + " ".join(f"f{i}: 1" for i in range(1600))
            + "}) { totalCount } }",
        ),
        (
            "an object value with one field repeated",
            "{ documents(filter: {" + 'department: "x" ' * 1600 + "}) { totalCount } }",
        ),
        (
            "an object value deep in a list, in a fragment",
            '{ ...F } fragment F on Query { documents(filter: { department: "x" }) { '
            'totalCount } nodes(ids: ["a", {' + " ".join(f"f{i}: 1" for i in range(100)) + "}]) "
            "{ id } }",
        ),
        (
            "a variable's default",
            "query($f: DocumentFilter = {" + " ".join(f"f{i}: 1" for i in range(100)) + "}) { "
            "documents(filter: $f) { totalCount } }",
        ),
        (
            "many unknown arguments",
            "{ documents(" + " ".join(f"a{i}: 1" for i in range(1600)) + ") { totalCount } }",
        ),
        ("one argument repeated", "{ documents(" + "first: 1 " * 1600 + ") { totalCount } }"),
        ("a directive's arguments", "{ viewer @include(" + "if: true " * 100 + ") { scopes } }"),
    ],
)
def test_large_literals_and_argument_lists_are_refused_by_the_linear_pass(
    shape: str, query: str
) -> None:
    """graphql-core's ValuesOfCorrectType prints the whole object value in each error
    about one of its fields: quadratic in the value's size."""
    found = analysed(query)
    assert [e.extensions for e in found.errors] == [{"code": "QUERY_TOO_COMPLEX"}], shape
    assert "the limit is" in found.errors[0].message


def test_the_bounds_are_far_above_what_the_schema_accepts() -> None:
    from graphql import GraphQLInputObjectType, GraphQLInterfaceType, GraphQLObjectType

    types = SCHEMA.type_map.values()
    widest_input = max(len(t.fields) for t in types if isinstance(t, GraphQLInputObjectType))
    most_arguments = max(
        [
            len(f.args)
            for t in types
            if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)
            for f in t.fields.values()
        ]
        + [len(d.args) for d in SCHEMA.directives]
    )
    assert widest_input * 4 <= MAX_OBJECT_FIELDS
    assert most_arguments * 4 <= MAX_ARGUMENTS


def test_errors_are_few_and_short() -> None:
    """Within the bounds, a value wrong in every field: at most MAX_ERRORS errors, none
    longer than MAX_MESSAGE_LENGTH (each would print the whole value)."""
    wide = " ".join(f'f{i}: "{"x" * 200}"' for i in range(MAX_OBJECT_FIELDS))
    query = "{ documents(filter: {" + wide + "}) { totalCount } }"
    found = checked(query)
    assert 0 < len(found) <= MAX_ERRORS + 1  # and graphql-core's "Validation aborted."
    assert all(len(m) <= MAX_MESSAGE_LENGTH for m in found), max(map(len, found))


def test_the_estimate_reads_variables_as_execution_coerces_them() -> None:
    """A default (`$n: Int = 100`), a float (`100.0`) and a single ID for a list are what
    execution runs with: the estimate is an upper bound of that."""
    pages = parse(
        "query($n: Int = 100) { documents(first: $n) { edges { node { "
        "sections(first: $n) { edges { node { id } } } } } } }"
    )
    operation = operation_of(pages, None)
    assert operation is not None
    explicit = estimate(SCHEMA, pages, operation, {"n": 100}).cost
    assert explicit == 1 + 100 * (2 + 1 + 100 * 2)
    assert estimate(SCHEMA, pages, operation, None).cost == explicit
    assert estimate(SCHEMA, pages, operation, {}).cost == explicit
    assert estimate(SCHEMA, pages, operation, {"n": 100.0}).cost == explicit
    assert estimate(SCHEMA, pages, operation, {"n": 2}).cost < explicit
    ids = parse('query($ids: [ID!]! = ["a", "b", "c"]) { nodes(ids: $ids) { id } }')
    operation = operation_of(ids, None)
    assert operation is not None
    assert estimate(SCHEMA, ids, operation, None).cost == 3
    assert estimate(SCHEMA, ids, operation, {"ids": "a"}).cost == 1  # coerced to ["a"]


async def test_a_defaulted_variable_does_not_pass_the_cost_limit(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = (
        "query($n: Int = 100) { documents(first: $n) { edges { node { sections(first: $n) "
        "{ edges { node { analyses { feedbackItems { category } } } } } } } } }"
    )
    token = tenant.tokens[Role.ADMIN]
    for variables in ({"n": 100}, None, {"n": 100.0}):
        body = await gql(client, query, variables, token=token)
        assert codes(body) == ["QUERY_TOO_COMPLEX"], (variables, body)


EQUIVALENCE_DOCUMENTS = [
    "{ viewer { scopes } }",
    "query A { documents(first: 2) { edges { node { id } } } } query A { viewer { scopes } }",
    "{ nope }",
    '{ documents(first: "x") { totalCount } }',
    "query Q($a: Int) { viewer { scopes } }",
    "query Q { documents(first: $missing) { totalCount } }",
    "{ ...F } fragment F on Query { ...G } fragment G on Query { ...F }",
    "{ ...Unknown }",
    "fragment F on Query { viewer { scopes } } { viewer { scopes } }",
    "{ viewer @unknown { scopes } }",
    "{ viewer @skip(if: true) @skip(if: false) { scopes } }",
    "{ a: viewer { scopes } a: documents { totalCount } }",
    "{ node { id } }",
    "{ viewer { scopes { x } } }",
    "{ viewer }",
    "{ ... on User { id } }",
    '{ node(id: "x") { ... on Document { filename } ... on Nope { id } } }',
    'subscription { documentProgress(id: "x") { id } viewer { scopes } }',
    "{ __schema { types { name } } }",
    "query Q($a: Int, $a: Int) { viewer { scopes } }",
    "query Q($d: DocumentFilter) { documents(filter: $d, first: 1, bogus: 1) { totalCount } }",
    "{ documents(filter: {riskLevel: [NOPE]}) { totalCount } }",
    "mutation { logout }",
    "query Q($unused: Int) { viewer { scopes } }",
    "query Q { documents(first: $undefined) { totalCount } }",
    'query Q($f: Int) { documents(first: $f, filter: {search: "$x"}) { totalCount } }',
    "query Q($f: String) { documents(first: $f) { totalCount } }",
]


@pytest.mark.parametrize("source", EQUIVALENCE_DOCUMENTS)
def test_rules_looked_up_per_class_validate_as_graphql_core_does(source: str) -> None:
    """The rules ``validate_document`` runs find exactly the errors graphql-core's own
    classes find, at the same places, for valid and invalid documents alike."""
    from graphql import validate

    from prism.execution.visitors import resolved_per_class
    from prism.schema import build_schema as build

    for schema in (SCHEMA, build(Settings(_env_file=None, mode=Mode.PRODUCTION))._schema):
        rules = (*specified_rules, *build_schema().validation.rules)  # type: ignore[attr-defined]
        document = parse(source)
        stock = validate(schema, document, rules)
        per_class = validate(schema, document, tuple(resolved_per_class(r) for r in rules))
        assert [(e.message, e.locations) for e in per_class] == [
            (e.message, e.locations) for e in stock
        ]
        # What Prism runs (the rules of variables left out of a document without any):
        # the same errors as graphql-core's classes with every rule, for a document its own
        # linear checks let through.
        if analyse(document, LIMITS).errors:
            continue
        everything = (*rules, MaybeNullValidationRule, OneOfInputValidationRule)
        prism = validate_document(schema, document, rules, LIMITS, hide_suggestions=False)
        assert sorted((e.message, str(e.locations)) for e in prism) == sorted(
            (e.message, str(e.locations)) for e in validate(schema, document, everything)
        )
