"""The checks before execution, in time linear in the document, whatever its shape.

A document of a few lines can ask for millions of selections: fragments that spread the next
one twice (``fragment F0 on Query { ...F1 ...F1 }``, ``F1 { ...F2 ...F2 }``, ...) double at
each step. Walking such a document spread by spread (as Strawberry's depth and alias
limiters do) takes exponential time. Here each fragment is measured once (its expanded
selections, depth, aliases and the longest chain of spreads it starts), in the order its
spreads need, and the measures of a spread are looked up, not walked again.

A document over a limit is refused (``QUERY_TOO_COMPLEX``) before graphql-core's standard
rules run; one of them (OverlappingFieldsCanBeMerged) compares every two fields that answer
under the same name at the same place, so the fields sharing a place are bounded too. Only
then do the standard rules run, once per distinct document (an LRU), with suggestions
("Did you mean ...?") hidden in production.

graphql-core's rules have costs of their own, bounded here too: OverlappingFieldsCanBeMerged
compares every two fragments spread at one place, whatever their fields (its budget is
lowered to ``MAX_FIELD_COMPARISONS``); ValuesOfCorrectType prints a whole object value in
each error about one of its fields (object values and argument lists are bounded in the
linear pass, errors are at most ``MAX_ERRORS`` and ``MAX_MESSAGE_LENGTH`` long).

Requests refused before they run cost their caller ``rate_limit_refusal_cost``
(prism.execution.limits: ``charge_context_refusal``), charged here as soon as the errors are
known, before any transport sends them; once a caller's bucket cannot pay for a refusal it is
answered ``RATE_LIMITED`` before its document is validated at all.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    ListValueNode,
    NoUndefinedVariablesRule,
    NoUnusedVariablesRule,
    ObjectValueNode,
    OperationDefinitionNode,
    OverlappingFieldsCanBeMergedRule,
    SelectionSetNode,
    ValidationContext,
    ValueNode,
    VariablesInAllowedPositionRule,
    validate,
)
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from prism.execution.context import Context
from prism.execution.limits import charge_context_refusal, context_spent
from prism.execution.planned import PlannedRootsExecution
from prism.execution.visitors import resolved_per_class

# A chain of fragments spreading one another: longer than any real client writes, short
# enough that the walks after validation (cost, execution) stay far from Python's recursion
# limit.
MAX_FRAGMENT_NESTING = 50
# Pairs of fields answering under one name at one place (OverlappingFieldsCanBeMerged
# compares each such pair, and their selections: ~10 µs a pair). Real documents have a few
# (two fragments both selecting `id`); repeating a field hundreds of times is not asking for
# more data.
MAX_FIELD_PAIRS = 1_000
# Errors reported for one document (graphql-core's default is 100; some of its messages
# print the whole value they are about, so each error may cost as much as the document).
MAX_ERRORS = 20
# A message longer than this is cut: no client needs its own 10 KB literal printed back.
MAX_MESSAGE_LENGTH = 500
# Arguments of one field or directive, and fields of one object value, as written: far
# above what Prism's schema has (tests/test_validation_cost.py checks), and far below what
# makes graphql-core's ValuesOfCorrectType rule (which prints the whole value per wrong
# field) or its argument rules slow.
MAX_ARGUMENTS = 32
MAX_OBJECT_FIELDS = 64
# The work OverlappingFieldsCanBeMerged may do on one document, in graphql-core's own units
# (a comparison of two fragments, of fields with a fragment, of two fields: 1 or 2 each).
# graphql-core allows 500,000 (seconds of work); Prism's own documents take a few hundred.
MAX_FIELD_COMPARISONS = 20_000


@dataclass(frozen=True)
class Limits:
    max_depth: int
    max_aliases: int
    max_selections: int


@dataclass
class _Local:
    """One definition (operation or fragment) as written, its spreads not followed."""

    selections: int = 0
    aliases: int = 0
    depth: int = 0
    # (fragment, fields above the spread; None under an introspection field, whose depth
    # does not count, as in Strawberry's depth limiter)
    spreads: list[tuple[str, int | None]] = field(default_factory=list)


@dataclass(frozen=True)
class _Expanded:
    """A fragment with its spreads followed."""

    selections: int
    aliases: int
    depth: int
    nesting: int  # longest chain of spreads it starts


_ZERO = _Expanded(0, 0, 0, 0)


@dataclass
class Analysis:
    errors: list[GraphQLError]
    # Selections, spreads and fragments looked at: the work done, for tests to bound.
    work: int = 0
    selections: int = 0


def _too_complex(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "QUERY_TOO_COMPLEX"})


class _Walker:
    def __init__(self) -> None:
        self.work = 0
        self.fragments: Mapping[str, _Local] = {}
        # Fragments whose spreads close a cycle, and spreads of fragments nothing defines:
        # errors graphql-core would report too, found here on the way, before its rules
        # (whose fragment-pair comparisons are quadratic in the number of spreads) run.
        self.cycles: dict[str, None] = {}
        self.unknown: dict[str, None] = {}

    def local(self, selection_set: SelectionSetNode) -> _Local:
        found = _Local()
        found.depth = self._selections(selection_set, 0, False, found)
        return found

    def _selections(
        self, selection_set: SelectionSetNode, above: int, ignored: bool, found: _Local
    ) -> int:
        """The depth of ``selection_set`` (Strawberry's rule: fields that select something,
        introspection fields not counted), filling ``found`` on the way."""
        depth = 0
        for node in selection_set.selections:
            self.work += 1
            found.selections += 1
            if isinstance(node, FieldNode):
                if node.alias is not None:
                    found.aliases += 1
                if node.selection_set is None:
                    continue
                skip = ignored or node.name.value.startswith("__")
                inner = self._selections(node.selection_set, above + 1, skip, found)
                if not skip:
                    depth = max(depth, 1 + inner)
            elif isinstance(node, InlineFragmentNode):
                depth = max(depth, self._selections(node.selection_set, above, ignored, found))
            elif isinstance(node, FragmentSpreadNode):
                found.spreads.append((node.name.value, None if ignored else above))
        return depth

    def expand(self, fragments: Mapping[str, _Local]) -> dict[str, _Expanded]:
        """Every fragment's measures, each fragment computed once, spreads after the
        fragments they spread (iteratively: a long chain cannot exhaust the stack). A spread
        that closes a cycle counts nothing here; NoFragmentCyclesRule reports it."""
        self.fragments = fragments
        done: dict[str, _Expanded] = {}
        for start in fragments:
            if start in done:
                continue
            in_progress = {start}
            stack = [(start, iter(fragments[start].spreads))]
            while stack:
                name, pending = stack[-1]
                for spread, _ in pending:
                    self.work += 1
                    if spread in in_progress:
                        self.cycles[spread] = None
                    elif spread in fragments and spread not in done:
                        in_progress.add(spread)
                        stack.append((spread, iter(fragments[spread].spreads)))
                        break
                else:
                    stack.pop()
                    in_progress.discard(name)
                    done[name] = self.combine(fragments[name], done)
        return done

    def combine(self, local: _Local, done: Mapping[str, _Expanded]) -> _Expanded:
        selections, aliases, depth, nesting = local.selections, local.aliases, local.depth, 0
        for spread, above in local.spreads:
            self.work += 1
            inner = done.get(spread)
            if inner is None:
                if spread not in self.fragments:
                    self.unknown[spread] = None
                inner = _ZERO
            selections += inner.selections
            aliases += inner.aliases
            nesting = max(nesting, 1 + inner.nesting)
            if above is not None:
                depth = max(depth, above + inner.depth)
        return _Expanded(selections, aliases, depth, nesting)

    def field_pairs(
        self,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
    ) -> int:
        """Pairs of fields answering under one name at one place, fragments expanded (only
        called once the expanded size is known to be within the limit)."""
        counts: dict[tuple[int, str], int] = {}
        places: dict[tuple[int, str], int] = {}
        pairs = 0

        def walk(selection_set: SelectionSetNode, place: int, chain: frozenset[str]) -> None:
            nonlocal pairs
            for node in selection_set.selections:
                self.work += 1
                if isinstance(node, FieldNode):
                    key = (place, (node.alias or node.name).value)
                    seen = counts.get(key, 0)
                    pairs += seen
                    counts[key] = seen + 1
                    if node.selection_set is not None:
                        inner = places.setdefault(key, len(places) + 1)
                        walk(node.selection_set, inner, chain)
                elif isinstance(node, InlineFragmentNode):
                    walk(node.selection_set, place, chain)
                elif isinstance(node, FragmentSpreadNode):
                    name = node.name.value
                    fragment = fragments.get(name)
                    if fragment is not None and name not in chain:
                        walk(fragment.selection_set, place, chain | {name})

        walk(operation.selection_set, 0, frozenset())
        return pairs


def _arguments_and_values(document: DocumentNode, walker: _Walker) -> list[GraphQLError]:
    """Fields or directives written with too many arguments, object values with too many
    fields: each node looked at once, iteratively."""
    errors: list[GraphQLError] = []
    stack: list[Any] = list(document.definitions)
    while stack and len(errors) < MAX_ERRORS:
        node = stack.pop()
        walker.work += 1
        if isinstance(node, FieldNode | DirectiveNode):
            arguments: tuple[ArgumentNode, ...] = tuple(node.arguments or ())
            if len(arguments) > MAX_ARGUMENTS:
                errors.append(
                    _too_complex(
                        f"'{node.name.value}' is given {len(arguments)} arguments; the limit "
                        f"is {MAX_ARGUMENTS}."
                    )
                )
                continue
            stack.extend(a.value for a in arguments)
        elif isinstance(node, ObjectValueNode):
            if len(node.fields) > MAX_OBJECT_FIELDS:
                errors.append(
                    _too_complex(
                        f"An object value has {len(node.fields)} fields; the limit is "
                        f"{MAX_OBJECT_FIELDS}."
                    )
                )
                continue
            stack.extend(f.value for f in node.fields)
            continue
        elif isinstance(node, ListValueNode):
            stack.extend(node.values)
            continue
        elif isinstance(node, ValueNode):
            continue
        if isinstance(node, OperationDefinitionNode):
            for definition in node.variable_definitions or ():
                if definition.default_value is not None:
                    stack.append(definition.default_value)
                stack.extend(definition.directives or ())
        stack.extend(getattr(node, "directives", None) or ())
        selection_set = getattr(node, "selection_set", None)
        if selection_set is not None:
            stack.extend(selection_set.selections)
    return errors


def analyse(document: DocumentNode, limits: Limits) -> Analysis:
    """The limits a document is over, in time linear in its size (plus at most
    ``limits.max_selections`` for the expanded walk, run only when within that limit)."""
    walker = _Walker()
    fragment_nodes = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = walker.expand({n: walker.local(d.selection_set) for n, d in fragment_nodes.items()})
    errors: list[GraphQLError] = [
        GraphQLError(f"Cannot spread fragment '{name}' within itself.")
        for name in list(walker.cycles)[:MAX_ERRORS]
    ]
    selections = aliases = nesting = 0
    for operation in operations:
        measured = walker.combine(walker.local(operation.selection_set), fragments)
        selections += measured.selections
        aliases += measured.aliases
        nesting = max(nesting, measured.nesting)
        if measured.depth > limits.max_depth:
            name = operation.name.value if operation.name else "anonymous"
            errors.append(
                _too_complex(f"'{name}' exceeds maximum operation depth of {limits.max_depth}")
            )
    errors.extend(
        GraphQLError(f"Unknown fragment '{name}'.")
        for name in list(walker.unknown)[: MAX_ERRORS - len(errors)]
    )
    errors.extend(_arguments_and_values(document, walker)[: MAX_ERRORS - len(errors)])
    if errors:  # invalid: the standard rules would say so, at a cost
        return Analysis(errors=errors, work=walker.work, selections=selections)
    if aliases > limits.max_aliases:
        errors.append(_too_complex(f"{aliases} aliases found. Allowed: {limits.max_aliases}"))
    if selections > limits.max_selections:
        errors.append(
            _too_complex(
                f"The document selects {selections} fields once its fragments are expanded; "
                f"the limit is {limits.max_selections}."
            )
        )
    elif nesting > MAX_FRAGMENT_NESTING:
        errors.append(
            _too_complex(
                f"Fragments spread one another {nesting} deep; the limit is {MAX_FRAGMENT_NESTING}."
            )
        )
    else:
        pairs = sum(walker.field_pairs(o, fragment_nodes) for o in operations)
        if pairs > MAX_FIELD_PAIRS:
            errors.append(
                _too_complex(
                    "The same field is selected too many times at one place: ask for it once."
                )
            )
    return Analysis(errors=errors, work=walker.work, selections=selections)


# "Did you mean 'x'?", "Did you mean 'x' or 'y'?", "Did you mean the enum value 'X'?": the
# text graphql-core appends; kept out of production answers wherever it comes from.
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?", re.DOTALL)


def without_suggestions(message: str) -> str:
    return _SUGGESTION.sub("", message)


class NoSuggestionsExecutionContext(PlannedRootsExecution):
    """Execution (variable coercion included) that names no field, argument, input field,
    enum value or type the client did not send."""

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        kwargs["hide_suggestions"] = True
        return super().build(*args, **kwargs)


_VALIDATED: OrderedDict[tuple[object, ...], list[GraphQLError]] = OrderedDict()


def _validated(key: tuple[object, ...]) -> list[GraphQLError] | None:
    found = _VALIDATED.get(key)
    if found is not None:
        _VALIDATED.move_to_end(key)
    return found


def _remember(key: tuple[object, ...], errors: list[GraphQLError], size: int) -> None:
    _VALIDATED[key] = errors
    while len(_VALIDATED) > size:
        _VALIDATED.popitem(last=False)


# Rules that find nothing in a document without variables: each asks for the operation's
# variable usages, a second walk of the whole document with its types.
_OF_VARIABLES = frozenset(
    {NoUndefinedVariablesRule, NoUnusedVariablesRule, VariablesInAllowedPositionRule}
)


def _without_variables(document: DocumentNode) -> bool:
    """Whether the document certainly defines and uses no variable: its text has no ``$``
    (a ``$`` in a string value only means it is not known)."""
    loc = document.loc
    return loc is not None and "$" not in loc.source.body


def validate_document(
    schema: GraphQLSchema,
    document: DocumentNode,
    rules: Iterable[type[ASTValidationRule]],
    limits: Limits,
    *,
    hide_suggestions: bool,
) -> list[GraphQLError]:
    """The shape limits first (linear); the standard rules only for a document within them."""
    refused = analyse(document, limits).errors
    if refused:
        return refused
    budgeted = tuple(
        BudgetedOverlappingFields if rule is OverlappingFieldsCanBeMergedRule else rule
        for rule in rules
        if not (rule in _OF_VARIABLES and _without_variables(document))
    )
    errors = validate(
        schema,
        document,
        tuple(
            resolved_per_class(rule)
            for rule in (*budgeted, MaybeNullValidationRule, OneOfInputValidationRule)
        ),
        max_errors=MAX_ERRORS,
        hide_suggestions=hide_suggestions,
    )
    for index, error in enumerate(errors):
        if isinstance(error, ValidationAbortedError) and error.message == "Validation aborted.":
            # Over the comparison budget (or too deep to walk): too complex, not invalid.
            errors[index] = _too_complex(
                "Comparing the document's fields and fragments takes too much work: "
                "spread fewer fragments at one place."
            )
            continue
        if hide_suggestions:
            error.message = without_suggestions(error.message)
        if len(error.message) > MAX_MESSAGE_LENGTH:
            error.message = error.message[: MAX_MESSAGE_LENGTH - 1] + "…"
    return errors


class BudgetedOverlappingFields(OverlappingFieldsCanBeMergedRule):
    """graphql-core's rule, with the work it may do on one document lowered to
    ``MAX_FIELD_COMPARISONS`` (past it, the rule aborts the validation)."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.rule_context.remaining_complexity_budget = MAX_FIELD_COMPARISONS


def _refused_before_running(result: object) -> bool:
    """No data and only errors without a path: the request did not parse, was invalid, its
    variables did not coerce, or it was over a limit. (Resolvers' errors have a path.)"""
    errors = getattr(result, "errors", None)
    if not errors or getattr(result, "data", None) is not None:
        return False
    return all(
        error.path is None and (error.extensions or {}).get("code") != "RATE_LIMITED"
        for error in errors
    )


@dataclass(frozen=True)
class Validation:
    """How documents are validated (Prism's rules after the standard ones, the shape limits,
    suggestions hidden or not), and the process's cache of each distinct document's errors:
    the one home of both, for the schema extension and the lean path (``prism.web.lean``)."""

    rules: tuple[type[ASTValidationRule], ...]
    limits: Limits
    hide_suggestions: bool
    cache_size: int

    def key(
        self,
        schema: GraphQLSchema,
        standard: tuple[type[ASTValidationRule], ...],
        query: str | None,
        document: DocumentNode,
    ) -> tuple[object, ...]:
        """Where a document's errors are cached: by its text when known."""
        rules = (*standard, *self.rules)
        return (
            schema,
            query if query is not None else document,
            rules,
            self.limits,
            self.hide_suggestions,
        )

    @staticmethod
    def known(key: tuple[object, ...]) -> list[GraphQLError] | None:
        """The errors of a document validated before (an empty list: it is valid); None
        when it has not been."""
        return _validated(key)

    def validate(
        self, schema: GraphQLSchema, document: DocumentNode, key: tuple[object, ...]
    ) -> list[GraphQLError]:
        """Validate (the shape limits first) and remember the errors under ``key``."""
        rules = key[2]
        assert isinstance(rules, tuple)
        errors = validate_document(
            schema, document, rules, self.limits, hide_suggestions=self.hide_suggestions
        )
        _remember(key, errors, self.cache_size)
        return errors


class CheckedValidation(SchemaExtension):
    """Validation with the shape limits first, cached per document; refused requests
    charged to their caller's rate-limit bucket; no suggestions in production."""

    def __init__(self, validation: Validation) -> None:
        super().__init__()
        self.validation = validation

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        ctx = self.execution_context
        result = ctx.result
        if self.validation.hide_suggestions:
            for error in getattr(result, "errors", None) or []:
                error.message = without_suggestions(error.message)
        context = ctx.context
        if not isinstance(context, Context) or not _refused_before_running(result):
            return
        # Refused after validation (variables, cost) or before it (parse, input bounds).
        limited = await charge_context_refusal(context)
        if limited is not None and result is not None:
            result.errors = [limited]

    async def on_validate(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        document = ctx.graphql_document
        if document is None or ctx.pre_execution_errors is not None:
            yield
            return
        schema = ctx.schema._schema
        key = self.validation.key(schema, tuple(ctx.validation_rules), ctx.query, document)
        errors = self.validation.known(key)
        context = ctx.context if isinstance(ctx.context, Context) else None
        # A caller whose allowance is spent gets no validation: not even a cached answer.
        if context is not None and (errors is None or errors):
            limited = await context_spent(context)
            if limited is not None:
                ctx.pre_execution_errors = [limited]
                yield
                return
        if errors is None:
            errors = self.validation.validate(schema, document, key)
        ctx.pre_execution_errors = list(errors)
        if errors and context is not None:
            # Charged here, before the answer exists: every transport passes this point
            # (a WebSocket's answer to an invalid document ends the operation at once).
            limited = await charge_context_refusal(context)
            if limited is not None:
                ctx.pre_execution_errors = [limited]
        yield
