"""Running a planned operation: the schema extension that answers a read-only query, registered
or sent as text, with the one statement ``prism.execution.planner`` made for it, and falls
back to the interpreted path (the reference) when there is none.

It runs as the request's one statement (``RequestTransaction.fetch_row``: alone on the
statement pool for the lean path, else in the request's transaction), so row-level security
and the organization setting apply as to any statement. Over HTTP the
answer is written as the bytes PostgreSQL returned; it is parsed once, to check the roots that
must exist and count its objects (the rate limit's refund) (decision 0023).

Root fields the planner does not plan (search, answered by its backend; fields with logic of
their own) are resolved by execution beside the statement's answer to the others, in the same
transaction (``PlannedRootsExecution``); ``extensions.execution`` names them.

A plan (or the reason there is none) is cached per (document hash, operation name, visibility
class) in ``prism.execution.plans.PlanCache``, independent of variable values: each request
only binds its values. A document the statement
does not find goes to the interpreted path, which answers NOT_FOUND with the field's path.
The answer records which path ran, and why not the compiled one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any, ClassVar, cast

import orjson
import structlog
from graphql import DocumentNode, GraphQLObjectType, GraphQLSchema
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution.values import get_variable_values
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from prism.execution import DOCUMENTS_KEPT
from prism.execution.context import Context
from prism.execution.cost import actual, operation_of
from prism.execution.fragments import NotPlanned
from prism.execution.plans import PlanCache

log = structlog.get_logger("prism.planned")


async def answer_planned(
    context: Context,
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    *,
    partial: bool = False,
) -> tuple[dict[str, str], Any]:
    """The planned answer's ``data`` and which path ran (``extensions.execution``); data None
    when the interpreted path answers instead (the report says why). Raises what running the
    statement raised (a value it refused, the database gone): the request's transaction is
    then the caller's to roll back.

    An operation some of whose root fields are not planned: with ``partial``, the statement
    answers the others and their values are left in ``context.planned_roots`` for execution
    to use (data None, path "mixed"); without, the interpreted path answers it all."""
    if not context.services.settings.compiled_operations:
        return {"path": "interpreted", "reason": "compiled operations are off"}, None
    operation = operation_of(document, operation_name)
    principal = context.principal
    assert principal is not None
    assert context.operation is not None
    if operation is None:
        return {"path": "interpreted", "reason": "no single operation"}, None
    # Variables as execution coerces them: a value of the wrong type (an unknown enum
    # value, a number for a string) is the interpreted path's error to report.
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables or {})
    if isinstance(coerced, list):
        return {"path": "interpreted", "reason": "variables"}, None
    source = context.operation.query
    assert source is not None
    entry = CompiledOperations.plans.get(
        source,
        document,
        operation_name,
        principal,
        variables=variables,
        digest=context.operation.sha256,
    )
    if isinstance(entry, str):
        return {"path": "interpreted", "reason": entry}, None
    try:
        compiled = entry.bind(variables, principal)
    except NotPlanned as reason:
        return {"path": "interpreted", "reason": str(reason)}, None
    if compiled.interpreted and not partial:
        return {"path": "interpreted", "reason": entry.reason or "not planned"}, None
    row = await context.transaction.fetch_row(compiled.sql, compiled.values)
    assert row is not None
    text: str = row[0]
    parsed: dict[str, Any] = orjson.loads(text)
    if any(parsed.get(key) is None for key in compiled.must_exist):
        # The interpreted path answers NOT_FOUND with the field's path.
        return {"path": "interpreted", "reason": "not found"}, None
    if compiled.interpreted:
        # The rest is resolved by execution, in the same transaction (one snapshot); the
        # objects are counted over the whole answer, as on the interpreted path.
        context.planned_roots = parsed
        report = {"path": "mixed", "interpreted": ", ".join(compiled.interpreted)}
        return {**report, "reason": entry.reason or "not planned"}, None
    if context.cost is not None and context.cost.actual is None:
        # Counted here, once (PostgreSQL counting them costs it more than this walk).
        context.cost.actual = actual(parsed)
    # Over HTTP the answer's bytes are PostgreSQL's, written as they are (orjson embeds
    # a Fragment without serializing it again); a WebSocket's messages are encoded by
    # Strawberry from the parsed answer.
    data: Any = orjson.Fragment(text) if context.response is not None else parsed
    return {"path": "compiled"}, data


async def roll_back(context: Context) -> None:
    """End the request's transaction after its planned statement failed (the interpreted
    path, or the next attempt, opens a fresh one)."""
    try:
        await context.transaction.finish(commit=False)
    except Exception as exc:  # noqa: BLE001 - the next connection is a new one
        log.warning("rollback after a failed planned statement failed", error=type(exc).__name__)


class CompiledOperations(SchemaExtension):
    """Answer a query with its compiled statement when it has one (and the interpreted path
    otherwise); report which ran in ``extensions.execution``."""

    # Shared by every request of the process (extensions are made per request).
    plans: ClassVar[PlanCache] = PlanCache(size=DOCUMENTS_KEPT)

    def __init__(self) -> None:
        self.report: dict[str, str] | None = None

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        context = ctx.context
        if (
            isinstance(context, Context)
            and ctx.result is None
            and context.operation is not None
            and context.operation.query is not None
            and context.principal is not None
            and ctx.graphql_document is not None
        ):
            try:
                self.report, data = await answer_planned(
                    context,
                    ctx.schema._schema,
                    ctx.graphql_document,
                    ctx.operation_name,
                    ctx.variables,
                    partial=True,
                )
            except Exception as exc:  # noqa: BLE001 - the reference path reports it
                # A value the statement refused, or the database gone: the interpreted
                # path, in a fresh transaction, gives the coded error with its path (an
                # error raised here would reach the client without its code).
                # One line, no stack: under an outage every request comes here.
                log.warning(
                    "planned statement failed; the interpreted path answers",
                    error=type(exc).__name__,
                    detail=str(exc)[:300],
                )
                await roll_back(context)
                self.report = {"path": "interpreted", "reason": "the statement failed"}
            else:
                if data is not None:
                    ctx.result = GraphQLExecutionResult(data=data)
        yield

    def get_results(self) -> dict[str, Any]:
        return execution_results(self.report)


class PlannedRootsExecution(StrawberryGraphQLCoreExecutionContext):
    """Execution that takes the root fields the planned statement answered from
    ``Context.planned_roots`` and resolves only the others, the answer's keys in the
    operation's order."""

    def execute_root_grouped_field_set(
        self,
        root_type: GraphQLObjectType,
        root_value: Any,
        grouped_field_set: dict[str, Any],
        serially: bool,
        position_context: Any,
    ) -> Any:
        planned = getattr(self.context_value, "planned_roots", None)
        if serially or not planned:
            return super().execute_root_grouped_field_set(
                root_type, root_value, grouped_field_set, serially, position_context
            )
        rest = {key: fields for key, fields in grouped_field_set.items() if key not in planned}
        resolved = super().execute_root_grouped_field_set(
            root_type, root_value, rest, serially, position_context
        )

        def merged(found: dict[str, Any]) -> dict[str, Any]:
            return {
                key: planned[key] if key in planned else found[key]
                for key in grouped_field_set
                if key in planned or key in found
            }

        if self.is_awaitable(resolved):
            pending = cast(Awaitable[dict[str, Any]], resolved)

            async def later() -> dict[str, Any]:
                return merged(await pending)

            return later()
        return merged(cast(dict[str, Any], resolved))


def execution_results(report: dict[str, str] | None) -> dict[str, Any]:
    """The answer's ``extensions.execution``: which path ran, and why not the compiled one."""
    return {"execution": report} if report else {}
