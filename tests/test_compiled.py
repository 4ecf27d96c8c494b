"""Compiled registered operations answer exactly what the interpreted path answers: every
registered operation here and a few hundred generated ones, for principals of every role and
clearance, on one database."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from graphql import parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism.audit import OPERATOR
from prism.authn.bearer import authenticate_bearer
from prism.config import Settings
from prism.execution.fragments import NotPlanned
from prism.execution.ids import to_global_id
from prism.execution.planner import concat, global_id
from prism.execution.plans import Plan, PlanCache
from prism.models import jobs as job_models
from prism.models.enums import Classification, JobState, Role
from prism.operations.persisted import split_operations
from prism.schema import build_schema
from prism.services import Services
from prism.tokens import api_tokens
from tests.conftest import app_with, client_of
from tests.factories import PASSWORD, Tenant, add_document, add_user, gid, gql, make_tenant
from tests.test_persisted import _call, _register

OPERATIONS = """
query Nested($first: Int) {
  documents(first: $first) { edges { node { id filename sections(first: 5) {
    edges { node { id order } } } } } } }
query Page($first: Int!, $after: String, $filter: DocumentFilter) {
  documents(first: $first, after: $after, filter: $filter,
            orderBy: {field: FILENAME, direction: ASC}) {
    totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { ...Row } } } }
query One($id: ID!) {
  node(id: $id) { __typename id ... on Document { filename classification costUsd createdAt
    uploadedBy { email role }
    analyses(first: 10) { edges { node { model riskLevel confidence costUsd durationSeconds
      startedAt feedbackItems { id category riskLevel confidence quote suggestion } } } }
    feedback(first: 10) { edges { node { action rating workflowStatus author { email } } } }
    sections(first: 3) { pageInfo { endCursor } edges { node { name content redacted
      analyses { tokensUsed } document { filename } } } } } } }
query Again($id: ID!) { document(id: $id) { a: filename b: filename riskLevel } }
query Count($filter: DocumentFilter) { documents(filter: $filter) { totalCount } }
query People { users(first: 50) { edges { node { email role clearance mfaEnabled createdAt } } } }
query Me { viewer { scopes } }
query Whole { viewer { scopes
  organization { __typename id name domain subscriptionTier dataRetentionDays createdAt }
  user { id email role }
  apiToken { __typename id name prefix scopes expiresAt lastUsedAt revokedAt createdAt } } }
query Tokens { apiTokens { __typename id name prefix scopes expiresAt lastUsedAt revokedAt
  createdAt } }
fragment Row on Document { __typename filename fileSize documentType riskLevel legalHold
  totalSections processingStatus }
"""
CLEARANCES = list(Classification)
LOGIN = """mutation($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) { accessToken } }"""


@pytest.fixture(scope="module")
async def world(services: Services) -> dict[str, Any]:
    from tests.factories import make_tenant

    tenant = await make_tenant(services, department="legal")
    documents = []
    for n, (classification, department) in enumerate(
        [
            (Classification.PUBLIC, "legal"),
            (Classification.INTERNAL, "legal"),
            (Classification.INTERNAL, "hr"),
            (Classification.CONFIDENTIAL, "legal"),
            (Classification.RESTRICTED, "legal"),
            (Classification.RESTRICTED, "hr"),
        ]
        * 2
    ):
        documents.append(
            await add_document(
                services,
                tenant,
                classification=classification,
                department=department,
                filename=f'{n:02d}-{classification.value.lower()}-\u00e9t\u00e9 "q".txt',
            )
        )
    tokens = dict(tenant.tokens)
    principals = {role.value: token for role, token in tokens.items()}
    for clearance in CLEARANCES:
        for department in ("legal", "hr", None):
            _, token = await add_user(
                services, tenant, role=Role.REVIEWER, clearance=clearance, department=department
            )
            principals[f"REVIEWER-{clearance.value}-{department}"] = token
    # A service token: no user, a role and clearance of its own, some scopes.
    service = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="service",
        scopes=["audit:read", "documents:read", "users:admin"],
        role=Role.AUDITOR,
        clearance=Classification.CONFIDENTIAL,
    )
    principals["SERVICE"] = service.secret
    return {"tenant": tenant, "documents": documents, "principals": principals}


@pytest.fixture(scope="module")
async def interpreted(settings: Settings, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    off = settings.model_copy(update={"compiled_operations": False})
    async with app_with(off, database_url) as app, client_of(app) as client:
        yield client


async def _both(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    token: str,
    digest: str,
    variables: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    compiled = await _call(client, token, digest, variables)
    reference = await _call(interpreted, token, digest, variables)
    assert reference["extensions"]["execution"]["path"] == "interpreted"
    # A statement PostgreSQL refuses falls back quietly: it must never happen.
    assert compiled["extensions"]["execution"].get("reason") != "the statement failed"
    for body in (compiled, reference):
        body.pop("_headers")
        body["extensions"].pop("cost", None)
    return compiled, reference


async def test_registered_operations_answer_the_same_on_both_paths(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    services: Services,
    world: dict[str, Any],
) -> None:
    registered = await _register(services, OPERATIONS)
    documents = world["documents"]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("Nested", {"first": 50}),
        ("Nested", {}),
        ("Page", {"first": 3}),
        ("Page", {"first": 2, "filter": {"classification": ["INTERNAL", "PUBLIC"]}}),
        ("People", {}),
        ("Count", {}),
        ("Count", {"filter": {"processingStatus": ["FAILED"]}}),
        ("Page", {"first": 5, "filter": {"processingStatus": ["FAILED"]}}),
        ("Me", {}),
        ("Whole", {}),
        ("Tokens", {}),
        *[("One", {"id": gid("Document", d.id)}) for d in documents[:6]],
        ("One", {"id": gid("User", documents[0].uploaded_by)}),
        *[("Again", {"id": gid("Document", d.id)}) for d in documents[:6]],
    ]
    paths: dict[str, int] = {}
    for name, token in world["principals"].items():
        for operation, variables in cases:
            compiled, reference = await _both(
                client, interpreted, token, registered[operation], variables
            )
            assert compiled.get("data") == reference.get("data"), (name, operation, variables)
            assert [e["extensions"]["code"] for e in compiled.get("errors", [])] == [
                e["extensions"]["code"] for e in reference.get("errors", [])
            ]
            path = compiled["extensions"]["execution"]["path"]
            paths[path] = paths.get(path, 0) + 1
        # page through with the cursors the compiled path gives
        after = None
        seen: list[str] = []
        for _ in range(10):
            compiled, reference = await _both(
                client, interpreted, token, registered["Page"], {"first": 2, "after": after}
            )
            assert compiled["data"] == reference["data"], name
            page = compiled["data"]["documents"]
            seen += [e["node"]["filename"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert len(seen) == len(set(seen))
    # a good share came from the compiled path (the rest: masked or audited text, the
    # viewer, NOT_FOUND answers), so both paths were compared for real
    assert paths["compiled"] >= 100, paths


DEFAULTS = """
query Small($first: Int = 2) { documents(first: $first) { totalCount edges { node { filename } } } }
query Sized($first: Int = 2, $order: DocumentOrderField = FILENAME,
            $filter: DocumentFilter = {classification: [INTERNAL, PUBLIC]}) {
  documents(first: $first, orderBy: {field: $order, direction: ASC}, filter: $filter) {
    totalCount edges { node { filename classification } } } }
"""


async def test_variables_left_out_take_the_operations_defaults_on_both_paths(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    services: Services,
    world: dict[str, Any],
) -> None:
    """A variable the request leaves out has its default from the operation (GraphQL's
    coercion gives it to the interpreted path); an explicit null stays null."""
    registered = await _register(services, DEFAULTS)
    token = world["tenant"].tokens[Role.ADMIN]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("Small", {}),
        ("Small", {"first": 3}),
        ("Small", {"first": None}),
        ("Sized", {}),
        ("Sized", {"first": 3}),
        ("Sized", {"order": "FILE_SIZE"}),
        ("Sized", {"filter": None}),
        ("Sized", {"filter": {"classification": ["CONFIDENTIAL"]}}),
    ]
    for name, variables in cases:
        compiled, reference = await _both(client, interpreted, token, registered[name], variables)
        assert compiled["data"] == reference["data"], (name, variables)
        assert compiled["extensions"]["execution"] == {"path": "compiled"}, (name, variables)
        if not variables:  # the defaults: 2 documents, not the page size's default (20)
            page = compiled["data"]["documents"]
            assert len(page["edges"]) == 2 < page["totalCount"], name


DOCUMENT_SCALARS = [
    "id",
    "__typename",
    "filename",
    "mimeType",
    "fileSize",
    "sha256",
    "documentType",
    "classification",
    "wordCount",
    "processingStatus",
    "createdAt",
    "updatedAt",
    "legalHold",
    "totalSections",
    "totalFeedbackItems",
    "riskLevel",
    "confidence",
    "costUsd",
]
SECTION_SCALARS = ["id", "order", "wordCount", "name", "content", "redacted"]
ANALYSIS_SCALARS = ["id", "model", "riskLevel", "confidence", "tokensUsed", "costUsd", "startedAt"]
FEEDBACK_SCALARS = ["id", "action", "rating", "workflowStatus", "createdAt", "customText"]


def _pick(rng: random.Random, names: list[str]) -> str:
    chosen = rng.sample(names, rng.randint(1, min(4, len(names))))
    return " ".join(f"a{i}: {n}" if rng.random() < 0.2 else n for i, n in enumerate(chosen))


def _connection(rng: random.Random, field: str, body: str) -> str:
    first = rng.choice([None, 0, 1, 2, 5])
    args = f"(first: {first})" if first is not None else ""
    info = rng.choice(["", "pageInfo { hasNextPage endCursor }", "pageInfo { startCursor }"])
    cursor = "cursor " if rng.random() < 0.3 else ""
    return f"{field}{args} {{ {info} edges {{ {cursor}node {{ {body} }} }} }}"


def _document_selection(rng: random.Random, depth: int = 0) -> str:
    parts = [_pick(rng, DOCUMENT_SCALARS)]
    if rng.random() < 0.5:
        section = _pick(rng, SECTION_SCALARS)
        if rng.random() < 0.4:
            section += f" analyses {{ {_pick(rng, ANALYSIS_SCALARS)} }}"
        parts.append(_connection(rng, "sections", section))
    if rng.random() < 0.4:
        analysis = _pick(rng, ANALYSIS_SCALARS)
        if rng.random() < 0.4:
            analysis += " feedbackItems { id category confidence }"
        if depth == 0 and rng.random() < 0.3:
            analysis += f" document {{ {_pick(rng, DOCUMENT_SCALARS)} }}"
        parts.append(_connection(rng, "analyses", analysis))
    if rng.random() < 0.4:
        feedback = _pick(rng, FEEDBACK_SCALARS)
        if rng.random() < 0.5:
            feedback += " author { email role }"
        parts.append(_connection(rng, "feedback", feedback))
    if rng.random() < 0.3:
        parts.append("uploadedBy { email }")
    return " ".join(parts)


def _operation(rng: random.Random, n: int) -> str:
    first = rng.choice([1, 3, 7, 20])
    order = rng.choice(["CREATED_AT", "FILENAME", "FILE_SIZE", "RISK"])
    direction = rng.choice(["ASC", "DESC"])
    body = _document_selection(rng)
    total = "totalCount " if rng.random() < 0.5 else ""
    return (
        f"query Generated{n} {{ documents(first: {first}, orderBy: {{field: {order}, "
        f"direction: {direction}}}) {{ {total}edges {{ node {{ {body} }} }} }} }}"
    )


@pytest.mark.parametrize("seed", range(4))
async def test_generated_operations_answer_the_same_on_both_paths(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    services: Services,
    world: dict[str, Any],
    seed: int,
) -> None:
    rng = random.Random(seed)
    schema = build_schema()._schema
    principals = list(world["principals"].items())
    compiled_answers = 0
    for n in range(40):
        source = _operation(rng, n)
        assert split_operations(source, schema)  # the generator writes valid operations
        digest = (await _register(services, source))[f"Generated{n}"]
        name, token = rng.choice(principals)
        compiled, reference = await _both(client, interpreted, token, digest, {})
        assert compiled == reference | {"extensions": compiled["extensions"]}, (name, source)
        compiled_answers += compiled["extensions"]["execution"]["path"] == "compiled"
    assert compiled_answers >= 10


async def test_the_compiled_path_can_be_turned_off_and_reports_why_not(
    client: httpx.AsyncClient, services: Services, world: dict[str, Any]
) -> None:
    registered = await _register(services, OPERATIONS)
    tenant: Tenant = world["tenant"]
    me = await _call(client, tenant.tokens[Role.VIEWER], registered["Me"])
    assert me["extensions"]["execution"] == {"path": "compiled"}
    log = await _call(client, tenant.tokens[Role.VIEWER], (await _register(services, NODES))["Log"])
    assert log["extensions"]["execution"] == {
        "path": "interpreted",
        "reason": "verifyAuditChain: Query.verifyAuditChain",
    }
    nested = await _call(client, tenant.tokens[Role.VIEWER], registered["Nested"])
    assert nested["extensions"]["execution"] == {"path": "compiled"}
    # A query sent as text (the web client's case) is planned too.
    adhoc = await gql(client, "{ documents { totalCount } }", token=tenant.tokens[Role.VIEWER])
    assert adhoc["extensions"]["execution"] == {"path": "compiled"}


async def test_queries_sent_as_text_are_planned_and_answer_as_the_interpreted_path(
    client: httpx.AsyncClient, interpreted: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    """The nested list and a filtered page sent as text, not registered: planned (one plan
    for both values of `first`), and the same answer as the reference path gives."""
    tenant: Tenant = world["tenant"]
    text = (
        "query Nested($first: Int) { documents(first: $first) { edges { node { id filename "
        "sections(first: 5) { edges { node { id order } } } } } } }"
    )
    for role in (Role.VIEWER, Role.ADMIN):
        for first in (2, 7):
            token = tenant.tokens[role]
            planned = await gql(client, text, {"first": first}, token=token)
            reference = await gql(interpreted, text, {"first": first}, token=token)
            assert planned["extensions"]["execution"] == {"path": "compiled"}
            assert "execution" not in reference["extensions"] or reference["extensions"][
                "execution"
            ] == {"path": "interpreted", "reason": "compiled operations are off"}
            assert planned["data"] == reference["data"], (role, first)


async def _planned(
    services: Services, cache: PlanCache, source: str, name: str, token: str, variables: Any
) -> dict[str, Any] | str:
    """The planned answer through ``cache`` (run as the compiled path runs it), or why not."""
    principal = await authenticate_bearer(services.db, services.access_tokens, token)
    entry = cache.get(source, parse(source), name, principal, variables=variables)
    if isinstance(entry, str):
        return entry
    try:
        compiled = entry.bind(variables, principal)
    except NotPlanned as reason:
        return str(reason)
    async with services.db.transaction(principal.organization_id) as session:
        text = await session.scalar(compiled.sql, compiled.values)
    data: dict[str, Any] = orjson.loads(text)
    if any(data.get(key) is None for key in compiled.must_exist):
        return "not found"
    return data


async def test_one_plan_serves_every_value_of_the_variables(
    interpreted: httpx.AsyncClient, services: Services, world: dict[str, Any]
) -> None:
    """One cache entry per (document, operation, visibility class): page sizes, filters,
    cursors and IDs are bound, and each binding answers what the interpreted path answers."""
    registered = await _register(services, OPERATIONS)
    documents = world["documents"]
    cache = PlanCache()
    token = world["tenant"].tokens[Role.ADMIN]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("Page", {"first": 1}),
        ("Page", {"first": 4}),
        ("Page", {"first": 2, "filter": {"classification": ["INTERNAL", "PUBLIC"]}}),
        ("Page", {"first": 3, "filter": {"processingStatus": ["FAILED"], "legalHold": False}}),
        ("Page", {"first": 3, "filter": {"uploadedBy": gid("User", documents[0].uploaded_by)}}),
        ("Page", {"first": 3, "filter": None}),
        ("Nested", {"first": 1}),
        ("Nested", {"first": 3}),
        ("Nested", {}),
        ("Again", {"id": gid("Document", documents[0].id)}),
        ("Again", {"id": gid("Document", documents[1].id)}),
    ]
    for name, variables in cases:
        answer = await _planned(services, cache, OPERATIONS, name, token, variables)
        reference = await _call(interpreted, token, registered[name], variables)
        assert answer == reference["data"], (name, variables)
    assert len(cache) == 3  # Page, Nested, Again: one entry each
    page = cache.entries[next(k for k in cache.entries if k[1] == "Page")]
    assert isinstance(page, Plan)
    assert len(page.statements) == 1
    # a cursor is a shape of its own (one more statement), its key parts are bound
    after = None
    for _ in range(8):
        variables = {"first": 2, "after": after}
        answer = await _planned(services, cache, OPERATIONS, "Page", token, variables)
        reference = await _call(interpreted, token, registered["Page"], variables)
        assert answer == reference["data"], variables
        assert isinstance(answer, dict)
        if not answer["documents"]["pageInfo"]["hasNextPage"]:
            break
        after = answer["documents"]["pageInfo"]["endCursor"]
    assert len(page.statements) == 2
    assert len(cache) == 3
    # values the interpreted path refuses go to it (it reports the error)
    for variables in (
        {"first": 101},
        {"first": -1},
        {"first": 2, "after": "not-a-cursor"},
        {"first": 2, "filter": {"uploadedBy": "bad"}},
        {"first": 2, "filter": {"createdAfter": "2024-01-01T00:00:00Z"}},
    ):
        assert isinstance(
            await _planned(services, cache, OPERATIONS, "Page", token, variables), str
        ), variables
    # the caller's own user is bound per request: one plan for two reviewers of one class
    reviewers = [world["tenant"].tokens[Role.REVIEWER], world["principals"]["REVIEWER"]]
    reviewers.append(world["principals"]["REVIEWER-CONFIDENTIAL-legal"])
    me_digest = (await _register(services, NODES))["MeAgain"]
    before = len(cache)
    emails = set()
    for reviewer in reviewers:
        answer = await _planned(services, cache, NODES, "MeAgain", reviewer, {})
        reference = await _call(interpreted, reviewer, me_digest, {})
        assert answer == reference["data"]
        emails.add(reference["data"]["viewer"]["user"]["email"])
    assert len(emails) == 2
    assert len(cache) == before + 1
    bad = await _planned(services, cache, OPERATIONS, "Again", token, {"id": "nope"})
    assert bad == "document: an ID the interpreted path refuses"
    assert len(cache) == 4


NODES = """
query AnyNode($id: ID!) { node(id: $id) { __typename id
  ... on Section { order wordCount name content redacted document { filename }
    analyses { model riskLevel } }
  ... on Analysis { model riskLevel costUsd tokensUsed section { order redacted }
    document { classification } feedbackItems { id category } }
  ... on Feedback { action rating author { email } document { filename } }
  ... on User { email role department clearance createdAt }
  ... on Document { filename classification } } }
query Several($ids: [ID!]!) { nodes(ids: $ids) { __typename id ... on Document { filename }
  ... on User { email } ... on Section { order redacted } ... on Analysis { model } } }
query MeUser { viewer { scopes user { __typename id email role department } } }
query MeAgain { viewer { user { id email } scopes } }
query Children($id: ID!) { document(id: $id) { uploadedBy { id }
  sections(first: 3) { edges { node { id } } }
  analyses(first: 3) { edges { node { id } } } } }
query Tokens { apiTokens { id } }
query Log { verifyAuditChain { valid } }
"""


@pytest.fixture(scope="module")
async def node_ids(
    interpreted: httpx.AsyncClient, services: Services, world: dict[str, Any]
) -> list[str]:
    """IDs of every planned node type the world has (read as an ADMIN), and a few that name
    nothing or another organization's rows."""
    registered = await _register(services, NODES)
    token = world["tenant"].tokens[Role.ADMIN]
    found: list[str] = []
    for document in world["documents"]:
        found.append(gid("Document", document.id))
        body = await _call(interpreted, token, registered["Children"], {"id": found[-1]})
        children = body["data"]["document"]
        found.append(children["uploadedBy"]["id"])
        for part in ("sections", "analyses"):
            found += [e["node"]["id"] for e in children[part]["edges"]]
    found += [gid("Section", uuid.uuid4()), gid("User", uuid.uuid4()), "bm90LWFuLWlk"]
    return list(dict.fromkeys(found))


async def test_nodes_of_every_planned_type_and_the_viewer_answer_the_same(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    services: Services,
    world: dict[str, Any],
    node_ids: list[str],
) -> None:
    registered = await _register(services, NODES)
    cases: list[tuple[str, dict[str, Any]]] = [("MeUser", {})]
    cases += [("AnyNode", {"id": i}) for i in node_ids[::2]]
    cases += [("Several", {"ids": node_ids[n : n + 4]}) for n in range(0, 12, 3)]
    cases += [("Several", {"ids": []})]
    paths: dict[str, int] = {}
    for name, token in world["principals"].items():
        for operation, variables in cases:
            compiled, reference = await _both(
                client, interpreted, token, registered[operation], variables
            )
            assert compiled.get("data") == reference.get("data"), (name, operation, variables)
            assert [e["extensions"]["code"] for e in compiled.get("errors", [])] == [
                e["extensions"]["code"] for e in reference.get("errors", [])
            ]
            path = compiled["extensions"]["execution"]["path"]
            paths[path] = paths.get(path, 0) + 1
    assert paths["compiled"] >= 100, paths


def _node_selection(draw: st.DrawFn) -> str:
    """Fields of the node types; each type's under its own aliases (the same name has
    different types on different node types: they may not share a response key)."""
    parts = [draw(st.sampled_from(["__typename", "id"]))]
    if draw(st.booleans()):
        parts.append(f"... on Document {{ {_drawn(draw, DOCUMENT_SCALARS, 'd')} }}")
    if draw(st.booleans()):
        section = _drawn(draw, SECTION_SCALARS, "s")
        if draw(st.booleans()):
            section += f" s_document: document {{ {_drawn(draw, DOCUMENT_SCALARS)} }}"
        parts.append(f"... on Section {{ {section} }}")
    if draw(st.booleans()):
        analysis = _drawn(draw, ANALYSIS_SCALARS, "a")
        if draw(st.booleans()):
            analysis += f" a_section: section {{ {_drawn(draw, SECTION_SCALARS)} }}"
        parts.append(f"... on Analysis {{ {analysis} }}")
    if draw(st.booleans()):
        parts.append(f"... on User {{ {_drawn(draw, USER_SCALARS, 'u')} }}")
    return " ".join(parts)


USER_SCALARS = ["id", "email", "firstName", "role", "department", "clearance", "createdAt"]
ORGANIZATION_SCALARS = ["id", "name", "domain", "subscriptionTier", "dataRetentionDays"]
TOKEN_SCALARS = ["id", "name", "prefix", "scopes", "expiresAt", "revokedAt", "createdAt"]
JOB_SCALARS = ["id", "kind", "state", "attempts", "maxAttempts", "lastError", "runAt"]


def _drawn(draw: st.DrawFn, names: list[str], prefix: str = "") -> str:
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
    if prefix:
        return " ".join(f"{prefix}_{n.strip('_')}: {n}" for n in chosen)
    return " ".join(chosen)


@st.composite
def _planned_operations(draw: st.DrawFn) -> tuple[str, str]:
    """A query over the planned root fields, with variables; its kind."""
    kinds = ["node", "nodes", "documents", "viewer", "users", "tokens", "jobs"]
    kind = draw(st.sampled_from(kinds))
    if kind == "tokens":
        return f"query G {{ apiTokens {{ {_drawn(draw, TOKEN_SCALARS)} }} }}", kind
    if kind == "jobs":
        body = _drawn(draw, JOB_SCALARS)
        return (
            f"query G($first: Int) {{ jobs(first: $first) {{ edges {{ node {{ {body} }} }} }} }}",
            kind,
        )
    if kind == "node":
        return f"query G($id: ID!) {{ node(id: $id) {{ {_node_selection(draw)} }} }}", kind
    if kind == "nodes":
        return f"query G($ids: [ID!]!) {{ nodes(ids: $ids) {{ {_node_selection(draw)} }} }}", kind
    if kind == "viewer":
        parts = ["scopes"] if draw(st.booleans()) else []
        if draw(st.booleans()):
            parts.append(f"user {{ {_drawn(draw, USER_SCALARS)} }}")
        if draw(st.booleans()):
            parts.append(f"organization {{ {_drawn(draw, ORGANIZATION_SCALARS)} }}")
        if draw(st.booleans()) or not parts:
            parts.append(f"apiToken {{ {_drawn(draw, TOKEN_SCALARS)} }}")
        return f"query G {{ viewer {{ {' '.join(parts)} }} }}", kind
    if kind == "users":
        body = _drawn(draw, USER_SCALARS)
        return (
            f"query G($first: Int) {{ users(first: $first) {{ edges {{ node {{ {body} }} }} }} }}",
            kind,
        )
    body = _drawn(draw, DOCUMENT_SCALARS)
    return (
        "query G($first: Int, $filter: DocumentFilter) { documents(first: $first, "
        f"filter: $filter) {{ totalCount edges {{ node {{ {body} }} }} }} }}",
        kind,
    )


_GENERATED = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(operation=_planned_operations(), data=st.data())
async def test_generated_selections_of_planned_fields_answer_the_same(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    services: Services,
    world: dict[str, Any],
    node_ids: list[str],
    operation: tuple[str, str],
    data: st.DataObject,
) -> None:
    source, kind = operation
    # a name of its own: no answer of an earlier example comes from the response cache
    unique = f"G{next(_GENERATED)}"
    source = source.replace("query G", f"query {unique}", 1)
    digest = (await _register(services, source))[unique]
    principals = sorted(world["principals"].items())
    name, token = data.draw(st.sampled_from(principals))
    seen: list[dict[str, Any]] = []
    for _ in range(2):  # the same plan, two sets of values
        variables: dict[str, Any] = {}
        if kind == "node":
            variables["id"] = data.draw(st.sampled_from(node_ids))
        elif kind == "nodes":
            variables["ids"] = data.draw(st.lists(st.sampled_from(node_ids), max_size=4))
        elif kind in ("users", "documents", "jobs"):
            variables["first"] = data.draw(st.sampled_from([None, 0, 1, 3, 50]))
            if kind == "documents" and data.draw(st.booleans()):
                levels = data.draw(st.lists(st.sampled_from(CLEARANCES), max_size=2))
                chosen: Any = [c.value for c in levels]
                if len(chosen) == 1 and data.draw(st.booleans()):
                    chosen = chosen[0]  # one value where a list is declared: its list
                variables["filter"] = {"classification": chosen}
        if variables in seen:
            continue  # the same request again would be answered from the response cache
        seen.append(variables)
        compiled, reference = await _both(client, interpreted, token, digest, variables)
        assert compiled == reference | {"extensions": compiled["extensions"]}, (
            name,
            source,
            variables,
        )


@pytest.mark.parametrize(
    "type_name",
    [
        *("Document", "Section", "Analysis", "Feedback", "User", "Organization", "ApiToken"),
        *("Job", "AuditEvent", "DataExport", "A", "Ab", "Under_score"),
    ],
)
async def test_global_ids_written_by_the_statement_are_the_ids_python_writes(
    services: Services, type_name: str
) -> None:
    """The statement encodes only what follows the type's constant prefix (every length of
    the rest: 0, 1 and 2 bytes); the answer's IDs are ``to_global_id``'s, for any uuid."""
    rng = random.Random(type_name)
    ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(300)]
    ids += [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    text = concat(global_id(type_name, "x.id"))
    async with services.db.transaction(None) as session:
        found = (
            await session.execute(
                sa.text(f"SELECT {text} FROM unnest(CAST(:ids AS uuid[])) AS x(id)"),  # noqa: S608
                {"ids": ids},
            )
        ).scalars()
        written = [orjson.loads(value) for value in found]
    assert written == [to_global_id(type_name, i) for i in ids]


async def test_the_viewer_of_a_signed_in_session_answers_the_same_on_both_paths(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    services: Services,
    world: dict[str, Any],
) -> None:
    """A session has no API token (``apiToken`` null), a service token no user: planned
    (per request: the caller's own identity is bound) and answered as the reference path."""
    registered = await _register(services, OPERATIONS)
    tenant: Tenant = world["tenant"]
    body = await gql(
        client,
        LOGIN,
        {"email": tenant.email(Role.ADMIN), "password": PASSWORD},
    )
    session = body["data"]["login"]["accessToken"]
    viewers = []
    for token in (session, world["principals"]["SERVICE"], tenant.tokens[Role.VIEWER]):
        compiled, reference = await _both(client, interpreted, token, registered["Whole"], {})
        assert compiled["data"] == reference["data"]
        assert compiled["extensions"]["execution"] == {"path": "compiled"}
        viewers.append(compiled["data"]["viewer"])
        # apiTokens: all of the organization's (ADMIN's session), or the caller's own
        compiled, reference = await _both(client, interpreted, token, registered["Tokens"], {})
        assert compiled["data"] == reference["data"]
        assert compiled["extensions"]["execution"] == {"path": "compiled"}
        assert compiled["data"]["apiTokens"]
    signed_in, service, viewer = viewers
    assert signed_in["apiToken"] is None
    assert signed_in["user"]["email"] == tenant.email(Role.ADMIN)
    assert service["user"] is None
    assert service["apiToken"]["scopes"] == ["audit:read", "documents:read", "users:admin"]
    assert viewer["apiToken"]["name"] == "viewer token"
    assert signed_in["organization"] == viewer["organization"]
    assert viewer["organization"]["name"] == tenant.name


JOBS = """
query OneJob($id: ID!) { job(id: $id) { __typename id kind state attempts maxAttempts
  lastError createdAt updatedAt runAt startedAt finishedAt } }
query Jobs($first: Int, $after: String, $filter: JobFilter) {
  jobs(first: $first, after: $after, filter: $filter) {
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id kind state attempts lastError } } } }
"""


async def test_jobs_answer_the_same_on_both_paths(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    services: Services,
    world: dict[str, Any],
) -> None:
    """``job`` (JOB_READ) and ``jobs`` (JOB_ADMIN) for every principal: planned where the
    policy allows, refused by the interpreted path where not; filters, pages and cursors."""
    tenant: Tenant = world["tenant"]
    ids = []
    async with services.db.transaction(tenant.org_id) as session:
        for n, state in enumerate([*JobState, JobState.DEAD]):
            job = await job_models.enqueue_job(
                session,
                organization_id=tenant.org_id,
                kind=f"test.kind{n % 2}",
                payload={"n": n},
            )
            job.state = state
            job.last_error = 'failed: "quoted"' if state is JobState.DEAD else None
            ids.append(gid("Job", job.id))
    registered = await _register(services, JOBS)
    cases: list[tuple[str, dict[str, Any]]] = [("OneJob", {"id": i}) for i in ids[:3]]
    cases += [
        ("OneJob", {"id": gid("Job", uuid.uuid4())}),
        ("OneJob", {"id": gid("Document", world["documents"][0].id)}),
        ("Jobs", {"first": 3}),
        ("Jobs", {"filter": {"state": ["DEAD"]}}),
        ("Jobs", {"filter": {"state": [], "kind": ["test.kind1"]}}),
        ("Jobs", {"first": 0}),
    ]
    paths: dict[str, int] = {}
    for name, token in world["principals"].items():
        for operation, variables in cases:
            compiled, reference = await _both(
                client, interpreted, token, registered[operation], variables
            )
            assert compiled.get("data") == reference.get("data"), (name, operation, variables)
            assert [e["extensions"]["code"] for e in compiled.get("errors", [])] == [
                e["extensions"]["code"] for e in reference.get("errors", [])
            ]
            path = compiled["extensions"]["execution"]["path"]
            paths[path] = paths.get(path, 0) + 1
    assert paths["compiled"] >= 10, paths
    # page through with the compiled path's cursors
    token = tenant.tokens[Role.ADMIN]
    after, seen = None, []
    for _ in range(10):
        variables = {"first": 2, "after": after, "filter": {"kind": ["test.kind0", "test.kind1"]}}
        compiled, reference = await _both(client, interpreted, token, registered["Jobs"], variables)
        assert compiled["data"] == reference["data"], variables
        assert compiled["extensions"]["execution"] == {"path": "compiled"}
        page = compiled["data"]["jobs"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(ids)


AUDIT_AND_PII = """
query Audit($first: Int, $after: String, $filter: AuditFilter) {
  auditLog(first: $first, after: $after, filter: $filter) {
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { __typename id eventType category description resourceType
      resourceId before after ipAddress userAgent requestId createdAt hash prevHash
      actor { id email } apiToken { id name } } } } }
query AuditIds { auditLog(first: 100) { edges { node { id } } } }
query Pii($id: ID!) { node(id: $id) { ... on Document { piiSummary { __typename type count }
  sections(first: 5) { edges { node { piiFindings { __typename type start end confidence }
  } } } } } }
"""
# What PostgreSQL writes for an inet and what Python writes for it can differ: both must be
# answered as Python writes them.
ADDRESSES = [
    "203.0.113.7",
    "10.0.0.0/8",
    "::1",
    "2001:db8::1",
    "::ffff:1.2.3.4",
    "::0.2.0.3",
    "2001:db8::/32",
    None,
]


async def _audit_events(services: Services, tenant: Tenant, document_id: uuid.UUID) -> None:
    """Events of every shape the audit log holds, written as rows (the chain is not read)."""
    token_id = await _token_id(services, tenant, Role.REVIEWER)
    shapes: list[dict[str, Any]] = []
    for n, address in enumerate(ADDRESSES):
        shapes.append(
            {
                "event_type": f"test.shape{n % 3}",
                "resource_type": ["Document", None, "", "Weird Type"][n % 4],
                "resource_id": document_id if n % 4 != 1 else None,
                "before": None if n % 2 else orjson.dumps({"a": [1, 2.5, "é\u2028"], "b": None}),
                "after": orjson.dumps({"nested": {"x": n}, "flag": True}),
                "ip_address": address,
                "classification": [None, "PUBLIC", "RESTRICTED", "CONFIDENTIAL"][n % 4],
                "department": ["legal", "hr", None][n % 3],
                "actor_id": tenant.users[Role.REVIEWER].id if n % 2 else None,
                "api_token_id": token_id if n % 3 else None,
            }
        )
    async with services.db.transaction(tenant.org_id) as session:
        for shape in shapes:
            await session.execute(
                sa.text(
                    "INSERT INTO audit_logs (id, created_at, organization_id, actor_id, "
                    "api_token_id, event_type, category, description, resource_type, "
                    "resource_id, before, after, ip_address, user_agent, request_id, "
                    "classification, department, prev_hash, hash) VALUES (:id, "
                    "now() + make_interval(secs => :n), :org, :actor_id, :api_token_id, "
                    ":event_type, 'test', 'a \"quoted\" description', :resource_type, "
                    ":resource_id, CAST(:before AS jsonb), CAST(:after AS jsonb), "
                    "CAST(:ip_address AS inet), 'agent/1.0', 'req-1', :classification, "
                    ":department, NULL, repeat('a', 64))"
                ),
                {
                    **shape,
                    "before": shape["before"].decode() if shape["before"] else None,
                    "after": shape["after"].decode(),
                    "id": uuid.uuid4(),
                    "n": len(shape["event_type"]) + shapes.index(shape),
                    "org": tenant.org_id,
                },
            )


async def _token_id(services: Services, tenant: Tenant, role: Role) -> uuid.UUID:
    async with services.db.transaction(tenant.org_id) as session:
        found = await session.scalar(
            sa.text("SELECT id FROM api_tokens WHERE user_id = :u LIMIT 1"),
            {"u": tenant.users[role].id},
        )
    assert isinstance(found, uuid.UUID)
    return found


async def test_the_audit_log_and_pii_fields_answer_the_same_on_both_paths(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    services: Services,
    world: dict[str, Any],
) -> None:
    tenant: Tenant = world["tenant"]
    documents = world["documents"]
    await _audit_events(services, tenant, documents[0].id)
    registered = await _register(services, AUDIT_AND_PII)
    everything = await _call(interpreted, tenant.tokens[Role.ADMIN], registered["AuditIds"], {})
    some_id = everything["data"]["auditLog"]["edges"][0]["node"]["id"]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("Audit", {"first": 100}),
        ("Audit", {"first": 3}),
        ("Audit", {"filter": {"eventType": ["test.shape1", "test.shape2"]}}),
        ("Audit", {"filter": {"eventType": []}}),
        ("Audit", {"filter": {"resourceId": gid("Document", documents[0].id)}}),
        ("Audit", {"filter": {"actorId": tenant.user_gid(Role.REVIEWER)}}),
        # refused or not planned: the interpreted path answers
        ("Audit", {"filter": {"actorId": gid("Document", documents[0].id)}}),
        ("Audit", {"filter": {"resourceId": "not an id"}}),
        ("Audit", {"filter": {"after": "2020-01-01T00:00:00+00:00"}}),
        ("Audit", {"first": 2, "after": "bogus"}),
        ("Audit", {"first": 2, "after": some_id}),
        *[("Pii", {"id": gid("Document", d.id)}) for d in documents[:6]],
    ]
    paths: dict[str, int] = {}
    for name, token in world["principals"].items():
        for operation, variables in cases:
            compiled, reference = await _both(
                client, interpreted, token, registered[operation], variables
            )
            assert compiled.get("data") == reference.get("data"), (name, operation, variables)
            assert [e["extensions"]["code"] for e in compiled.get("errors", [])] == [
                e["extensions"]["code"] for e in reference.get("errors", [])
            ], (name, operation, variables)
            path = compiled["extensions"]["execution"]["path"]
            paths[path] = paths.get(path, 0) + 1
        # page through the log with the compiled path's cursors
        after = None
        for _ in range(30):
            compiled, reference = await _both(
                client, interpreted, token, registered["Audit"], {"first": 4, "after": after}
            )
            assert compiled["data"] == reference["data"], name
            if compiled["data"] is None:
                break
            page = compiled["data"]["auditLog"]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
    assert paths["compiled"] >= 80, paths


MIXED = """
query Mixed($id: ID!) {
  first: documents(first: 2) { totalCount edges { node { id filename } } }
  chain: verifyAuditChain { valid }
  viewer { scopes }
  erased: erasureStatus(userId: $id) { erasedAt }
  again: documents(first: 1) { edges { node { filename } } }
}
"""


async def test_root_fields_not_planned_are_resolved_beside_the_planned_ones(
    client: httpx.AsyncClient,
    interpreted: httpx.AsyncClient,
    services: Services,
    world: dict[str, Any],
) -> None:
    """The statement answers the planned root fields; execution resolves the others in the
    same transaction; the answer (errors included) is the interpreted path's, in order."""
    registered = await _register(services, MIXED)
    tenant: Tenant = world["tenant"]
    for name, token in world["principals"].items():
        for user_id in (tenant.user_gid(Role.VIEWER), "not an id"):
            compiled, reference = await _both(
                client, interpreted, token, registered["Mixed"], {"id": user_id}
            )
            assert compiled.get("data") == reference.get("data"), name
            assert list(compiled.get("data") or {}) == list(reference.get("data") or {})
            found = [(e["path"], e["extensions"]["code"]) for e in compiled.get("errors", [])]
            expected = [(e["path"], e["extensions"]["code"]) for e in reference.get("errors", [])]
            if reference.get("data") is not None:
                assert found == expected, name
            else:
                # A non-null root field failed: siblings still running are cancelled, so
                # which of their errors made it in first is a matter of timing on both paths.
                assert set(map(str, expected)) <= set(map(str, found)), name
            execution = compiled["extensions"]["execution"]
            if name == "ADMIN":
                assert execution["path"] == "mixed", execution
                assert execution["interpreted"] == "chain, erased", execution


TOKEN_LOG = """
query TokLog { auditLog(first: 100) { edges { node { eventType apiToken { name } } } } }
query TypeLog($f: AuditFilter) { auditLog(first: 100, filter: $f) { edges { node { eventType } } } }
"""


async def test_an_audit_event_s_token_is_never_shown_from_another_caller_s_cached_answer(
    client: httpx.AsyncClient, interpreted: httpx.AsyncClient, services: Services
) -> None:
    """Two auditors of one visibility class: each sees only the tokens they may read, the
    second's answer never the first's cached one; a single value where a list is declared
    is the list of it (GraphQL's coercion) on both paths."""
    tenant = await make_tenant(services)
    tokens = []
    for name in ("alice-private-token", "bob"):
        user, _ = await add_user(
            services, tenant, role=Role.AUDITOR, clearance=Classification.CONFIDENTIAL
        )
        made = await api_tokens.create_token(
            services,
            OPERATOR,
            tenant.org_id,
            name=name,
            scopes=["audit:read"],
            user_email=user.email,
        )
        tokens.append(made)
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.text(
                "INSERT INTO audit_logs (id, created_at, organization_id, api_token_id, "
                "event_type, category, description, prev_hash, hash) VALUES (:id, now(), "
                ":org, :t, 'probe.used', 'test', 'd', NULL, repeat('a', 64))"
            ),
            {"id": uuid.uuid4(), "org": tenant.org_id, "t": tokens[0].token.id},
        )
    registered = await _register(services, TOKEN_LOG)
    for path in (client, interpreted):
        seen = []
        for made in tokens:
            answer = await _call(path, made.secret, registered["TokLog"], {})
            (event,) = [
                e["node"]
                for e in answer["data"]["auditLog"]["edges"]
                if e["node"]["eventType"] == "probe.used"
            ]
            seen.append(event["apiToken"])
        assert seen == [{"name": "alice-private-token"}, None]
        one, listed = [
            await _call(path, tokens[0].secret, registered["TypeLog"], {"f": {"eventType": v}})
            for v in ("probe.used", ["probe.used"])
        ]
        assert one["data"] == listed["data"]
        assert [e["node"]["eventType"] for e in one["data"]["auditLog"]["edges"]] == ["probe.used"]
