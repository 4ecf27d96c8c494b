"""Turning a registered read-only operation into one SQL statement that builds the JSON answer.

For an operation known ahead of time (a registered one), the planner turns the selection into
nested ``json_build_object`` / ``json_agg`` over correlated subqueries, so PostgreSQL builds
the whole answer and Python neither walks rows nor resolves fields. The statement runs in the
request's transaction (``prism.execution.planned``), so row-level security and the
organization setting apply as to any statement; the caller's scope (organization, clearance,
department rule, deletion) is written into the SQL exactly as
``prism.models.documents.visible_documents`` writes it.

What is not planned raises ``NotPlanned`` and falls back to the interpreted path, which is the
reference: fields with logic of their own (PII masking below CONFIDENTIAL, audited reads of
RESTRICTED text, PII summaries, the viewer), directives, merged duplicate keys, any root field
but `documents`, `document`, `node` (of a Document) and `users`, and any request whose answer
would carry an error (a missing document, a refused action, a bad argument: the interpreted
path reports it with its path). What a selection maps to (tables, columns) is described in
``prism.execution.fragments``; this is the only module of ``execution`` that writes SQL."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    value_from_ast_untyped,
)

from prism.authz.policy import Action, decide, sees_raw_pii
from prism.authz.principal import Principal
from prism.errors import PrismError
from prism.execution.fragments import (
    ITEM_FIELDS,
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
from prism.execution.ids import from_global_id
from prism.models.documents import DocumentFilter
from prism.models.enums import Classification
from prism.models.pagination import MAX_PAGE_SIZE, PageRequest

# --- SQL fragments --------------------------------------------------------------------------


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


def _global_id(type_name: str, id_column: str) -> str:
    return _b64url(f"'{type_name}:' || {id_column}::text")


def _decimal(column: str) -> str:
    return f"{column}::text"


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


def _column(column: Column, alias: str) -> str:
    """SQL of the JSON-able value of ``column`` on the row alias ``alias``."""
    sql = f"{alias}.{column.name}"
    if column.kind is Kind.TIMESTAMP:
        return _iso(sql)
    if column.kind is Kind.DECIMAL:
        return _decimal(sql)
    if column.kind is Kind.OPTIONAL_DECIMAL:
        return f"CASE WHEN {sql} IS NULL THEN NULL ELSE {sql}::text END"
    return sql


def _item_field(key: str, kind: ItemKind) -> str:
    """SQL of a key of a feedback item, the JSON object ``i``."""
    if kind is ItemKind.TEXT:
        return f"i->>'{key}'"
    if kind is ItemKind.FLOAT:
        return f"(i->>'{key}')::float8"
    return f"i->'{key}'"


# --- planning -------------------------------------------------------------------------------


@dataclass
class Binds:
    """Values of one request, named as the SQL names them."""

    values: dict[str, Any] = field(default_factory=dict)

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f":{name}"


@dataclass
class Planner:
    """Turns one operation into SQL for one principal and one set of variables. Every
    variable-dependent choice (page sizes, cursors, IDs, filters) becomes a bind value, so the
    SQL text of a (plan, visibility class) pair is stable and PostgreSQL's prepared statement
    and SQLAlchemy's compiled cache are reused."""

    principal: Principal
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]
    binds: Binds = field(default_factory=Binds)
    aliases: int = 0

    def alias(self, prefix: str) -> str:
        self.aliases += 1
        return f"{prefix}{self.aliases}"

    # -- selections --

    def fields(self, selection_set: SelectionSetNode, type_name: str) -> list[FieldNode]:
        return selected_fields(selection_set, type_name, self.fragments)

    def argument(self, node: FieldNode, name: str) -> Any:
        for argument in node.arguments or ():
            if argument.name.value == name:
                return self.value(argument.value)
        return None

    def value(self, node: ValueNode) -> Any:
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value)
        return value_from_ast_untyped(node, dict(self.variables))

    def object(self, type_name: str, alias: str, selection_set: SelectionSetNode | None) -> str:
        if selection_set is None:
            raise NotPlanned("an object without a selection")
        pairs: list[str] = []
        for node in self.fields(selection_set, type_name):
            key = response_key(node)
            pairs.append(f"'{key}', {self.field(type_name, alias, node)}")
        if len(pairs) > 50:
            raise NotPlanned("more than 50 fields in one object")
        return f"json_build_object({', '.join(pairs)})"

    def field(self, type_name: str, alias: str, node: FieldNode) -> str:
        name = node.name.value
        if name == "__typename":
            return f"'{type_name}'"
        if name == "id":
            return _global_id(type_name, f"{alias}.id")
        scalars = TYPES[type_name].scalars
        if name in scalars:
            return _column(scalars[name], alias)
        method = getattr(self, f"_{type_name}_{name}", None)
        if method is None:
            raise NotPlanned(f"{type_name}.{name}")
        sql: str = method(alias, node)
        return sql

    def _check_text(self) -> None:
        if not sees_raw_pii(self.principal):
            raise NotPlanned("text is masked for this caller")
        if self.principal.clearance is Classification.RESTRICTED:
            raise NotPlanned("reads of RESTRICTED text are audited")

    def lookup(self, type_name: str, id_sql: str, node: FieldNode) -> str:
        table = TYPES[type_name].table
        a = self.alias(type_name[0].lower())
        return (
            f"(SELECT {self.object(type_name, a, node.selection_set)} "
            f"FROM {table} {a} WHERE {a}.id = {id_sql})"
        )

    def connection(
        self,
        type_name: str,
        node: FieldNode,
        source: str,
        ordering: Ordering,
        *,
        total: str | None = None,
    ) -> str:
        """A Relay connection over the rows of ``source`` (a FROM clause with alias "{a}" and
        its WHERE), ordered by ``ordering``, paged by the field's first/after."""
        first = self.argument(node, "first")
        if first is None:
            first = 20
        if not isinstance(first, int) or not 0 <= first <= MAX_PAGE_SIZE:
            raise NotPlanned("a page size the interpreted path refuses")
        after = self.argument(node, "after")
        a = self.alias("r")
        where = ""
        if after is not None:
            try:
                request = PageRequest.parse(first, after, ordering=ordering.name)
            except PrismError as exc:
                raise NotPlanned("a cursor the interpreted path refuses") from exc
            assert request.after is not None
            op = "<" if ordering.descending else ">"
            values = ", ".join(self.binds.add(v) for v in request.after)
            where = f" AND ({', '.join(ordering.columns(a))}) {op} ({values})"
        limit = self.binds.add(first)
        parts: list[str] = []
        assert node.selection_set is not None
        for child in self.fields(node.selection_set, f"{type_name}Connection"):
            key = response_key(child)
            value = self.connection_part(
                type_name, child, a, ordering, limit, after is not None, total
            )
            parts.append(f"'{key}', {value}")
        rows = (
            f"SELECT {a}.*, row_number() OVER (ORDER BY {ordering.order_by(a)}) AS rn "
            f"FROM {source.format(a=a)}{where} ORDER BY {ordering.order_by(a)} LIMIT {limit} + 1"
        )
        # HAVING makes it one group even with no rows: an empty page, not a null connection.
        return f"(SELECT json_build_object({', '.join(parts)}) FROM ({rows}) {a} HAVING true)"

    def connection_part(
        self,
        type_name: str,
        node: FieldNode,
        a: str,
        ordering: Ordering,
        limit: str,
        has_after: bool,
        total: str | None,
    ) -> str:
        name = node.name.value
        if name == "__typename":
            return f"'{type_name}Connection'"
        if name == "totalCount" and total is not None:
            return total
        if name == "pageInfo":
            return self.page_info(node, a, ordering, limit, has_after)
        if name != "edges":
            raise NotPlanned(f"{type_name}Connection.{name}")
        assert node.selection_set is not None
        parts = []
        for child in self.fields(node.selection_set, f"{type_name}Edge"):
            key = response_key(child)
            if child.name.value == "node":
                parts.append(f"'{key}', {self.object(type_name, a, child.selection_set)}")
            elif child.name.value == "cursor":
                parts.append(f"'{key}', {ordering.cursor(a)}")
            elif child.name.value == "__typename":
                parts.append(f"'{key}', '{type_name}Edge'")
            else:
                raise NotPlanned(f"{type_name}Edge.{child.name.value}")
        edge = f"json_build_object({', '.join(parts)})"
        return (
            f"coalesce(json_agg({edge} ORDER BY {a}.rn) FILTER (WHERE {a}.rn <= {limit}), "
            "'[]'::json)"
        )

    def page_info(
        self, node: FieldNode, a: str, ordering: Ordering, limit: str, has_after: bool
    ) -> str:
        assert node.selection_set is not None
        parts = []
        cursor = ordering.cursor(a)
        for child in self.fields(node.selection_set, "PageInfo"):
            key = response_key(child)
            name = child.name.value
            if name == "hasNextPage":
                value = f"count(*) > {limit}"
            elif name == "hasPreviousPage":
                value = "true" if has_after else "false"
            elif name == "startCursor":
                value = f"(array_agg({cursor} ORDER BY {a}.rn) FILTER (WHERE {a}.rn <= {limit}))[1]"
            elif name == "endCursor":
                value = (
                    f"(array_agg({cursor} ORDER BY {a}.rn DESC) "
                    f"FILTER (WHERE {a}.rn <= {limit}))[1]"
                )
            elif name == "__typename":
                value = "'PageInfo'"
            else:
                raise NotPlanned(f"PageInfo.{name}")
            parts.append(f"'{key}', {value}")
        return f"json_build_object({', '.join(parts)})"

    # -- Document --

    def _Document_uploadedBy(self, a: str, node: FieldNode) -> str:
        return self.lookup("User", f"{a}.uploaded_by", node)

    def _Document_sections(self, a: str, node: FieldNode) -> str:
        ordering = Ordering("sections", (("{a}.ord", "int"), ("{a}.id", "uuid")))
        source = f"document_sections {{a}} WHERE {{a}}.document_id = {a}.id"
        return self.connection("Section", node, source, ordering)

    def _Document_analyses(self, a: str, node: FieldNode) -> str:
        source = f"analysis_results {{a}} WHERE {{a}}.document_id = {a}.id"
        return self.connection("Analysis", node, source, Ordering("analyses", CREATED))

    def _Document_feedback(self, a: str, node: FieldNode) -> str:
        source = f"user_feedback {{a}} WHERE {{a}}.document_id = {a}.id"
        return self.connection("Feedback", node, source, Ordering("feedback", CREATED))

    # -- Section --

    def _Section_name(self, a: str, node: FieldNode) -> str:
        self._check_text()
        return _column(SECTION_TEXT["name"], a)

    def _Section_content(self, a: str, node: FieldNode) -> str:
        self._check_text()
        return _column(SECTION_TEXT["content"], a)

    def _Section_redacted(self, a: str, node: FieldNode) -> str:
        if sees_raw_pii(self.principal):
            return "false"
        return f"(jsonb_array_length({a}.pii_findings) > 0)"

    def _Section_document(self, a: str, node: FieldNode) -> str:
        return self.visible_document(f"{a}.document_id", node)

    def _Section_analyses(self, a: str, node: FieldNode) -> str:
        b = self.alias("a")
        body = self.object("Analysis", b, node.selection_set)
        return (
            f"(SELECT coalesce(json_agg({body} ORDER BY {b}.created_at, {b}.id), '[]'::json) "
            f"FROM analysis_results {b} WHERE {b}.section_id = {a}.id)"
        )

    # -- Analysis --

    def _Analysis_document(self, a: str, node: FieldNode) -> str:
        return self.visible_document(f"{a}.document_id", node)

    def _Analysis_section(self, a: str, node: FieldNode) -> str:
        return self.lookup("Section", f"{a}.section_id", node)

    def _Analysis_feedbackItems(self, a: str, node: FieldNode) -> str:
        self._check_text()
        assert node.selection_set is not None
        pairs = []
        for child in self.fields(node.selection_set, "FeedbackItem"):
            key = response_key(child)
            if child.name.value == "__typename":
                pairs.append(f"'{key}', 'FeedbackItem'")
            elif child.name.value in ITEM_FIELDS:
                pairs.append(f"'{key}', {_item_field(*ITEM_FIELDS[child.name.value])}")
            else:
                raise NotPlanned(f"FeedbackItem.{child.name.value}")
        return (
            f"(SELECT coalesce(json_agg(json_build_object({', '.join(pairs)}) ORDER BY n), "
            f"'[]'::json) FROM jsonb_array_elements({a}.feedback_items) WITH ORDINALITY AS x(i, n))"
        )

    # -- Feedback --

    def _Feedback_document(self, a: str, node: FieldNode) -> str:
        return self.visible_document(f"{a}.document_id", node)

    def _Feedback_section(self, a: str, node: FieldNode) -> str:
        return self.lookup("Section", f"{a}.section_id", node)

    def _Feedback_analysis(self, a: str, node: FieldNode) -> str:
        return self.lookup("Analysis", f"{a}.analysis_id", node)

    def _Feedback_author(self, a: str, node: FieldNode) -> str:
        return self.lookup("User", f"{a}.user_id", node)

    def _Feedback_approvedBy(self, a: str, node: FieldNode) -> str:
        return self.lookup("User", f"{a}.approved_by", node)

    # -- documents and the scope --

    def visible(self, a: str) -> str:
        """``visible_documents(scope)`` over the documents alias ``a``."""
        scope = self.principal.scope()
        levels = [c.value for c in scope.max_classification.at_most()]
        rule = (
            f"{a}.organization_id = {self.binds.add(scope.organization_id)} "
            f"AND {a}.deleted_at IS NULL "
            f"AND {a}.classification = ANY({self.binds.add(levels)})"
        )
        if not scope.all_departments and scope.max_classification is Classification.RESTRICTED:
            same = (
                f"{a}.department = {self.binds.add(scope.department)}"
                if scope.department
                else "false"
            )
            rule += f" AND ({a}.classification <> 'RESTRICTED' OR {same})"
        return rule

    def visible_document(self, id_sql: str, node: FieldNode) -> str:
        d = self.alias("d")
        return (
            f"(SELECT {self.object('Document', d, node.selection_set)} "
            f"FROM documents {d} WHERE {d}.id = {id_sql} AND {self.visible(d)})"
        )

    def document_filter(self, a: str, value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, dict):
            raise NotPlanned("a filter the interpreted path refuses")
        try:
            flt = DocumentFilter(
                processing_status=value.get("processingStatus"),
                classification=value.get("classification"),
                document_type=value.get("documentType"),
                risk_level=value.get("riskLevel"),
                uploaded_by=_user_id(value.get("uploadedBy")),
                created_after=value.get("createdAfter"),
                created_before=value.get("createdBefore"),
                legal_hold=value.get("legalHold"),
            )
        except (TypeError, ValueError, PrismError) as exc:
            raise NotPlanned("a filter the interpreted path refuses") from exc
        sql = ""
        for column, values in (
            ("processing_status", flt.processing_status),
            ("classification", flt.classification),
            ("document_type", flt.document_type),
            ("risk_level", flt.risk_level),
        ):
            if values:
                names = [getattr(v, "value", v) for v in values]
                if not all(isinstance(n, str) for n in names):
                    raise NotPlanned("an enum value the interpreted path refuses")
                sql += f" AND {a}.{column} = ANY({self.binds.add(names)})"
        if flt.uploaded_by is not None:
            sql += f" AND {a}.uploaded_by = {self.binds.add(flt.uploaded_by)}"
        if flt.created_after is not None or flt.created_before is not None:
            raise NotPlanned("date filters")  # parsed by the DateTime scalar: interpreted
        if flt.legal_hold is not None:
            sql += f" AND {a}.legal_hold = {self.binds.add(bool(flt.legal_hold))}"
        return sql

    # -- root fields --

    def root(self, node: FieldNode) -> str:
        name = node.name.value
        if name == "documents":
            self.allowed(Action.DOCUMENT_READ)
            return self.documents(node)
        if name in ("document", "node"):
            self.allowed(Action.DOCUMENT_READ)
            raw = self.argument(node, "id")
            try:
                kind, row_id = from_global_id(raw) if isinstance(raw, str) else ("", None)
            except PrismError as exc:
                raise NotPlanned("an ID the interpreted path refuses") from exc
            if kind != "Document" or row_id is None:
                raise NotPlanned("a node that is not a Document")
            return self.visible_document(self.binds.add(row_id), node)
        if name == "users":
            self.allowed(Action.USER_LIST)
            org = self.binds.add(self.principal.organization_id)
            source = f"users {{a}} WHERE {{a}}.organization_id = {org}"
            return self.connection("User", node, source, Ordering("users", CREATED))
        if name == "__typename":
            return "'Query'"
        raise NotPlanned(f"Query.{name}")

    def allowed(self, action: Action) -> None:
        if not decide(self.principal, action).allowed:
            raise NotPlanned("refused: the interpreted path reports it")

    def documents(self, node: FieldNode) -> str:
        order = self.argument(node, "orderBy") or {}
        field_name = order.get("field", "CREATED_AT") if isinstance(order, dict) else None
        direction = order.get("direction", "DESC") if isinstance(order, dict) else None
        field_name = getattr(field_name, "value", field_name)
        direction = getattr(direction, "value", direction)
        if field_name not in DOCUMENT_KEYS or direction not in ("ASC", "DESC"):
            raise NotPlanned("an ordering the interpreted path refuses")
        ordering = Ordering(
            f"documents:{field_name}:{'desc' if direction == 'DESC' else 'asc'}",
            DOCUMENT_KEYS[field_name],
            descending=direction == "DESC",
        )
        where = self.visible("{a}") + self.document_filter("{a}", self.argument(node, "filter"))
        c = self.alias("c")
        total = f"(SELECT count(*) FROM documents {c} WHERE {where.replace('{a}', c)})"
        return self.connection(
            "Document", node, "documents {a} WHERE " + where, ordering, total=total
        )


def _user_id(value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    kind, row_id = from_global_id(value)
    if kind != "User":
        raise ValueError("not a User ID")
    return row_id


# --- entry point ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    sql: sa.TextClause
    values: dict[str, Any]
    # Root keys whose null means NOT_FOUND (an error only the interpreted path gives).
    must_exist: tuple[str, ...] = ()


def plan(
    document: DocumentNode,
    operation: OperationDefinitionNode,
    principal: Principal,
    variables: Mapping[str, Any] | None,
) -> Compiled:
    """The statement answering ``operation`` for ``principal``; NotPlanned if it cannot."""
    if operation.operation is not OperationType.QUERY:
        raise NotPlanned("not a query")
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    planner = Planner(principal, fragments, with_defaults(operation, variables or {}))
    pairs = []
    must_exist = []
    for node in planner.fields(operation.selection_set, "Query"):
        key = response_key(node)
        pairs.append(f"'{key}', {planner.root(node)}")
        if node.name.value in ("document", "node"):
            must_exist.append(key)
    sql = f"SELECT json_build_object({', '.join(pairs)})::text"
    return Compiled(sa.text(sql), planner.binds.values, tuple(must_exist))
