"""Turning a registered read-only operation into one SQL statement that builds the JSON answer.

The planner turns the selection into correlated subqueries that write the answer's JSON text
(by concatenation, byte for byte as ``json_build_object`` / ``json_agg`` print it, at a
fraction of their cost; global IDs encoded per row from a constant prefix), so PostgreSQL
builds the whole answer and Python neither walks rows nor resolves fields. A page is read
with ``LIMIT first`` in its key order and aggregated in that order. The statement runs in the
request's transaction (``prism.execution.planned``), so row-level security and the
organization setting apply as to any statement; the caller's scope (organization, clearance,
department rule, deletion) is written into the SQL exactly as
``prism.models.documents.visible_documents`` writes it.

What is not planned raises ``NotPlanned`` and falls back to the interpreted path, which is the
reference: fields with logic of their own (PII masking below CONFIDENTIAL, audited reads of
RESTRICTED text, PII summaries), directives, merged duplicate keys, any root field but
`documents`, `document`, `node` and `nodes` (of a Document, Section, Analysis, Feedback or
User), `users`, `apiTokens`, `job`, `jobs` and `viewer` (its scopes, organization, user and
API token), and any
request whose answer would carry an error (a missing row, a refused action, a bad argument:
the interpreted path reports it with its path). What a selection maps to (tables, columns) is
described in ``prism.execution.fragments``; plans and their cache are
``prism.execution.plans``.

Long because: this is the only module of ``execution`` that writes SQL (the layering rule), so
the statement of every planned field, and the bind slots that keep it independent of variable
values, live here together."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import sqlalchemy as sa
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    value_from_ast_untyped,
)

from prism.authz.policy import Action, decide, may_read_token, sees_raw_pii
from prism.authz.principal import Principal
from prism.db.engine import PositionalText
from prism.errors import PrismError
from prism.execution.fragments import (
    ITEM_FIELDS,
    PII_FINDING_FIELDS,
    SECTION_TEXT,
    TYPES,
    Column,
    ItemKind,
    Kind,
    NotPlanned,
    response_key,
    selected_fields,
    with_defaults,
)
from prism.execution.ids import expect_id, from_global_id
from prism.models.documents import DocumentFilter
from prism.models.enums import Classification
from prism.models.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest

# --- SQL fragments --------------------------------------------------------------------------
#
# The statement writes the answer's JSON text itself, by concatenation, exactly as
# ``json_build_object`` and ``json_agg`` print it (``{"key" : value, ...}``, ``[a, b]``): the
# same bytes as those functions, for a fraction of their cost (they look up every argument's
# type on every call). A value is a ``Text``: parts that are JSON text, constants or SQL
# expressions never null (a null is written ``null``).


class Lit(str):
    """A constant piece of the answer's text (a str: made and told apart cheaply)."""

    __slots__ = ()


# A piece of JSON text: a constant, or an SQL expression of type text that is never null.
Part = Lit | str
Text = list[Part]


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def concat(parts: Text) -> str:
    """The SQL of ``parts`` joined, adjacent constants merged into one literal."""
    pieces: list[str] = []
    literal: str | None = None
    for part in parts:
        if type(part) is Lit:
            literal = part if literal is None else literal + part
        else:
            if literal is not None:
                pieces.append(sql_literal(literal))
                literal = None
            pieces.append(part)
    if literal is not None or not pieces:
        pieces.append(sql_literal(literal or ""))
    return pieces[0] if len(pieces) == 1 else "(" + " || ".join(pieces) + ")"


def json_object(pairs: list[tuple[str, Text]]) -> Text:
    """``json_build_object``'s text of the pairs (keys are GraphQL names: nothing to escape)."""
    out: Text = []
    separator = "{"
    for key, value in pairs:
        out.append(Lit(f'{separator}"{key}" : '))
        out += value
        separator = ", "
    out.append(Lit("}") if pairs else Lit("{}"))
    return out


def json_value(sql: str) -> Text:
    """The JSON text of a nullable SQL value, as ``json_build_object`` prints it (both use
    ``to_json``'s rules: strings escaped, numbers as they are, NaN quoted, ...)."""
    return [f"coalesce(to_json({sql})::text, 'null')"]


def json_string(sql: str) -> Text:
    """The JSON text of a nullable SQL text known to need no escaping (ISO dates, numbers)."""
    return [f"coalesce('\"' || {sql} || '\"', 'null')"]


def json_or_null(sql: str) -> Text:
    """A nullable SQL expression of JSON text (a looked-up object): ``null`` when null."""
    return [f"coalesce({sql}, 'null')"]


def _iso(column: str) -> str:
    """``datetime.isoformat()`` of a UTC timestamp, as the interpreted path prints it."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE "
        f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
        f"CASE WHEN extract(microseconds FROM {column})::bigint % 1000000 = 0 THEN '' "
        f"ELSE to_char({column} AT TIME ZONE 'UTC', '.US') END || '+00:00' END"
    )


def _b64url(text_sql: str) -> str:
    """Unpadded URL-safe base64 of a text (PostgreSQL's encode() wraps lines: drop them)."""
    return (
        f"rtrim(translate(encode(convert_to({text_sql}, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')"
    )


UUID_TEXT_BYTES = 36


def global_id(type_name: str, id_column: str) -> Text:
    """``prism.execution.ids.to_global_id`` of the row id ``id_column``, as a JSON string.

    Base64 turns each 3 bytes into 4 characters on their own, so the prefix ``Type:`` up to a
    multiple of 3 bytes is a constant encoded here; only the rest of it and the uuid's text
    are encoded per row. That rest is letters, digits, ``:`` and ``-``, ASCII bytes with at
    most 4 one-bits in a row: no 6-bit group of it is 62 or 63, so its standard base64 has
    no ``+`` or ``/`` and is already the URL-safe one; it is 38 bytes at most, under the 57
    after which encode() breaks lines. Only its padding is dropped."""
    head, tail = _id_template(type_name)
    return [head, tail.format(id=id_column), _QUOTE]


_QUOTE = Lit('"')


@cache
def _id_template(type_name: str) -> tuple[Lit, str]:
    """The constant start of a type's IDs (with the string's opening quote), and the SQL of
    the rest, ``{id}`` standing for the row id's column."""
    prefix = f"{type_name}:".encode()
    if not (type_name.isascii() and type_name.isalnum()):
        return Lit('"'), _b64url(f"'{type_name}:' || {{id}}::text")
    cut = len(prefix) // 3 * 3
    head = base64.b64encode(prefix[:cut]).decode()
    rest = prefix[cut:].decode()
    text = f"'{rest}' || {{id}}::text" if rest else "{id}::text"
    # textsend: the text's bytes (ASCII, the same in every encoding), cheaper than convert_to.
    tail = f"encode(textsend({text}), 'base64')"
    if (len(rest) + UUID_TEXT_BYTES) % 3:
        tail = f"split_part({tail}, '=', 1)"  # the padding: no other '=' in base64
    return Lit(f'"{head}'), tail


# A cursor key part: how the interpreted path encodes it (prism.models.pagination).
def _key_part(kind: str, column: str) -> str:
    if kind == "datetime":
        return f"'{{\"d\":\"' || {_iso(column)} || '\"}}'"
    if kind == "uuid":
        return f"'{{\"u\":\"' || {column}::text || '\"}}'"
    if kind == "int":
        return f"({column})::text"
    return f"to_json({column})::text"  # text


@dataclass(frozen=True)
class Ordering:
    name: str
    # (SQL expression over the row alias "{a}", cursor kind) for each key column.
    keys: tuple[tuple[str, str], ...]
    descending: bool = False

    def columns(self, alias: str) -> list[str]:
        return [expr.format(a=alias) for expr, _ in self.keys]

    def order_by(self, alias: str) -> str:
        direction = " DESC" if self.descending else ""
        return ", ".join(f"{c}{direction}" for c in self.columns(alias))

    def cursor(self, alias: str) -> str:
        parts = " || ',' || ".join(
            _key_part(kind, expr.format(a=alias)) for expr, kind in self.keys
        )
        return _b64url(f"'[\"{self.name}\",[' || {parts} || ']]'")


RISK_RANK = (
    "(CASE {a}.risk_level WHEN 'LOW' THEN 1 WHEN 'MEDIUM' THEN 2 WHEN 'HIGH' THEN 3 ELSE 0 END)"
)
DOCUMENT_KEYS = {
    "CREATED_AT": (("{a}.created_at", "datetime"), ("{a}.id", "uuid")),
    "FILENAME": (("{a}.filename", "text"), ("{a}.id", "uuid")),
    "FILE_SIZE": (("{a}.file_size", "int"), ("{a}.id", "uuid")),
    "RISK": ((RISK_RANK, "int"), ("{a}.id", "uuid")),
}
CREATED = (("{a}.created_at", "datetime"), ("{a}.id", "uuid"))
# The orderings of the lists, made once (their names are the interpreted path's cursors').
DOCUMENT_ORDERINGS = {
    (field_name, direction): Ordering(
        f"documents:{field_name}:{direction.lower()}", keys, descending=direction == "DESC"
    )
    for field_name, keys in DOCUMENT_KEYS.items()
    for direction in ("ASC", "DESC")
}
SECTIONS = Ordering("sections", (("{a}.ord", "int"), ("{a}.id", "uuid")))
ANALYSES = Ordering("analyses", CREATED)
FEEDBACK = Ordering("feedback", CREATED)
USERS = Ordering("users", CREATED)
JOBS = Ordering("jobs", CREATED, descending=True)
AUDIT = Ordering("audit", CREATED)


def _python_address(inet: str) -> str:
    """The text Python gives an ``inet`` value as asyncpg reads it (``str`` of an
    ``ipaddress`` address, or of an interface when the mask is not the whole address), from
    PostgreSQL's: PostgreSQL writes an IPv6 address whose first 96 bits are zero, or that
    maps an IPv4 one, with a dotted tail (``::ffff:1.2.3.4``); Python writes two hex groups
    (``::ffff:102:304``)."""
    host = f"host({inet})"
    tail = f"substring({host} from '[^:]*$')"

    def octets(first: int) -> str:
        return (
            f"to_hex(split_part({tail}, '.', {first})::int * 256 "
            f"+ split_part({tail}, '.', {first + 1})::int)"
        )

    address = (
        f"(CASE WHEN family({inet}) = 6 AND {host} LIKE '%.%' "
        f"THEN substring({host} from '^(.*:)') || {octets(1)} || ':' || {octets(3)} "
        f"ELSE {host} END)"
    )
    full = f"(CASE family({inet}) WHEN 4 THEN 32 ELSE 128 END)"
    return (
        f"(CASE WHEN masklen({inet}) = {full} THEN {address} "
        f"ELSE {address} || '/' || masklen({inet}) END)"
    )


def _column(column: Column, sql: str) -> Text:
    """The JSON text of ``column``, read as ``sql``."""
    if column.kind is Kind.TIMESTAMP:
        return json_string(_iso(sql))
    if column.kind in (Kind.DECIMAL, Kind.OPTIONAL_DECIMAL):
        return json_string(f"{sql}::text")  # a Decimal's text, as a string
    if column.kind is Kind.PLAIN:
        return [f"coalesce({sql}::text, 'null')"]
    return json_value(sql)


def _item_field(key: str, kind: ItemKind) -> Text:
    """The JSON text of a key of a feedback item, the JSON object ``i``."""
    if kind is ItemKind.TEXT:
        return json_value(f"i->>'{key}'")
    if kind is ItemKind.FLOAT:
        return json_value(f"(i->>'{key}')::float8")
    return [f"coalesce((i->'{key}')::text, 'null')"]  # jsonb's text, as json_build_object


@cache
def _key_columns(keys: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The columns of the row ("{a}") an ordering's keys read."""
    return tuple(
        dict.fromkeys(re.findall(r"\{a\}\.([a-z_][a-z0-9_]*)", " ".join(k for k, _ in keys)))
    )


# Columns a connection's rows add: the row's number in the page, the count of all rows.
ROW_NUMBER = "prism_rn"
TOTAL = "prism_total"


# --- planning -------------------------------------------------------------------------------


@dataclass
class Request:
    """What one request binds: its variables (the operation's defaults filled in) and its
    principal. ``memo`` holds values several bind slots share (a parsed cursor, a filter)."""

    variables: Mapping[str, Any]
    principal: Principal
    memo: dict[object, Any] = field(default_factory=dict)


# A bind slot's value for a request; raises NotPlanned for a value the interpreted path refuses.
Getter = Callable[[Request], Any]


def _memo(getter: Getter) -> Getter:
    """``getter``, computed once per request however many slots use it."""
    key = object()

    def get(request: Request) -> Any:
        if key not in request.memo:
            request.memo[key] = getter(request)
        return request.memo[key]

    return get


def _constant(value: Any) -> Getter:
    return lambda request: value


def _part(getter: Getter, index: int) -> Getter:
    return lambda request: getter(request)[index]


def _has_variables(node: ValueNode) -> bool:
    if isinstance(node, VariableNode):
        return True
    if isinstance(node, ListValueNode):
        return any(_has_variables(v) for v in node.values)
    if isinstance(node, ObjectValueNode):
        return any(_has_variables(f.value) for f in node.fields)
    return False


@dataclass
class Binds:
    """The statement's bind slots in the order the SQL numbers them; each is a ``Getter``."""

    slots: dict[str, Getter] = field(default_factory=dict)

    def add(self, getter: Getter) -> str:
        """A new slot: its placeholder, asyncpg's positional ``$n`` (the n-th slot)."""
        name = f"p{len(self.slots)}"
        self.slots[name] = getter
        return f"${len(self.slots)}"

    def const(self, value: Any) -> str:
        return self.add(_constant(value))


@dataclass
class Planner:
    """Turns one operation into SQL for one visibility class. Values (variables, the caller's
    organization, user, department) are bind slots read at bind time, so one statement serves
    every value; what changes the statement's shape is read here from the planning request's
    variables and recorded in ``shapes`` (a getter and the value the statement was made for)."""

    principal: Principal
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]
    binds: Binds = field(default_factory=Binds)
    aliases: int = 0
    shapes: list[tuple[Getter, Any]] = field(default_factory=list)
    actions: set[Action] = field(default_factory=set)
    # Binds the caller's own identity (user): the statement's values are the principal's, not
    # only its visibility class's.
    personal: bool = False
    # The columns read of each row alias (a connection's page selects them).
    reads: dict[str, dict[str, None]] = field(default_factory=dict)
    # The planning request (its variables and principal), made on first use.
    planning: Request | None = None

    def col(self, alias: str, name: str) -> str:
        """The column ``name`` of the row alias ``alias``, recorded as read."""
        self.reads.setdefault(alias, {})[name] = None
        return f"{alias}.{name}"

    def alias(self, prefix: str) -> str:
        self.aliases += 1
        return f"{prefix}{self.aliases}"

    def shape(self, getter: Getter) -> Any:
        """The value of ``getter`` for the planning request; the statement is made for it, so
        a request binds this statement only when its value is the same."""
        if self.planning is None:
            self.planning = Request(self.variables, self.principal)
        value = getter(self.planning)
        self.shapes.append((getter, value))
        return value

    # -- selections --

    def fields(self, selection_set: SelectionSetNode, type_name: str) -> list[FieldNode]:
        return selected_fields(selection_set, type_name, self.fragments)

    def argument(self, node: FieldNode, name: str) -> Getter:
        """The argument's value for a request (None when it is not given)."""
        for argument in node.arguments or ():
            if argument.name.value == name:
                value = argument.value
                if isinstance(value, VariableNode):
                    variable = value.name.value
                    return lambda request: request.variables.get(variable)
                if _has_variables(value):
                    return lambda request: value_from_ast_untyped(value, dict(request.variables))
                return _constant(value_from_ast_untyped(value))
        return _constant(None)

    def object(self, type_name: str, alias: str, selection_set: SelectionSetNode | None) -> Text:
        """The JSON text of the object of ``type_name`` on the row alias ``alias``."""
        if selection_set is None:
            raise NotPlanned("an object without a selection")
        pairs = [
            (response_key(node), self.field(type_name, alias, node))
            for node in self.fields(selection_set, type_name)
        ]
        return json_object(pairs)

    def field(self, type_name: str, alias: str, node: FieldNode) -> Text:
        name = node.name.value
        if name == "__typename":
            return [Lit(f'"{type_name}"')]
        if name == "id":
            return global_id(type_name, self.col(alias, "id"))
        scalars = TYPES[type_name].scalars
        if name in scalars:
            return _column(scalars[name], self.col(alias, scalars[name].name))
        method = getattr(self, f"_{type_name}_{name}", None)
        if method is None:
            raise NotPlanned(f"{type_name}.{name}")
        text: Text = method(alias, node)
        return text

    def _check_text(self) -> None:
        if not sees_raw_pii(self.principal):
            raise NotPlanned("text is masked for this caller")
        if self.principal.clearance is Classification.RESTRICTED:
            raise NotPlanned("reads of RESTRICTED text are audited")

    def lookup(self, type_name: str, id_sql: str, node: FieldNode) -> Text:
        table = TYPES[type_name].table
        a = self.alias(type_name[0].lower())
        body = concat(self.object(type_name, a, node.selection_set))
        return json_or_null(f"(SELECT {body} FROM {table} {a} WHERE {a}.id = {id_sql})")

    def page_size(self, node: FieldNode) -> Getter:
        given = self.argument(node, "first")

        def first(request: Request) -> int:
            value = given(request)
            if value is None:
                return DEFAULT_PAGE_SIZE
            if isinstance(value, bool) or not isinstance(value, int):
                raise NotPlanned("a page size the interpreted path refuses")
            if not 0 <= value <= MAX_PAGE_SIZE:
                raise NotPlanned("a page size the interpreted path refuses")
            return int(value)

        return _memo(first)

    def connection(
        self,
        type_name: str,
        node: FieldNode,
        source: Callable[[], str],
        ordering: Ordering,
        *,
        total: Callable[[], str] | None = None,
        total_in_scan: bool = False,
    ) -> Text:
        """A Relay connection over the rows of ``source()`` (a FROM clause with alias "{a}"
        and its WHERE), ordered by ``ordering``, paged by the field's first/after: the page
        size and the cursor's key parts are binds, whether there is a cursor is the shape.
        ``source`` and ``total`` are called only when the selection reads them: each bind
        slot the statement has, it uses (asyncpg's ``$n`` have no gaps).

        The page is read with ``LIMIT first`` in key order and aggregated in that order (no
        numbering, no second sort); ``pageInfo`` reads one row more and numbers the rows as
        they come. ``total`` (the statement of ``totalCount``) is counted by a scan of its
        own, or, with ``total_in_scan`` (an ordering no index gives: the page is a sort of
        every row anyway), in the page's scan itself (``count(*) OVER ()``), the statement of
        ``total`` answering only when the page is empty."""
        assert node.selection_set is not None
        children = self.fields(node.selection_set, f"{type_name}Connection")
        names = {child.name.value for child in children}
        first = self.page_size(node)
        given_after = self.argument(node, "after")
        has_after = bool(self.shape(lambda request: given_after(request) is not None))
        numbered = "pageInfo" in names
        # A cursor is read (and its values sent) whatever is selected, as the interpreted
        # path reads it: a value PostgreSQL refuses is its error to report.
        reads_rows = numbered or "edges" in names or has_after
        in_scan = total is not None and total_in_scan and reads_rows
        a = self.alias("r")
        after = ""
        limit = ""
        if has_after and reads_rows:

            def key(request: Request) -> tuple[Any, ...]:
                try:
                    parsed = PageRequest.parse(
                        first(request), given_after(request), ordering=ordering.name
                    )
                except PrismError as exc:
                    raise NotPlanned("a cursor the interpreted path refuses") from exc
                if parsed.after is None or len(parsed.after) != len(ordering.keys):
                    raise NotPlanned("a cursor the interpreted path refuses")
                return tuple(parsed.after)

            cursor = _memo(key)
            op = "<" if ordering.descending else ">"
            values = ", ".join(self.binds.add(_part(cursor, i)) for i in range(len(ordering.keys)))
            after = f"({', '.join(ordering.columns(a))}) {op} ({values})"
        if reads_rows:
            limit = self.binds.add(first)
        pairs: list[tuple[str, Text]] = []
        for child in children:
            name = child.name.value
            if name == "__typename":
                value: Text = [Lit(f'"{type_name}Connection"')]
            elif name == "totalCount" and total is not None:
                value = [f"coalesce(max({a}.{TOTAL}), {total()})" if in_scan else total()]
            elif name == "pageInfo":
                value = self.page_info(child, a, ordering, limit, has_after)
            elif name == "edges":
                value = self.edges(type_name, child, a, ordering, limit if numbered else None)
            else:
                raise NotPlanned(f"{type_name}Connection.{name}")
            pairs.append((response_key(child), value))
        body = concat(json_object(pairs))
        if not reads_rows:
            return [f"(SELECT {body})"]
        # The row's columns the answer reads, and the ordering's (the page is sorted by them).
        columns = dict.fromkeys([*self.reads.get(a, {}), *_key_columns(ordering.keys)])
        listed = ", ".join([f"{a}.{c}" for c in columns])
        order = ordering.order_by(a)
        size = f"{limit} + 1" if numbered else limit
        where = f" AND {after}" if after else ""
        if in_scan:
            inner = f"{listed}, " if listed else ""
            outer = f"{listed}, {a}.{TOTAL}" if listed else f"{a}.{TOTAL}"
            rows = (
                f"SELECT {outer} FROM (SELECT {inner}count(*) OVER () AS {TOTAL} "
                f"FROM {source().format(a=a)}) {a}{' WHERE ' + after if after else ''} "
                f"ORDER BY {order} LIMIT {size}"
            )
        else:
            rows = (
                f"SELECT {listed} FROM {source().format(a=a)}{where} ORDER BY {order} LIMIT {size}"
            )
        if numbered:
            rows = f"SELECT *, row_number() OVER () AS {ROW_NUMBER} FROM ({rows}) {a}"
        # HAVING makes it one group even with no rows: an empty page, not a null connection.
        return [f"(SELECT {body} FROM ({rows}) {a} HAVING true)"]

    def edges(
        self, type_name: str, node: FieldNode, a: str, ordering: Ordering, limit: str | None
    ) -> Text:
        """The page's edges, aggregated in the rows' order; ``limit``: the rows are numbered
        and one more than the page was read."""
        assert node.selection_set is not None
        pairs: list[tuple[str, Text]] = []
        for child in self.fields(node.selection_set, f"{type_name}Edge"):
            key = response_key(child)
            if child.name.value == "node":
                pairs.append((key, self.object(type_name, a, child.selection_set)))
            elif child.name.value == "cursor":
                pairs.append((key, [Lit('"'), ordering.cursor(a), Lit('"')]))
            elif child.name.value == "__typename":
                pairs.append((key, [Lit(f'"{type_name}Edge"')]))
            else:
                raise NotPlanned(f"{type_name}Edge.{child.name.value}")
        edge = concat(json_object(pairs))
        only_page = f" FILTER (WHERE {a}.{ROW_NUMBER} <= {limit})" if limit else ""
        return [Lit("["), f"coalesce(string_agg({edge}, ', '){only_page}, '')", Lit("]")]

    def page_info(
        self, node: FieldNode, a: str, ordering: Ordering, limit: str, has_after: bool
    ) -> Text:
        assert node.selection_set is not None
        pairs: list[tuple[str, Text]] = []
        cursor = ordering.cursor(a)
        in_page = f"FILTER (WHERE {a}.{ROW_NUMBER} <= {limit})"
        for child in self.fields(node.selection_set, "PageInfo"):
            name = child.name.value
            if name == "hasNextPage":
                value: Text = [f"CASE WHEN count(*) > {limit} THEN 'true' ELSE 'false' END"]
            elif name == "hasPreviousPage":
                value = [Lit("true" if has_after else "false")]
            elif name == "startCursor":
                value = json_string(f"(array_agg({cursor}) {in_page})[1]")
            elif name == "endCursor":
                value = json_string(f"(array_agg({cursor}) {in_page})[least(count(*), {limit})]")
            elif name == "__typename":
                value = [Lit('"PageInfo"')]
            else:
                raise NotPlanned(f"PageInfo.{name}")
            pairs.append((response_key(child), value))
        return json_object(pairs)

    # -- Document --

    def _Document_uploadedBy(self, a: str, node: FieldNode) -> Text:
        return self.lookup("User", self.col(a, "uploaded_by"), node)

    def children(self, table: str, parent: str) -> str:
        """The rows of ``table`` under the document ``parent``, as a source ("{a}"). They are
        in the document's organization, as row-level security also says: naming it lets
        PostgreSQL check it once, not per row."""
        org = self.binds.add(lambda request: request.principal.organization_id)
        return (
            f"{table} {{a}} WHERE {{a}}.document_id = {self.col(parent, 'id')} "
            f"AND {{a}}.organization_id = {org}"
        )

    def _Document_sections(self, a: str, node: FieldNode) -> Text:
        ordering = SECTIONS
        source = lambda: self.children("document_sections", a)  # noqa: E731
        return self.connection("Section", node, source, ordering)

    def _Document_analyses(self, a: str, node: FieldNode) -> Text:
        source = lambda: self.children("analysis_results", a)  # noqa: E731
        return self.connection("Analysis", node, source, ANALYSES)

    def _Document_feedback(self, a: str, node: FieldNode) -> Text:
        source = lambda: self.children("user_feedback", a)  # noqa: E731
        return self.connection("Feedback", node, source, FEEDBACK)

    def _Document_piiSummary(self, a: str, node: FieldNode) -> Text:
        """PII findings of the document's sections counted by type, in the order of the
        type's text, as ``read_pii_summaries`` counts them."""
        assert node.selection_set is not None
        pairs: list[tuple[str, Text]] = []
        for child in self.fields(node.selection_set, "PiiCount"):
            key = response_key(child)
            if child.name.value == "__typename":
                pairs.append((key, [Lit('"PiiCount"')]))
            elif child.name.value == "type":
                pairs.append((key, json_value("x.k")))
            elif child.name.value == "count":
                pairs.append((key, ["x.n::text"]))
            else:
                raise NotPlanned(f"PiiCount.{child.name.value}")
        item = concat(json_object(pairs))
        org = self.binds.add(lambda request: request.principal.organization_id)
        s = self.alias("s")
        return [
            Lit("["),
            f"coalesce((SELECT string_agg({item}, ', ' ORDER BY x.k) FROM "
            f"(SELECT f.value->>'type' AS k, count(*) AS n FROM document_sections {s} "
            f"CROSS JOIN jsonb_array_elements({s}.pii_findings) AS f "
            f"WHERE {s}.document_id = {self.col(a, 'id')} AND {s}.organization_id = {org} "
            f"GROUP BY 1) x), '')",
            Lit("]"),
        ]

    # -- Section --

    def _Section_name(self, a: str, node: FieldNode) -> Text:
        self._check_text()
        return _column(SECTION_TEXT["name"], self.col(a, "name"))

    def _Section_content(self, a: str, node: FieldNode) -> Text:
        self._check_text()
        return _column(SECTION_TEXT["content"], self.col(a, "content"))

    def _Section_redacted(self, a: str, node: FieldNode) -> Text:
        if sees_raw_pii(self.principal):
            return [Lit("false")]
        return [f"(jsonb_array_length({self.col(a, 'pii_findings')}) > 0)::text"]

    def _Section_document(self, a: str, node: FieldNode) -> Text:
        return json_or_null(self.visible_document(self.col(a, "document_id"), node))

    def _Section_analyses(self, a: str, node: FieldNode) -> Text:
        b = self.alias("a")
        body = concat(self.object("Analysis", b, node.selection_set))
        return [
            Lit("["),
            f"coalesce((SELECT string_agg({body}, ', ' ORDER BY {b}.created_at, {b}.id) "
            f"FROM analysis_results {b} WHERE {b}.section_id = {self.col(a, 'id')}), '')",
            Lit("]"),
        ]

    def _Section_piiFindings(self, a: str, node: FieldNode) -> Text:
        """The section's findings in their stored order (types and offsets only)."""
        return self.items("PiiFinding", PII_FINDING_FIELDS, self.col(a, "pii_findings"), node)

    def items(
        self,
        type_name: str,
        fields: Mapping[str, tuple[str, ItemKind]],
        column: str,
        node: FieldNode,
    ) -> Text:
        """A list of objects stored as a jsonb array in ``column``, each selected field read
        from its key, in the stored order (the function scan gives them so)."""
        assert node.selection_set is not None
        pairs: list[tuple[str, Text]] = []
        for child in self.fields(node.selection_set, type_name):
            key = response_key(child)
            if child.name.value == "__typename":
                pairs.append((key, [Lit(f'"{type_name}"')]))
            elif child.name.value in fields:
                pairs.append((key, _item_field(*fields[child.name.value])))
            else:
                raise NotPlanned(f"{type_name}.{child.name.value}")
        item = concat(json_object(pairs))
        return [
            Lit("["),
            f"coalesce((SELECT string_agg({item}, ', ') "
            f"FROM jsonb_array_elements({column}) AS x(i)), '')",
            Lit("]"),
        ]

    # -- Analysis --

    def _Analysis_document(self, a: str, node: FieldNode) -> Text:
        return json_or_null(self.visible_document(self.col(a, "document_id"), node))

    def _Analysis_section(self, a: str, node: FieldNode) -> Text:
        return self.lookup("Section", self.col(a, "section_id"), node)

    def _Analysis_feedbackItems(self, a: str, node: FieldNode) -> Text:
        self._check_text()
        return self.items("FeedbackItem", ITEM_FIELDS, self.col(a, "feedback_items"), node)

    # -- Feedback --

    def _Feedback_document(self, a: str, node: FieldNode) -> Text:
        return json_or_null(self.visible_document(self.col(a, "document_id"), node))

    def _Feedback_section(self, a: str, node: FieldNode) -> Text:
        return self.lookup("Section", self.col(a, "section_id"), node)

    def _Feedback_analysis(self, a: str, node: FieldNode) -> Text:
        return self.lookup("Analysis", self.col(a, "analysis_id"), node)

    def _Feedback_author(self, a: str, node: FieldNode) -> Text:
        return self.lookup("User", self.col(a, "user_id"), node)

    def _Feedback_approvedBy(self, a: str, node: FieldNode) -> Text:
        return self.lookup("User", self.col(a, "approved_by"), node)

    # -- AuditEvent --

    def _AuditEvent_resourceId(self, a: str, node: FieldNode) -> Text:
        """The global ID of the event's resource (its type is the row's): null without a
        type or an id."""
        kind = f"NULLIF({self.col(a, 'resource_type')}, '')"
        row = self.col(a, "resource_id")
        return json_string(_b64url(f"{kind} || ':' || {row}::text"))

    def _AuditEvent_ipAddress(self, a: str, node: FieldNode) -> Text:
        inet = self.col(a, "ip_address")
        return json_value(f"CASE WHEN {inet} IS NULL THEN NULL ELSE {_python_address(inet)} END")

    def _AuditEvent_actor(self, a: str, node: FieldNode) -> Text:
        return self.lookup("User", self.col(a, "actor_id"), node)

    def _AuditEvent_apiToken(self, a: str, node: FieldNode) -> Text:
        """The token the change was made with, when the caller may read it (``may_read_token``:
        every token with TOKEN_READ_ALL, decided per visibility class; else those bound to or
        created by the caller's user)."""
        every = self.shape(lambda request: decide(request.principal, Action.TOKEN_READ_ALL).allowed)
        t = self.alias("t")
        where = f"{t}.id = {self.col(a, 'api_token_id')}"
        if not every:
            self.personal = True
            user = self.binds.add(lambda request: request.principal.user_id)
            where += f" AND ({t}.user_id = {user} OR {t}.created_by = {user})"
        body = concat(self.object("ApiToken", t, node.selection_set))
        return json_or_null(f"(SELECT {body} FROM api_tokens {t} WHERE {where})")

    def audit_log(self, node: FieldNode) -> Text:
        """``auditLog(filter, first, after)`` as ``read_audit_events`` pages it: the
        organization's events within the caller's clearance (an unclassified one to all),
        oldest first, narrowed by event types, resource and actor (date bounds go to the
        interpreted path)."""
        given = self.argument(node, "filter")

        def parsed(request: Request) -> dict[str, Any]:
            value = given(request)
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise NotPlanned("a filter the interpreted path refuses")
            if value.get("after") is not None or value.get("before") is not None:
                raise NotPlanned("date bounds of the audit log")
            found: dict[str, Any] = {}
            types = _list_of(value.get("eventType"))
            if types:
                if not all(isinstance(t, str) for t in types):
                    raise NotPlanned("a filter the interpreted path refuses")
                found["types"] = list(types)
            try:
                if value.get("resourceId") is not None:
                    found["resource"] = from_global_id(value["resourceId"])[1]
                if value.get("actorId") is not None:
                    found["actor"] = expect_id(value["actorId"], "User")
            except (PrismError, TypeError) as exc:
                raise NotPlanned("an ID the interpreted path refuses") from exc
            return found

        flt = _memo(parsed)

        def source() -> str:
            scope = self.principal.scope()
            org = self.binds.add(lambda request: request.principal.scope().organization_id)
            levels = self.binds.add(
                lambda request: [
                    c.value for c in request.principal.scope().max_classification.at_most()
                ]
            )
            allowed = "{a}.classification = ANY(" + levels + ")"
            if not scope.all_departments and scope.max_classification is Classification.RESTRICTED:
                if scope.department:
                    department = self.binds.add(
                        lambda request: request.principal.scope().department
                    )
                    same = "{a}.department = " + department
                else:
                    same = "false"
                allowed += " AND ({a}.classification <> 'RESTRICTED' OR " + same + ")"
            types = self.binds.add(lambda request: flt(request).get("types"))
            resource = self.binds.add(lambda request: flt(request).get("resource"))
            actor = self.binds.add(lambda request: flt(request).get("actor"))
            return (
                "audit_logs {a} WHERE {a}.organization_id = " + org + " "
                "AND ({a}.classification IS NULL OR (" + allowed + ")) "
                "AND ({a}.event_type = ANY(" + types + ") OR " + types + " IS NULL) "
                "AND ({a}.resource_id = " + resource + " OR " + resource + " IS NULL) "
                "AND ({a}.actor_id = " + actor + " OR " + actor + " IS NULL)"
            )

        return self.connection("AuditEvent", node, source, AUDIT)

    # -- documents and the scope --

    def visible(self, a: str) -> str:
        """``visible_documents(scope)`` over the documents alias ``a``. Which rule applies is
        decided by the visibility class; the organization, levels and department are binds."""
        scope = self.principal.scope()
        org = self.binds.add(lambda request: request.principal.scope().organization_id)
        levels = self.binds.add(
            lambda request: [
                c.value for c in request.principal.scope().max_classification.at_most()
            ]
        )
        rule = (
            f"{a}.organization_id = {org} "
            f"AND {a}.deleted_at IS NULL "
            f"AND {a}.classification = ANY({levels})"
        )
        if not scope.all_departments and scope.max_classification is Classification.RESTRICTED:
            if scope.department:
                department = self.binds.add(lambda request: request.principal.scope().department)
                same = f"{a}.department = {department}"
            else:
                same = "false"
            rule += f" AND ({a}.classification <> 'RESTRICTED' OR {same})"
        return rule

    def visible_document(self, id_sql: str, node: FieldNode) -> str:
        """The document's JSON text, or null when the caller does not see it."""
        d = self.alias("d")
        return (
            f"(SELECT {concat(self.object('Document', d, node.selection_set))} "
            f"FROM documents {d} WHERE {d}.id = {id_sql} AND {self.visible(d)})"
        )

    def document_filter(self, a: str, given: Getter) -> str:
        """The filter's conditions, each ``(column matches bind OR bind IS NULL)``: one
        statement for every filter value (date bounds go to the interpreted path)."""

        def parse(request: Request) -> DocumentFilter | None:
            value = given(request)
            if value is None:
                return None
            if not isinstance(value, dict):
                raise NotPlanned("a filter the interpreted path refuses")
            try:
                flt = DocumentFilter(
                    processing_status=_list_of(value.get("processingStatus")),
                    classification=_list_of(value.get("classification")),
                    document_type=_list_of(value.get("documentType")),
                    risk_level=_list_of(value.get("riskLevel")),
                    uploaded_by=_user_id(value.get("uploadedBy")),
                    created_after=value.get("createdAfter"),
                    created_before=value.get("createdBefore"),
                    legal_hold=value.get("legalHold"),
                )
            except (TypeError, ValueError, PrismError) as exc:
                raise NotPlanned("a filter the interpreted path refuses") from exc
            if flt.created_after is not None or flt.created_before is not None:
                raise NotPlanned("date filters")  # parsed by the DateTime scalar: interpreted
            return flt

        flt = _memo(parse)

        def names(attribute: str) -> Getter:
            def get(request: Request) -> list[str] | None:
                parsed = flt(request)
                values = getattr(parsed, attribute) if parsed is not None else None
                if not values:
                    return None
                found = [getattr(v, "value", v) for v in values]
                if not all(isinstance(n, str) for n in found):
                    raise NotPlanned("an enum value the interpreted path refuses")
                return found

            return get

        sql = ""
        for column in ("processing_status", "classification", "document_type", "risk_level"):
            p = self.binds.add(names(column))
            sql += f" AND ({a}.{column} = ANY({p}) OR {p} IS NULL)"
        uploader = self.binds.add(
            lambda request: f.uploaded_by if (f := flt(request)) is not None else None
        )
        sql += f" AND ({a}.uploaded_by = {uploader} OR {uploader} IS NULL)"
        hold = self.binds.add(
            lambda request: (
                bool(f.legal_hold) if (f := flt(request)) and f.legal_hold is not None else None
            )
        )
        sql += f" AND ({a}.legal_hold = {hold} OR {hold} IS NULL)"
        return sql

    # -- root fields --

    def root(self, node: FieldNode) -> tuple[Text, bool]:
        """The root field's JSON text, and whether its null means NOT_FOUND."""
        name = node.name.value
        if name == "documents":
            self.allowed(Action.DOCUMENT_READ)
            return self.documents(node), False
        if name in ("document", "node"):
            given = self.argument(node, "id")
            kind = self.shape(lambda request: _kind_of(given(request)))
            if kind is None:
                raise NotPlanned("an ID the interpreted path refuses")
            if name == "document" and kind != "Document":
                raise NotPlanned("a document ID that is not a Document's")
            row_id = self.binds.add(lambda request: from_global_id(given(request))[1])
            return json_or_null(self.node(kind, row_id, node)), True
        if name == "job":
            # read_job: JOB_READ; an ID of another type is NOT_FOUND (the interpreted path's).
            self.allowed(Action.JOB_READ)
            given = self.argument(node, "id")
            if self.shape(lambda request: _kind_of(given(request))) != "Job":
                raise NotPlanned("an ID that is not a Job's")
            row_id = self.binds.add(lambda request: from_global_id(given(request))[1])
            org = self.binds.add(lambda request: request.principal.organization_id)
            j = self.alias("j")
            body = concat(self.object("Job", j, node.selection_set))
            where = f"{j}.id = {row_id} AND {j}.organization_id = {org}"
            return json_or_null(f"(SELECT {body} FROM jobs {j} WHERE {where})"), True
        if name == "jobs":
            self.allowed(Action.JOB_ADMIN)
            return self.jobs(node), False
        if name == "auditLog":
            self.allowed(Action.AUDIT_READ)
            return self.audit_log(node), False
        if name == "nodes":
            return json_or_null(self.nodes(node)), True
        if name == "viewer":
            return self.object("Viewer", "", node.selection_set), False
        if name == "apiTokens":
            return self.api_tokens(node), False
        if name == "users":
            self.allowed(Action.USER_LIST)

            def users() -> str:
                org = self.binds.add(lambda request: request.principal.organization_id)
                return f"users {{a}} WHERE {{a}}.organization_id = {org}"

            return self.connection("User", node, users, USERS), False
        if name == "__typename":
            return [Lit('"Query"')], False
        raise NotPlanned(f"Query.{name}")

    def node(self, kind: str, id_sql: str, node: FieldNode) -> str:
        """The ``kind`` row of id ``id_sql`` as ``node`` and ``load_node`` read it: the
        action its type needs, through a visible document, in the caller's organization. Its
        JSON text, or null when there is no such row the caller sees."""
        if kind not in NODE_ACTIONS:
            raise NotPlanned(f"a node of type {kind}")
        self.allowed(NODE_ACTIONS[kind])
        if kind == "Document":
            return self.visible_document(id_sql, node)
        table = TYPES[kind].table
        a = self.alias(kind[0].lower())
        if kind == "User":
            org = self.binds.add(lambda request: request.principal.organization_id)
            where = f"{a}.organization_id = {org}"
        else:
            d = self.alias("d")
            where = (
                f"EXISTS (SELECT FROM documents {d} WHERE {d}.id = {a}.document_id "
                f"AND {self.visible(d)})"
            )
        return (
            f"(SELECT {concat(self.object(kind, a, node.selection_set))} "
            f"FROM {table} {a} WHERE {a}.id = {id_sql} AND {where})"
        )

    def nodes(self, node: FieldNode) -> str:
        """``nodes(ids)``: null (so the interpreted path answers, with each missing one's
        error) unless every ID names a row the caller sees. The statement is made for the set
        of types the IDs name; the IDs themselves are binds."""
        given = self.argument(node, "ids")

        def kinds_of(request: Request) -> tuple[str | None, ...] | None:
            ids = _list_of(given(request))
            if not isinstance(ids, list):
                return None
            return tuple(sorted({_kind_of(i) or "" for i in ids}))

        kinds = self.shape(kinds_of)
        if kinds is None or "" in kinds:
            raise NotPlanned("an ID the interpreted path refuses")
        if not kinds:
            return "'[]'"  # no IDs (the shape: no type named)

        def parsed(request: Request) -> list[tuple[str, uuid.UUID]]:
            ids = _list_of(given(request))
            if not isinstance(ids, list) or len(ids) > MAX_PAGE_SIZE:
                raise NotPlanned("IDs the interpreted path refuses")
            return [from_global_id(i) for i in ids]

        rows = _memo(parsed)
        kind_list = self.binds.add(lambda request: [k for k, _ in rows(request)])
        id_list = self.binds.add(lambda request: [i for _, i in rows(request)])
        x = self.alias("x")
        cases = " ".join(f"WHEN '{kind}' THEN {self.node(kind, f'{x}.id', node)}" for kind in kinds)
        item = f"(CASE {x}.kind {cases} END)"
        return (
            f"(SELECT CASE WHEN count(*) = 0 THEN '[]' "
            f"WHEN bool_and({item} IS NOT NULL) THEN "
            f"'[' || string_agg({item}, ', ' ORDER BY {x}.n) || ']' END "
            f"FROM unnest(CAST({kind_list} AS text[]), CAST({id_list} AS uuid[])) "
            f"WITH ORDINALITY AS {x}(kind, id, n))"
        )

    # -- Viewer --

    def _Viewer_scopes(self, a: str, node: FieldNode) -> Text:
        scopes = self.binds.add(lambda request: sorted(request.principal.granted_scopes))
        return [f"to_json(CAST({scopes} AS text[]))::text"]

    def _Viewer_user(self, a: str, node: FieldNode) -> Text:
        self.personal = True
        user = self.binds.add(lambda request: request.principal.user_id)
        org = self.binds.add(lambda request: request.principal.organization_id)
        u = self.alias("u")
        return json_or_null(
            f"(SELECT {concat(self.object('User', u, node.selection_set))} FROM users {u} "
            f"WHERE {u}.id = CAST({user} AS uuid) AND {u}.organization_id = {org})"
        )

    def _Viewer_organization(self, a: str, node: FieldNode) -> Text:
        """The caller's organization (``Viewer.organization``: no action to check)."""
        org = self.binds.add(lambda request: request.principal.organization_id)
        o = self.alias("o")
        return json_or_null(
            f"(SELECT {concat(self.object('Organization', o, node.selection_set))} "
            f"FROM organizations {o} WHERE {o}.id = {org})"
        )

    def _Viewer_apiToken(self, a: str, node: FieldNode) -> Text:
        """The API token of the call, as ``Viewer.apiToken`` loads it: in the caller's
        organization; null without one (its id, bound per request, is null)."""
        self.personal = True
        token = self.binds.add(lambda request: request.principal.api_token_id)
        org = self.binds.add(lambda request: request.principal.organization_id)
        t = self.alias("t")
        return json_or_null(
            f"(SELECT {concat(self.object('ApiToken', t, node.selection_set))} FROM api_tokens "
            f"{t} WHERE {t}.id = CAST({token} AS uuid) AND {t}.organization_id = {org})"
        )

    def api_tokens(self, node: FieldNode) -> Text:
        """``apiTokens`` as ``prism.tokens.api_tokens.list_api_tokens`` reads them: all of the
        organization's for who may read them all (``may_read_token``: a shape, decided again
        for each request's principal), else the caller's own (bound to or created by its
        user; a service token: itself), newest first. No action is required."""
        every = self.shape(lambda request: may_read_token(request.principal, None, None))
        org = self.binds.add(lambda request: request.principal.organization_id)
        t = self.alias("t")
        where = f"{t}.organization_id = {org}"
        if not every:
            self.personal = True
            user = self.binds.add(lambda request: request.principal.user_id)
            token = self.binds.add(lambda request: request.principal.api_token_id)
            where += (
                f" AND CASE WHEN CAST({user} AS uuid) IS NULL THEN {t}.id = CAST({token} AS uuid)"
                f" ELSE ({t}.user_id = {user} OR {t}.created_by = {user}) END"
            )
        body = concat(self.object("ApiToken", t, node.selection_set))
        return [
            Lit("["),
            f"coalesce((SELECT string_agg({body}, ', ' ORDER BY {t}.created_at DESC, {t}.id) "
            f"FROM api_tokens {t} WHERE {where}), '')",
            Lit("]"),
        ]

    def jobs(self, node: FieldNode) -> Text:
        """``jobs(filter, first, after)`` as ``read_jobs`` pages them: the organization's,
        newest first, in any of the filter's states and kinds (an empty list: any)."""
        given = self.argument(node, "filter")

        def listed(key: str) -> Getter:
            def get(request: Request) -> list[str] | None:
                value = given(request)
                if value is None:
                    return None
                if not isinstance(value, dict):
                    raise NotPlanned("a filter the interpreted path refuses")
                found = _list_of(value.get(key))
                if not found:
                    return None
                names = [getattr(v, "value", v) for v in found]
                if not all(isinstance(n, str) for n in names):
                    raise NotPlanned("a filter the interpreted path refuses")
                return names

            return get

        def source() -> str:
            org = self.binds.add(lambda request: request.principal.organization_id)
            states = self.binds.add(listed("state"))
            kinds = self.binds.add(listed("kind"))
            return (
                f"jobs {{a}} WHERE {{a}}.organization_id = {org} "
                f"AND ({{a}}.state = ANY({states}) OR {states} IS NULL) "
                f"AND ({{a}}.kind = ANY({kinds}) OR {kinds} IS NULL)"
            )

        return self.connection("Job", node, source, JOBS)

    def allowed(self, action: Action) -> None:
        """The action is allowed (checked again for each request's principal at bind time)."""
        if not decide(self.principal, action).allowed:
            raise NotPlanned("refused: the interpreted path reports it")
        self.actions.add(action)

    def documents(self, node: FieldNode) -> Text:
        given = self.argument(node, "orderBy")

        def order_of(request: Request) -> tuple[str, str] | None:
            order = given(request) or {}
            if not isinstance(order, dict):
                return None
            field_name = order.get("field", "CREATED_AT")
            direction = order.get("direction", "DESC")
            field_name = getattr(field_name, "value", field_name)
            direction = getattr(direction, "value", direction)
            if field_name not in DOCUMENT_KEYS or direction not in ("ASC", "DESC"):
                return None
            return field_name, direction

        order = self.shape(order_of)
        if order is None:
            raise NotPlanned("an ordering the interpreted path refuses")
        field_name, direction = order
        ordering = DOCUMENT_ORDERINGS[field_name, direction]
        given_filter = self.argument(node, "filter")
        made: list[str] = []

        def where() -> str:  # made once, on first use: the count and the page share it
            if not made:
                made.append(self.visible("{a}") + self.document_filter("{a}", given_filter))
            return made[0]

        def total() -> str:
            c = self.alias("c")
            return f"(SELECT count(*) FROM documents {c} WHERE {where().replace('{a}', c)})"

        return self.connection(
            "Document",
            node,
            lambda: "documents {a} WHERE " + where(),
            ordering,
            total=total,
            # No index gives this order: the page sorts every row, which the count reads.
            total_in_scan=field_name != "CREATED_AT",
        )


# What ``node`` needs to read a type (``prism.resolvers.nodes``), for the types planned.
NODE_ACTIONS: dict[str, Action] = {
    "Document": Action.DOCUMENT_READ,
    "Section": Action.DOCUMENT_READ,
    "Analysis": Action.DOCUMENT_READ,
    "Feedback": Action.DOCUMENT_READ,
    "User": Action.USER_READ,
}


def _list_of(value: Any) -> Any:
    """A value given where a list is declared, as GraphQL coerces it: a single value is the
    list of it (None stays None)."""
    return value if value is None or isinstance(value, list) else [value]


def _kind_of(raw: Any) -> str | None:
    """The type an ID names, or None when it is not an ID."""
    try:
        return from_global_id(raw)[0] if isinstance(raw, str) else None
    except PrismError:
        return None


def _user_id(value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    kind, row_id = from_global_id(value)
    if kind != "User":
        raise ValueError("not a User ID")
    return row_id


# --- entry points ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    """A statement with one request's values bound."""

    sql: sa.TextClause
    values: dict[str, Any]
    # Root keys whose null means NOT_FOUND (an error only the interpreted path gives).
    must_exist: tuple[str, ...] = ()
    # Root keys the statement does not answer: the interpreted path resolves them.
    interpreted: tuple[str, ...] = ()


@dataclass(frozen=True)
class Statement:
    """An operation planned for one visibility class and one shape of its variables: the SQL
    and its bind slots, or the reason it goes to the interpreted path."""

    # What the statement was made for: a request whose getters give these values binds it.
    shapes: tuple[tuple[Getter, Any], ...]
    sql: sa.TextClause | None = None
    slots: Mapping[str, Getter] = field(default_factory=dict)
    must_exist: tuple[str, ...] = ()
    actions: frozenset[Action] = frozenset()
    reason: str | None = None
    personal: bool = False
    # Root keys not planned (the statement answers the others), and why the first is not.
    interpreted: tuple[str, ...] = ()

    def fits(self, request: Request) -> bool:
        """Whether ``request``'s variables have the shape this statement was made for."""
        return all(getter(request) == value for getter, value in self.shapes)

    def bind(self, request: Request) -> Compiled:
        """The statement with ``request``'s values; NotPlanned when it has none, when the
        request's principal may not do what it does, or for a value the interpreted path
        refuses (it reports the error)."""
        if self.sql is None:
            raise NotPlanned(self.reason or "not planned")
        for action in self.actions:
            if not decide(request.principal, action).allowed:
                raise NotPlanned("refused: the interpreted path reports it")
        values = {name: getter(request) for name, getter in self.slots.items()}
        return Compiled(self.sql, values, self.must_exist, self.interpreted)


def fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def statement(
    document: DocumentNode,
    operation: OperationDefinitionNode,
    principal: Principal,
    variables: Mapping[str, Any],
) -> Statement:
    """``operation`` planned for ``principal``'s visibility class and the shape of
    ``variables`` (the operation's defaults filled in: ``with_defaults``)."""
    planner = Planner(principal, fragments_of(document), variables)
    pairs: list[tuple[str, Text]] = []
    must_exist = []
    interpreted: list[str] = []
    reason: str | None = None
    try:
        if operation.operation is not OperationType.QUERY:
            raise NotPlanned("not a query")
        for node in planner.fields(operation.selection_set, "Query"):
            key = response_key(node)
            # A root field that is not planned goes to the interpreted path alone: what
            # planning it added to the statement is taken back (its binds, its actions); the
            # shapes it read stay, so a request of another shape is planned anew.
            slots, actions, personal = (
                dict(planner.binds.slots),
                set(planner.actions),
                (planner.personal),
            )
            try:
                text, must = planner.root(node)
            except NotPlanned as why:
                planner.binds.slots, planner.actions, planner.personal = slots, actions, personal
                interpreted.append(key)
                reason = reason or f"{key}: {why}"
                continue
            pairs.append((key, text))
            if must:
                must_exist.append(key)
        if not pairs:
            raise NotPlanned(reason or "nothing to plan")
    except NotPlanned as why:
        return Statement(tuple(planner.shapes), reason=str(why))
    return Statement(
        tuple(planner.shapes),
        PositionalText(f"SELECT {concat(json_object(pairs))}", tuple(planner.binds.slots)),
        dict(planner.binds.slots),
        tuple(must_exist),
        frozenset(planner.actions),
        reason=reason,
        personal=planner.personal,
        interpreted=tuple(interpreted),
    )


def plan(
    document: DocumentNode,
    operation: OperationDefinitionNode,
    principal: Principal,
    variables: Mapping[str, Any] | None,
) -> Compiled:
    """The statement answering ``operation`` for ``principal`` with ``variables`` bound;
    NotPlanned if it cannot (no cache: ``prism.execution.plans.PlanCache`` keeps plans).

    Its callers may keep the result per visibility class (``prism.execution.planned`` does),
    so a statement that binds the caller's own identity (``viewer { user }``) is not given
    here: ``PlanCache`` and ``Plan.bind(variables, principal)`` bind it per request."""
    values = with_defaults(operation, variables or {})
    made = statement(document, operation, principal, values)
    if made.interpreted:
        raise NotPlanned(made.reason or "a root field is not planned")
    if made.personal:
        raise NotPlanned("the caller's own user: planned per request by PlanCache only")
    return made.bind(Request(values, principal))
