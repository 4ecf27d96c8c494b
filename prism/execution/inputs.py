"""Bounds on every input value, at the edge, for every field at once.

Two places see what a client sends before any resolver does:

- ``decode_json``: every JSON the HTTP view and the WebSocket handler decode (a POST body,
  GET's ``variables`` and ``extensions``, multipart ``operations`` and ``map``, a
  graphql-transport-ws message). Strict JSON (no NaN or Infinity, no lone surrogates, valid
  UTF-8), nested at most ``MAX_NESTING`` levels.
- ``InputBounds``: before validation and execution, one walk over the variable values and the
  literal values of the document (arguments, input fields, defaults, directives): lists of at
  most ``MAX_LIST_LENGTH`` elements, strings of at most ``MAX_STRING_LENGTH`` characters with
  no NUL (PostgreSQL cannot store it) and no lone surrogate (no encoding can), at most
  ``MAX_NESTING`` levels. The walk is iterative and linear in the size of the input.

A field that needs less declares it where it is resolved (``nodes(ids:)``: 100 ids).
What breaks a bound is BAD_USER_INPUT, saying which variable or argument and why.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    StringValueNode,
    ValueNode,
)
from strawberry.extensions import SchemaExtension

from prism.errors import BadUserInput

MAX_LIST_LENGTH = 1_000
MAX_STRING_LENGTH = 100_000
MAX_NESTING = 32

# NUL, and UTF-16 surrogate code points (valid only in pairs, which Python holds as one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class JsonRefused(json.JSONDecodeError):
    """A JSON text refused whole; the standard library's base keeps Strawberry's handlers
    (HTTP 400, WebSocket close 4400) working."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.msg = message
        self.doc = ""
        self.pos = self.lineno = self.colno = 0

    def __str__(self) -> str:
        return self.msg


def decode_json(data: str | bytes) -> object:
    """Strict JSON, nested at most ``MAX_NESTING`` levels."""
    too_deep = f"The request's JSON nests deeper than {MAX_NESTING} levels."
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson stops at 1,024 levels itself, without recursing.
        if str(exc).startswith("depth limit exceeded"):
            raise JsonRefused(too_deep) from exc
        raise JsonRefused(f"The request is not valid JSON: {exc}") from exc
    if _nesting(value) > MAX_NESTING:
        raise JsonRefused(too_deep)
    return value


def _nesting(value: object) -> int:
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_NESTING:
                break
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _string_problem(text: str, what: str = "a string") -> str | None:
    if len(text) > MAX_STRING_LENGTH:
        return f"{what} of {len(text)} characters; the limit is {MAX_STRING_LENGTH}"
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"{what} holding a NUL character (U+0000)"
    return f"{what} holding a lone UTF-16 surrogate (not a character)"


def _list_problem(length: int) -> str | None:
    if length > MAX_LIST_LENGTH:
        return f"a list of {length} elements; the limit is {MAX_LIST_LENGTH}"
    return None


def value_problem(value: object) -> tuple[str, str] | None:
    """The first bound a decoded value (a variable's) breaks: (path below it, problem)."""
    stack: list[tuple[object, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_NESTING:
            return path, f"values nested deeper than {MAX_NESTING} levels"
        problem: str | None = None
        if isinstance(item, str):
            problem = _string_problem(item)
        elif isinstance(item, list):
            problem = _list_problem(len(item))
            stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = _string_problem(str(key), "a field name")
                if problem is not None:
                    break
                stack.append((child, depth + 1, f"{path}.{key}"))
        elif isinstance(item, float) and not math.isfinite(item):
            problem = "a number that is not finite"
        if problem is not None:
            return path, problem
    return None


def _literal_problem(node: ValueNode) -> tuple[str, str] | None:
    stack: list[tuple[ValueNode, int, str]] = [(node, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_NESTING:
            return path, f"values nested deeper than {MAX_NESTING} levels"
        problem: str | None = None
        if isinstance(item, StringValueNode):
            problem = _string_problem(item.value)
        elif isinstance(item, ListValueNode):
            problem = _list_problem(len(item.values))
            stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item.values))
        elif isinstance(item, ObjectValueNode):
            stack.extend(
                (field.value, depth + 1, f"{path}.{field.name.value}") for field in item.fields
            )
        if problem is not None:
            return path, problem
    return None


def _literals(document: DocumentNode) -> Iterator[tuple[str, ValueNode]]:
    """Each outermost literal value in the document with the name it is given to: arguments
    of fields and directives, and variable defaults. Iterative: the document's own nesting is
    bounded by the depth and token limits, not by Python's stack."""
    stack: list[Any] = list(document.definitions)
    while stack:
        node = stack.pop()
        directives = list(getattr(node, "directives", None) or ())
        if isinstance(node, OperationDefinitionNode):
            for definition in node.variable_definitions or ():
                if definition.default_value is not None:
                    yield f"${definition.variable.name.value}", definition.default_value
                directives.extend(definition.directives or ())
        if isinstance(node, FieldNode):
            for argument in node.arguments or ():
                yield argument.name.value, argument.value
        for directive in directives:
            for argument in directive.arguments or ():
                yield argument.name.value, argument.value
        selection_set = getattr(node, "selection_set", None)
        if selection_set is not None:
            stack.extend(selection_set.selections)


def _document_problem(document: DocumentNode) -> str | None:
    for name, literal in _literals(document):
        found = _literal_problem(literal)
        if found is not None:
            path, problem = found
            return f"Argument `{name}{path}`: {problem}."
    return None


# Documents whose literals fit, by text (clients send the same few documents over and over).
_FITTING: OrderedDict[str, None] = OrderedDict()
FITTING_CACHE_SIZE = 1024


def _document_problem_cached(query: str | None, document: DocumentNode) -> str | None:
    if query is not None and query in _FITTING:
        _FITTING.move_to_end(query)
        return None
    problem = _document_problem(document)
    if problem is None and query is not None:
        _FITTING[query] = None
        if len(_FITTING) > FITTING_CACHE_SIZE:
            _FITTING.popitem(last=False)
    return problem


def input_problem(
    document: DocumentNode | None, variables: dict[str, Any] | None, query: str | None = None
) -> str | None:
    """What the request's input breaks, as a message for the client; None when it fits.
    ``query`` is the document's text, when known: the literals of a text seen to fit are not
    walked again."""
    if variables:
        found = value_problem(variables)
        if found is not None:
            path, problem = found
            return f"Variable ${path.lstrip('.')}: {problem}."
    if document is not None:
        return _document_problem_cached(query, document)
    return None


class InputBounds(SchemaExtension):
    """Refuse a request whose input breaks a bound, before it is validated or executed
    (queries, mutations and subscriptions alike). Listed before the validation: an error
    set here takes its place; one set before (the registered-operations rule) stands."""

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.pre_execution_errors is not None:
            yield
            return
        problem = input_problem(ctx.graphql_document, ctx.variables, ctx.query)
        if problem is not None:
            error = BadUserInput(problem)
            ctx.pre_execution_errors = [
                GraphQLError(problem, original_error=error, extensions=error.extensions)
            ]
        yield


class MultipartRefused(ValueError):
    """A multipart request whose ``operations`` and ``map`` do not fit together."""


def place_files(operations: object, files_map: object, files: Mapping[str, Any]) -> Any:
    """The GraphQL multipart request spec: each path of ``map`` names a null in
    ``operations`` (the file's placeholder), which becomes the file. Anything else is refused
    by name, where a lenient walk would fail on the shape a client made up."""
    if not (
        isinstance(operations, dict)
        or (isinstance(operations, list) and all(isinstance(o, dict) for o in operations))
    ):
        raise MultipartRefused("`operations` is a GraphQL request: a JSON object.")
    if not isinstance(files_map, dict) or not all(
        isinstance(paths, list) and all(isinstance(path, str) for path in paths)
        for paths in files_map.values()
    ):
        raise MultipartRefused(
            '`map` is a JSON object of file fields to lists of paths: {"0": ["variables.file"]}.'
        )
    placed = copy.deepcopy(operations)
    for field, paths in files_map.items():
        if field not in files:
            raise MultipartRefused(f"`map` names the file field {field!r}, which was not sent.")
        for path in paths:
            keys = path.split(".")
            target: Any = placed
            for key in keys[:-1]:
                step = _slot(target, key)
                if step is None:
                    raise MultipartRefused(f"`map` path {path!r} is not in `operations`.")
                target = target[step]
            slot = _slot(target, keys[-1])
            if slot is None or target[slot] is not None:
                raise MultipartRefused(f"`map` path {path!r} does not name a null in `operations`.")
            target[slot] = files[field]
    return placed


def _slot(container: Any, key: str) -> str | int | None:
    """Where ``key`` points in a JSON container, if it exists there."""
    if isinstance(container, dict):
        return key if key in container else None
    if isinstance(container, list) and key.isdigit() and int(key) < len(container):
        return int(key)
    return None
