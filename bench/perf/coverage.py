"""Planned coverage (issue 16): the share of the contract's read fields that Prism's compiled
planner answers, by asking the planner itself (``prism.execution.plans.make_plan``) about each.

The read fields that map to rows: from the schema (the one ``schema.graphql`` exports), every
object type reachable from ``Query`` but the paging wrappers (``*Connection``, ``*Edge``,
``PageInfo``); of those, the fields of row types (the types implementing ``Node``) and of the
values they hold (``FeedbackItem``, ...), and the fields of any other type (``Query``,
``Viewer``) that lead to row types. Each is probed with the smallest query the planner could
answer: the shortest path of planned fields from ``Query`` to its type, the field selected at
its end (``__typename`` under an object, ``edges { node { __typename } }`` under a
connection), required arguments filled with a Document's ID or a plain value. The planner
plans for a principal: the benchmark's (ADMIN, CONFIDENTIAL clearance, every scope), who sees
text unmasked. A field is planned when its plan binds to a statement; otherwise the planner's
reason (``NotPlanned``) is listed.

    .venv/bin/python -m bench.perf --coverage
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import core_schema
from bench.perf.queries import to_global_id

Wrap = Callable[[str], str]
DOCUMENT_ID = to_global_id("Document", str(uuid.UUID(int=0)))


@dataclass(frozen=True)
class Field:
    type_name: str
    name: str
    planned: bool
    reason: str  # why not, when not planned

    @property
    def label(self) -> str:
        return f"{self.type_name}.{self.name}"


def _named(gql_type: Any) -> Any:
    from graphql import get_named_type

    return get_named_type(gql_type)


def _is_wrapper(name: str) -> bool:
    return name.endswith(("Connection", "Edge")) or name == "PageInfo"


def _connection_node(gql_type: Any) -> Any | None:
    """The node type of a Relay connection type, else None."""
    from graphql import GraphQLObjectType

    if not isinstance(gql_type, GraphQLObjectType) or not gql_type.name.endswith("Connection"):
        return None
    edges = gql_type.fields.get("edges")
    if edges is None:
        return None
    node = _named(edges.type).fields.get("node")
    return None if node is None else _named(node.type)


def _arguments(field: Any) -> str | None:
    """Values for the field's required arguments; None when one cannot be made up. An ID
    names a row of the type the field returns (``job(id)``: a Job's), else a Document."""
    from graphql import (
        GraphQLEnumType,
        GraphQLList,
        GraphQLNonNull,
        GraphQLObjectType,
        GraphQLScalarType,
        Undefined,
    )

    returned = _named(field.type)
    row_id = (
        to_global_id(returned.name, str(uuid.UUID(int=0)))
        if isinstance(returned, GraphQLObjectType) and not returned.name.endswith("Connection")
        else DOCUMENT_ID
    )
    values = []
    for name, argument in field.args.items():
        if not isinstance(argument.type, GraphQLNonNull) or argument.default_value is not Undefined:
            continue
        inner = argument.type.of_type
        listed = isinstance(inner, GraphQLList)
        if listed:
            inner = _named(inner)
        if isinstance(inner, GraphQLScalarType):
            literal = {
                "ID": f'"{row_id}"',
                "Int": "1",
                "Float": "1.0",
                "Boolean": "true",
            }.get(inner.name, '"x"')
        elif isinstance(inner, GraphQLEnumType):
            literal = next(iter(inner.values))
        else:
            return None
        values.append(f"{name}: [{literal}]" if listed else f"{name}: {literal}")
    return f"({', '.join(values)})" if values else ""


def _step(name: str, field: Any, target: Any) -> Wrap | None:
    """How selecting ``name`` wraps the selection made on ``target`` (its row type)."""
    from graphql import GraphQLInterfaceType, GraphQLUnionType

    arguments = _arguments(field)
    if arguments is None:
        return None
    head = f"{name}{arguments}"
    named = _named(field.type)
    if _connection_node(named) is not None:
        return lambda inner: f"{head} {{ edges {{ node {{ {inner} }} }} }}"
    if isinstance(named, GraphQLInterfaceType | GraphQLUnionType):
        return lambda inner: f"{head} {{ ... on {target.name} {{ {inner} }} }}"
    return lambda inner: f"{head} {{ {inner} }}"


def _targets(schema: Any, field: Any) -> list[Any]:
    """The object types a field leads to (through a connection, a list, an interface)."""
    from graphql import GraphQLInterfaceType, GraphQLObjectType, GraphQLUnionType

    named = _named(field.type)
    node = _connection_node(named)
    if node is not None:
        named = node
    if isinstance(named, GraphQLInterfaceType):
        return list(schema.get_implementations(named).objects)
    if isinstance(named, GraphQLUnionType):
        return list(named.types)
    return [named] if isinstance(named, GraphQLObjectType) else []


def _leaf(field: Any) -> str:
    from graphql import GraphQLInterfaceType, GraphQLObjectType, GraphQLUnionType

    named = _named(field.type)
    if _connection_node(named) is not None:
        return "{ edges { node { __typename } } }"
    if isinstance(named, GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType):
        return "{ __typename }"
    return ""


def benchmark_principal() -> Any:
    """The benchmark's principal (bench/perf/data.py): an ADMIN with CONFIDENTIAL clearance
    and every scope."""
    from prism.authz.principal import SCOPES, Principal
    from prism.models.enums import Classification, Role

    return Principal(
        organization_id=uuid.UUID(int=1),
        user_id=uuid.UUID(int=2),
        api_token_id=uuid.UUID(int=3),
        role=Role.ADMIN,
        clearance=Classification.CONFIDENTIAL,
        department="Legal",
        scopes=SCOPES,
    )


PROBE = "probedField"  # the alias of the probed field: its key in the planned statement


def _probe(text: str, principal: Any) -> str | None:
    """None when the planner plans the query and the probed field is in its statement (a
    fragment on another type than the planner's is left out, not refused), else why not."""
    from graphql import parse

    from prism.execution.fragments import NotPlanned
    from prism.execution.plans import make_plan

    entry = make_plan(parse(text), None, principal, {})
    if isinstance(entry, str):
        return entry or "not planned"
    try:
        compiled = entry.bind({}, principal)
    except NotPlanned as reason:
        return str(reason) or "not planned"
    if f'"{PROBE}" :' not in compiled.sql.text:  # the key as the statement writes it
        return "no planned path reaches it (the statement leaves it out)"
    return None


def planned_coverage(schema: Any = None) -> dict[str, Any]:
    """{"planned": N, "fields": M, "not_planned": {Type.field: reason}, "planned_fields": []}."""
    from graphql import GraphQLObjectType

    schema = core_schema() if schema is None else schema
    principal = benchmark_principal()
    row_types = {
        t.name
        for t in schema.type_map.values()
        if isinstance(t, GraphQLObjectType) and any(i.name == "Node" for i in t.interfaces)
    }
    query = schema.query_type
    # BFS: the first path from Query to each type, through fields the planner plans.
    paths: dict[str, Wrap | None] = {query.name: lambda inner: f"query Probe {{ {inner} }}"}
    inside_rows: set[str] = set()  # value types reached from a row type
    seen_types: set[str] = {query.name}
    order: deque[Any] = deque([query])
    fields: list[Field] = []
    while order:
        gql_type = order.popleft()
        wrap = paths.get(gql_type.name)
        row_like = gql_type.name in row_types or gql_type.name in inside_rows
        for name, field in gql_type.fields.items():
            if name.startswith("__"):
                continue
            targets = [t for t in _targets(schema, field) if not _is_wrapper(t.name)]
            counted = row_like or any(t.name in row_types for t in targets)
            reason: str | None = "reached only through fields the planner does not plan"
            arguments = _arguments(field)
            if arguments is None:
                reason = "a required input object (not probed)"
            elif wrap is not None:
                probe = f"{PROBE}: {name}{arguments} {_leaf(field)}".strip()
                reason = _probe(wrap(probe), principal)
            if counted:
                fields.append(Field(gql_type.name, name, reason is None, reason or ""))
            for target in targets:
                if row_like and target.name not in row_types:
                    inside_rows.add(target.name)
                step = _step(name, field, target) if wrap is not None and reason is None else None
                if step is not None and paths.get(target.name) is None:
                    outer = wrap
                    assert outer is not None

                    def path(inner: str, o: Wrap = outer, s: Wrap = step) -> str:
                        return o(s(inner))

                    # A path the planner answers (not node(id) { ... on Section }, dropped).
                    if _probe(path(f"{PROBE}: __typename"), principal) is None:
                        paths[target.name] = path
                        if target.name in seen_types:  # reached before through unplanned fields
                            order.append(target)
                if target.name not in seen_types:
                    seen_types.add(target.name)
                    paths.setdefault(target.name, None)
                    order.append(target)
    # A type first reached through an unplanned field and later through a planned one was
    # visited twice: keep each field's last (best-informed) verdict.
    by_label = {f.label: f for f in fields}
    planned = [f.label for f in by_label.values() if f.planned]
    return {
        "principal": "ADMIN, CONFIDENTIAL clearance, every scope (the benchmark's)",
        "planned": len(planned),
        "fields": len(by_label),
        "planned_fields": planned,
        "not_planned": {f.label: f.reason for f in by_label.values() if not f.planned},
    }


def describe(found: dict[str, Any]) -> str:
    lines = [f"planned coverage: {found['planned']} of {found['fields']} read fields"]
    for label, why in found["not_planned"].items():
        shown = "not in the planner's tables" if why == label else why
        lines.append(f"  not planned: {label} ({shown})")
    return "\n".join(lines)


def main() -> int:
    print(describe(planned_coverage()))
    return 0
