"""The schema's input positions, walked from the schema itself: every argument and input
field that takes a list or a string, with valid values for everything around it. Used to
check a bound on *every* field, not on a hand-picked few."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    get_named_type,
    is_composite_type,
)

from prism.execution.ids import to_global_id
from prism.schema import build_schema

SCHEMA: GraphQLSchema = build_schema()._schema
LIST = "[]"

VALID_SCALARS: dict[str, Any] = {
    "String": "x",
    "ID": to_global_id("Document", uuid.UUID(int=1)),
    "Int": 1,
    "Float": 1.0,
    "Boolean": True,
    "Date": "2026-01-01",
    "DateTime": "2026-01-01T00:00:00Z",
    "Decimal": "1",
    "Long": 1,
    "JSON": {},
    "Upload": None,
}


def valid_value(type_: GraphQLInputType) -> Any:
    """A value of the type that coerces (required input fields filled, optional ones left
    out)."""
    if isinstance(type_, GraphQLNonNull):
        return valid_value(type_.of_type)
    if isinstance(type_, GraphQLList):
        return [valid_value(type_.of_type)]
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        return {
            name: valid_value(field.type)
            for name, field in type_.fields.items()
            if isinstance(field.type, GraphQLNonNull) and field.default_value is None
        }
    assert isinstance(type_, GraphQLScalarType)
    return VALID_SCALARS[type_.name]


def value_with(type_: GraphQLInputType, path: tuple[str, ...], leaf: Any) -> Any:
    """A valid value of the type holding ``leaf`` at ``path`` (field names and LIST)."""
    if not path:
        return leaf
    if isinstance(type_, GraphQLNonNull):
        return value_with(type_.of_type, path, leaf)
    if isinstance(type_, GraphQLList):
        assert path[0] == LIST
        return [value_with(type_.of_type, path[1:], leaf)]
    assert isinstance(type_, GraphQLInputObjectType)
    value = valid_value(type_)
    value[path[0]] = value_with(type_.fields[path[0]].type, path[1:], leaf)
    return value


@dataclass(frozen=True)
class Position:
    operation: str  # query | mutation
    field: str
    argument: str
    path: tuple[str, ...]  # below the argument
    leaf: GraphQLInputType

    def __str__(self) -> str:
        below = "".join(f".{p}" if p != LIST else "[]" for p in self.path)
        return f"{self.field}({self.argument}{below})"

    def request(self, value: Any) -> tuple[str, dict[str, Any]]:
        """A document calling the field with every required argument valid, and ``value`` at
        this position of the argument sent as a variable."""
        root = SCHEMA.query_type if self.operation == "query" else SCHEMA.mutation_type
        assert root is not None
        field = root.fields[self.field]
        variables: dict[str, Any] = {}
        definitions, arguments = [], []
        for name, argument in field.args.items():
            if name == self.argument:
                variables[name] = value_with(argument.type, self.path, value)
            elif isinstance(argument.type, GraphQLNonNull):
                variables[name] = valid_value(argument.type)
            else:
                continue
            definitions.append(f"${name}: {argument.type}")
            arguments.append(f"{name}: ${name}")
        selection = " { __typename }" if _composite(field) else ""
        document = (
            f"{self.operation}({', '.join(definitions)}) "
            f"{{ {self.field}({', '.join(arguments)}){selection} }}"
        )
        return document, variables


def _composite(field: GraphQLField) -> bool:
    return is_composite_type(get_named_type(field.type))


def _positions_in(
    type_: GraphQLInputType, path: tuple[str, ...], seen: frozenset[str]
) -> Iterator[tuple[tuple[str, ...], GraphQLInputType]]:
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    yield path, type_
    if isinstance(type_, GraphQLList):
        yield from _positions_in(type_.of_type, (*path, LIST), seen)
    elif isinstance(type_, GraphQLInputObjectType) and type_.name not in seen:
        for name, field in type_.fields.items():
            yield from _positions_in(field.type, (*path, name), seen | {type_.name})


def positions() -> Iterator[Position]:
    """Every input position of every query and mutation field."""
    roots: list[tuple[str, GraphQLObjectType | None]] = [
        ("query", SCHEMA.query_type),
        ("mutation", SCHEMA.mutation_type),
    ]
    for operation, root in roots:
        assert root is not None
        for field_name, field in root.fields.items():
            for arg_name, argument in field.args.items():
                for path, leaf in _positions_in(argument.type, (), frozenset()):
                    yield Position(operation, field_name, arg_name, path, leaf)


def list_positions() -> list[Position]:
    return [p for p in positions() if isinstance(p.leaf, GraphQLList)]


def string_positions() -> list[Position]:
    return [
        p
        for p in positions()
        if isinstance(p.leaf, GraphQLScalarType) and p.leaf.name in ("String", "ID")
    ]
