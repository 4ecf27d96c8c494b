"""What an operation may cost, known before it runs, and what it did cost.

The unit is one object in the answer. A field that returns an object costs one, plus its
selection; a list of objects costs that for each element: a connection's edges are `first`
of them (the default page size when omitted), another list a fixed estimate, or the number
of IDs asked for. Scalars are free. The estimate is an upper bound of the answer's size, so a
client that asks for 100 documents with 100 sections each is told so before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    value_from_ast,
)
from graphql.execution.values import get_variable_values

from prism.models.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

# Lists without `first`: their usual size (a section is analysed once or twice; the analyzers
# report a handful of items), else LIST_ESTIMATE.
LIST_ESTIMATE = 10
LIST_ESTIMATES = {("Section", "analyses"): 2, ("Analysis", "feedbackItems"): 10}


@dataclass(frozen=True)
class Estimate:
    cost: int
    # The root fields' names (each once) and how many there are, fragments expanded.
    root_fields: list[str]
    root_field_count: int
    # Selections walked: each fragment once per type and enclosing page size, whatever the
    # number of its spreads.
    work: int = 0


def operation_of(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)


class _Estimator:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        # `first` of the connections being walked (their edges are that many).
        self.page_sizes: list[int] = []
        # Each fragment's cost, per type it is spread on and enclosing page size (all the
        # state its walk reads): a fragment spread many times is walked once.
        self.spread_costs: dict[tuple[str, str, int | None], int] = {}
        self.walked = 0  # selections walked: the work, for tests to bound

    def selection(self, parent: GraphQLNamedType, selection_set: SelectionSetNode | None) -> int:
        if selection_set is None:
            return 0
        total = 0
        for node in selection_set.selections:
            self.walked += 1
            if isinstance(node, FieldNode):
                total += self.field(parent, node)
            elif isinstance(node, InlineFragmentNode):
                on = (
                    self.schema.get_type(node.type_condition.name.value)
                    if node.type_condition
                    else parent
                )
                total += self.selection(on or parent, node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                total += self.spread(parent, node.name.value)
        return total

    def spread(self, parent: GraphQLNamedType, name: str) -> int:
        fragment = self.fragments.get(name)
        if fragment is None:
            return 0
        on = self.schema.get_type(fragment.type_condition.name.value) or parent
        key = (name, on.name, self.page_sizes[-1] if self.page_sizes else None)
        found = self.spread_costs.get(key)
        if found is None:
            self.spread_costs[key] = 0  # a cycle (refused by validation) adds nothing
            found = self.spread_costs[key] = self.selection(on, fragment.selection_set)
        return found

    def field(self, parent: GraphQLNamedType, node: FieldNode) -> int:
        definition = _field_of(parent, node.name.value)
        if definition is None:  # __typename and friends
            return 0
        returned = get_named_type(definition.type)
        if not isinstance(returned, GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType):
            return 0
        if "first" in definition.args:  # a connection: its page size sizes its edges
            self.page_sizes.append(self.page_size(definition, node))
            try:
                return 1 + self.selection(returned, node.selection_set)
            finally:
                self.page_sizes.pop()
        each = 1 + self.selection(returned, node.selection_set)
        if isinstance(get_nullable_type(definition.type), GraphQLList):
            return self.list_length(parent, definition, node) * each
        return each

    def page_size(self, definition: GraphQLField, node: FieldNode) -> int:
        arguments = {a.name.value: a.value for a in node.arguments or []}
        first = self.value(arguments.get("first"), definition.args["first"].type)
        if first is None:
            first = definition.args["first"].default_value
        if not isinstance(first, int):
            return DEFAULT_PAGE_SIZE
        return max(0, min(first, MAX_PAGE_SIZE))

    def list_length(
        self, parent: GraphQLNamedType, definition: GraphQLField, node: FieldNode
    ) -> int:
        if parent.name.endswith("Connection") and self.page_sizes:
            return self.page_sizes[-1]
        arguments = {a.name.value: a.value for a in node.arguments or []}
        if "ids" in definition.args:
            ids = self.value(arguments.get("ids"), definition.args["ids"].type)
            if isinstance(ids, list):
                return len(ids)
        return LIST_ESTIMATES.get((parent.name, node.name.value), LIST_ESTIMATE)

    def value(self, node: ValueNode | None, type_: Any) -> Any:
        if node is None:
            return None
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value)
        return value_from_ast(node, type_, dict(self.variables))


def _field_of(parent: GraphQLNamedType, name: str) -> GraphQLField | None:
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = parent.fields.get(name)
        return found
    return None


def estimate(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
) -> Estimate:
    root = schema.get_root_type(operation.operation)
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    estimator = _Estimator(schema, fragments, coerced_variables(schema, operation, variables))
    assert root is not None
    cost = estimator.selection(root, operation.selection_set)
    roots = _RootFields(fragments)
    names, count = roots.of(operation.selection_set)
    return Estimate(
        cost=cost,
        root_fields=list(names),
        root_field_count=count,
        work=estimator.walked + roots.walked,
    )


def coerced_variables(
    schema: GraphQLSchema, operation: OperationDefinitionNode, variables: Mapping[str, Any] | None
) -> Mapping[str, Any]:
    """The variables as execution will see them: defaults filled in, `100.0` an Int 100.
    Values that do not coerce are refused by execution; the estimate then reads none."""
    coerced = get_variable_values(
        schema, operation.variable_definitions or (), dict(variables or {}), max_errors=1
    )
    return {} if isinstance(coerced, list) else coerced.coerced


class _RootFields:
    """The root fields' names and number, through fragments; each fragment looked at once."""

    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments
        self.spread: dict[str, tuple[dict[str, None], int]] = {}
        self.walked = 0

    def of(self, selection_set: SelectionSetNode) -> tuple[dict[str, None], int]:
        names: dict[str, None] = {}  # ordered, each once
        count = 0
        for node in selection_set.selections:
            self.walked += 1
            if isinstance(node, FieldNode):
                names[node.name.value] = None
                count += 1
                continue
            if isinstance(node, InlineFragmentNode):
                inner_names, inner_count = self.of(node.selection_set)
            elif isinstance(node, FragmentSpreadNode) and node.name.value in self.fragments:
                name = node.name.value
                if name not in self.spread:
                    self.spread[name] = ({}, 0)  # a cycle (refused by validation) adds nothing
                    self.spread[name] = self.of(self.fragments[name].selection_set)
                inner_names, inner_count = self.spread[name]
            else:
                continue
            names.update(inner_names)
            count += inner_count
        return names, count


def actual(data: object) -> int:
    """Objects in an answer (the root excluded): what the estimate bounds."""
    if isinstance(data, dict):
        return sum(_objects(value) for value in data.values())
    return 0


def _objects(value: object) -> int:
    if isinstance(value, dict):
        return 1 + sum(_objects(v) for v in value.values())
    if isinstance(value, list):
        return sum(_objects(v) for v in value)
    return 0
