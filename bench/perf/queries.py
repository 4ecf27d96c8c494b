"""The benchmark's queries, as each server spells them, and how to compare the answers.

Prism and the raw server get the same request body (the raw server picks its handler by
``operationName`` and does not parse GraphQL). ``prism-compiled`` gets the same Prism text as
a registered operation: the harness registers it at set-up (as ``prism operations push``
does: one canonical document per named operation) and sends only its sha256 in
``extensions.persistedQuery``, with the same operation name and variables. PostGraphile gets
the equivalent query in its own schema: ids are plain UUIDs there, enum-like columns are
strings, and JSON columns are returned whole (``dynamicJson``). Before any timing, every
server's answer is reduced to the same plain structure and compared.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from bench.common import core_schema
from bench.perf.data import Dataset
from bench.perf.load import FIRST_SEEN

NESTED = """query Nested {
  documents(first: 50) {
    edges { node { id filename sections(first: 5) { edges { node { id order } } } } }
  }
}"""

NESTED_PG = """query Nested {
  allDocuments(first: 50, orderBy: [CREATED_AT_DESC, ID_DESC], condition: {deletedAt: null}) {
    nodes {
      id filename
      documentSectionsByDocumentId(first: 5, orderBy: [ORD_ASC, ID_ASC]) { nodes { id ord } }
    }
  }
}"""

NODE = """query Node($id: ID!) {
  node(id: $id) {
    id
    ... on Document {
      filename
      analyses(first: 10) {
        edges { node { id riskLevel feedbackItems { id category riskLevel } } }
      }
      feedback(first: 10) { edges { node { id action author { id email } } } }
    }
  }
}"""

NODE_PG = """query Node($id: UUID!) {
  documentById(id: $id) {
    id filename
    analysisResultsByDocumentId(first: 10, orderBy: [CREATED_AT_ASC, ID_ASC]) {
      nodes { id riskLevel feedbackItems }
    }
    userFeedbacksByDocumentId(first: 10, orderBy: [CREATED_AT_ASC, ID_ASC]) {
      nodes { id action userByUserId { id email } }
    }
  }
}"""

FILTERED = """query Filtered {
  documents(
    first: 20
    filter: {processingStatus: [COMPLETED], riskLevel: [HIGH], documentType: [CONTRACT]}
    orderBy: {field: FILENAME, direction: ASC}
  ) {
    totalCount
    edges { node { id filename processingStatus riskLevel wordCount } }
  }
}"""

FILTERED_PG = """query Filtered {
  allDocuments(
    first: 20
    condition: {
      processingStatus: "COMPLETED", riskLevel: "HIGH", documentType: "CONTRACT", deletedAt: null
    }
    orderBy: [FILENAME_ASC, ID_ASC]
  ) {
    totalCount
    nodes { id filename processingStatus riskLevel wordCount }
  }
}"""

VIEWER = """query Viewer {
  viewer { scopes organization { id name } user { id email role } apiToken { id name } }
}"""

# PostGraphile has no notion of "the caller": the same three rows, by the ids the token stands
# for (scopes are Prism's own and have no PostGraphile counterpart).
VIEWER_PG = """query Viewer($org: UUID!, $user: UUID!, $token: UUID!) {
  organizationById(id: $org) { id name }
  userById(id: $user) { id email role }
  apiTokenById(id: $token) { id name }
}"""


def to_global_id(type_name: str, row_id: str) -> str:
    """Prism's global ID (``prism.execution.ids``): unpadded URL-safe base64 of Type:uuid."""
    return base64.urlsafe_b64encode(f"{type_name}:{row_id}".encode()).decode().rstrip("=")


def row_id(global_or_uuid: str) -> str:
    """The UUID behind a Prism global ID, or the UUID PostGraphile returns as it is."""
    try:
        return str(uuid.UUID(global_or_uuid))
    except ValueError:
        raw = base64.urlsafe_b64decode(global_or_uuid + "=" * (-len(global_or_uuid) % 4))
        return str(uuid.UUID(raw.decode().partition(":")[2]))


def _nodes(connection: dict[str, Any]) -> list[dict[str, Any]]:
    if "edges" in connection:
        return [edge["node"] for edge in connection["edges"]]
    return list(connection["nodes"])


# --- normal forms --------------------------------------------------------------------------


def nested_prism(data: dict[str, Any]) -> Any:
    return [
        (
            row_id(d["id"]),
            d["filename"],
            [(row_id(s["id"]), s["order"]) for s in _nodes(d["sections"])],
        )
        for d in _nodes(data["documents"])
    ]


def nested_pg(data: dict[str, Any]) -> Any:
    return [
        (
            row_id(d["id"]),
            d["filename"],
            [(row_id(s["id"]), s["ord"]) for s in _nodes(d["documentSectionsByDocumentId"])],
        )
        for d in _nodes(data["allDocuments"])
    ]


def _items(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(str(i["id"]), i["category"], i["riskLevel"]) for i in items]


def node_prism(data: dict[str, Any]) -> Any:
    d = data["node"]
    return {
        "id": row_id(d["id"]),
        "filename": d["filename"],
        "analyses": [
            (row_id(a["id"]), a["riskLevel"], _items(a["feedbackItems"]))
            for a in _nodes(d["analyses"])
        ],
        "feedback": [
            (row_id(f["id"]), f["action"], row_id(f["author"]["id"]), f["author"]["email"])
            for f in _nodes(d["feedback"])
        ],
    }


def node_pg(data: dict[str, Any]) -> Any:
    d = data["documentById"]
    return {
        "id": row_id(d["id"]),
        "filename": d["filename"],
        "analyses": [
            (row_id(a["id"]), a["riskLevel"], _items(a["feedbackItems"]))
            for a in _nodes(d["analysisResultsByDocumentId"])
        ],
        "feedback": [
            (
                row_id(f["id"]),
                f["action"],
                row_id(f["userByUserId"]["id"]),
                f["userByUserId"]["email"],
            )
            for f in _nodes(d["userFeedbacksByDocumentId"])
        ],
    }


def _filtered_rows(nodes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (row_id(d["id"]), d["filename"], d["processingStatus"], d["riskLevel"], d["wordCount"])
        for d in nodes
    ]


def filtered_prism(data: dict[str, Any]) -> Any:
    documents = data["documents"]
    return {"total": documents["totalCount"], "rows": _filtered_rows(_nodes(documents))}


def filtered_pg(data: dict[str, Any]) -> Any:
    documents = data["allDocuments"]
    return {"total": int(documents["totalCount"]), "rows": _filtered_rows(_nodes(documents))}


def viewer_prism(data: dict[str, Any]) -> Any:
    v = data["viewer"]
    return {
        "organization": (row_id(v["organization"]["id"]), v["organization"]["name"]),
        "user": (row_id(v["user"]["id"]), v["user"]["email"], v["user"]["role"]),
        "apiToken": (row_id(v["apiToken"]["id"]), v["apiToken"]["name"]),
    }


def viewer_pg(data: dict[str, Any]) -> Any:
    return {
        "organization": (row_id(data["organizationById"]["id"]), data["organizationById"]["name"]),
        "user": (
            row_id(data["userById"]["id"]),
            data["userById"]["email"],
            data["userById"]["role"],
        ),
        "apiToken": (row_id(data["apiTokenById"]["id"]), data["apiTokenById"]["name"]),
    }


@cache
def _schema() -> Any:
    return core_schema()


def registered_document(text: str) -> tuple[str, str, str]:
    """(name, canonical document, sha256) of a one-operation text, as ``prism operations
    push`` registers it (``prism.operations.persisted.split_operations``, validated against the
    schema): the hash a client sends is the canonical document's, not the source text's."""
    from prism.models.registered_operations import operation_hash
    from prism.operations.persisted import split_operations

    [(name, document)] = split_operations(text, _schema())
    return name, document, operation_hash(document)


# What extensions.execution.path prism-compiled must report for each query: the planner
# covers documents, node (of a Document) and their nested connections, and the viewer (its
# organization, user and API token, bound per request: docs/decisions/0024).
EXPECTED_PATH = {
    "nested": "compiled",
    "node": "compiled",
    "filtered": "compiled",
    "viewer": "compiled",
    "nested-text": "compiled",
    "viewer-new": "compiled",
}


def _first_seen(text: str) -> str:
    """The query with its operation named ``FIRST_SEEN`` (renamed per request by wrk)."""
    return text.replace("query Viewer", f"query {FIRST_SEEN}", 1)


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    bodies: dict[str, dict[str, Any]]  # server -> JSON request body
    normal: dict[str, Callable[[dict[str, Any]], Any]]  # server -> normal form of `data`
    expected_rows: Callable[[Any], int]  # how many rows the normal form holds (a sanity check)
    # (name, canonical document) of the Prism text, registered for prism-compiled.
    registered: tuple[str, str]


def queries(dataset: Dataset) -> list[Query]:
    node_id = to_global_id("Document", dataset.node_document_id)
    viewer_ids = {
        "org": dataset.organization_id,
        "user": dataset.user_id,
        "token": dataset.token_id,
    }

    def prism_body(query: str, name: str, variables: dict[str, Any] | None = None) -> Any:
        return {"query": query, "operationName": name, "variables": variables or {}}

    def compiled_body(query: str, variables: dict[str, Any] | None = None) -> Any:
        name, _, digest = registered_document(query)
        return {
            "operationName": name,
            "variables": variables or {},
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}},
        }

    def both(query: str, name: str, variables: dict[str, Any] | None = None) -> Any:
        """Prism's body (also the raw server's) and prism-compiled's (the hash of the same
        text, registered)."""
        body = prism_body(query, name, variables)
        return {"prism": body, "prism-compiled": compiled_body(query, variables), "raw": body}

    def prism_normal(normal: Callable[[dict[str, Any]], Any]) -> Any:
        return {"prism": normal, "prism-compiled": normal, "raw": normal}

    def registered(query: str) -> tuple[str, str]:
        name, document, _ = registered_document(query)
        return name, document

    found = [
        Query(
            "nested",
            "`documents(first: 50)` with `sections(first: 5) { id order }` each (a 2-level list)",
            {**both(NESTED, "Nested"), "postgraphile": prism_body(NESTED_PG, "Nested")},
            {**prism_normal(nested_prism), "postgraphile": nested_pg},
            lambda n: len(n) + sum(len(d[2]) for d in n),
            registered(NESTED),
        ),
        Query(
            "node",
            "`node(id)` of one document: its analyses with feedback items, its feedback with "
            "authors",
            {
                **both(NODE, "Node", {"id": node_id}),
                "postgraphile": prism_body(NODE_PG, "Node", {"id": dataset.node_document_id}),
            },
            {**prism_normal(node_prism), "postgraphile": node_pg},
            lambda n: 1 + len(n["analyses"]) + len(n["feedback"]),
            registered(NODE),
        ),
        Query(
            "filtered",
            "`documents(first: 20, filter: 3 conditions, orderBy: FILENAME ASC) { totalCount }`",
            {**both(FILTERED, "Filtered"), "postgraphile": prism_body(FILTERED_PG, "Filtered")},
            {**prism_normal(filtered_prism), "postgraphile": filtered_pg},
            lambda n: len(n["rows"]),
            registered(FILTERED),
        ),
        Query(
            "viewer",
            "`viewer { scopes organization user apiToken }`",
            {
                **both(VIEWER, "Viewer"),
                "postgraphile": prism_body(VIEWER_PG, "Viewer", viewer_ids),
            },
            {**prism_normal(viewer_prism), "postgraphile": viewer_pg},
            lambda n: 3,
            registered(VIEWER),
        ),
        # The web client's case: the nested list sent as text, no persisted-query hash, to
        # both Prism servers (prism-compiled answers it like prism: not a registered request).
        Query(
            "nested-text",
            "the nested list sent as query text with no persisted-query hash (the web client)",
            {
                "prism": prism_body(NESTED, "Nested"),
                "prism-compiled": prism_body(NESTED, "Nested"),
                "raw": prism_body(NESTED, "Nested"),
                "postgraphile": prism_body(NESTED_PG, "Nested"),
            },
            {**prism_normal(nested_prism), "postgraphile": nested_pg},
            lambda n: len(n) + sum(len(d[2]) for d in n),
            registered(NESTED),
        ),
        # A first-seen query: the viewer sent as text under an operation name no request
        # used before (bench/perf/first-seen.lua renames it per request), so each request is
        # parsed, validated, planned and its statement prepared anew, on every server. The
        # raw server (no GraphQL) answers the viewer's statement: the limit of a hit.
        Query(
            "viewer-new",
            "the viewer sent as text under a new operation name each time (a first-seen "
            "query: parse, validation, plan and statement every time)",
            {
                "prism": prism_body(_first_seen(VIEWER), FIRST_SEEN),
                "prism-compiled": prism_body(_first_seen(VIEWER), FIRST_SEEN),
                "raw": prism_body(VIEWER, "Viewer"),
                "postgraphile": prism_body(_first_seen(VIEWER_PG), FIRST_SEEN, viewer_ids),
            },
            {**prism_normal(viewer_prism), "postgraphile": viewer_pg},
            lambda n: 3,
            registered(VIEWER),
        ),
    ]
    # PostGraphile 5 runs with its V4 preset: the same GraphQL names and answers as 4.14.
    for query in found:
        query.bodies["postgraphile5"] = query.bodies["postgraphile"]
        query.normal["postgraphile5"] = query.normal["postgraphile"]
    return found
