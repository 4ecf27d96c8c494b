"""Running a planned operation: the schema extension that answers a read-only query, registered
or sent as text, with the one statement ``prism.execution.planner`` made for it, and falls
back to the interpreted path (the reference) when there is none.

It runs in the request's transaction (on the driver's connection, no ORM in between), so
row-level security and the organization setting apply as to any statement. Over HTTP the
answer is written as the bytes PostgreSQL returned; it is parsed once, to check the roots that
must exist and count its objects (the rate limit's refund) (decision 0023).

A plan (or the reason there is none) is cached per (document hash, operation name, visibility
class) in ``prism.execution.plans.PlanCache``, independent of variable values: each request
only binds its values. A document the statement
does not find goes to the interpreted path, which answers NOT_FOUND with the field's path.
The answer records which path ran, and why not the compiled one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson
import structlog
from graphql import DocumentNode
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution.values import get_variable_values
from strawberry.extensions import SchemaExtension

from prism.execution.context import Context
from prism.execution.cost import actual, operation_of
from prism.execution.fragments import NotPlanned
from prism.execution.plans import PlanCache

log = structlog.get_logger("prism.planned")


class CompiledOperations(SchemaExtension):
    """Answer a query with its compiled statement when it has one (and the interpreted path
    otherwise); report which ran in ``extensions.execution``."""

    # Shared by every request of the process (extensions are made per request).
    plans: ClassVar[PlanCache] = PlanCache(size=1024)

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
            if not context.services.settings.compiled_operations:
                self.report = {"path": "interpreted", "reason": "compiled operations are off"}
            else:
                try:
                    self.report = await self._run(context, ctx.graphql_document)
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
                    await self._reset(context)
                    self.report = {"path": "interpreted", "reason": "the statement failed"}
        yield

    @staticmethod
    async def _reset(context: Context) -> None:
        try:
            await context.transaction.finish(commit=False)
        except Exception as exc:  # noqa: BLE001 - the next connection is a new one
            log.warning(
                "rollback after a failed planned statement failed", error=type(exc).__name__
            )

    async def _run(self, context: Context, document: DocumentNode) -> dict[str, str]:
        ctx = self.execution_context
        operation = operation_of(document, ctx.operation_name)
        principal = context.principal
        assert principal is not None
        assert context.operation is not None
        if operation is None:
            return {"path": "interpreted", "reason": "no single operation"}
        # Variables as execution coerces them: a value of the wrong type (an unknown enum
        # value, a number for a string) is the interpreted path's error to report.
        coerced = get_variable_values(
            ctx.schema._schema, operation.variable_definitions or (), ctx.variables or {}
        )
        if isinstance(coerced, list):
            return {"path": "interpreted", "reason": "variables"}
        source = context.operation.query
        assert source is not None
        entry = self.plans.get(
            source,
            document,
            ctx.operation_name,
            principal,
            variables=ctx.variables,
            digest=context.operation.sha256,
        )
        if isinstance(entry, str):
            return {"path": "interpreted", "reason": entry}
        try:
            compiled = entry.bind(ctx.variables, principal)
        except NotPlanned as reason:
            return {"path": "interpreted", "reason": str(reason)}
        row = await context.transaction.fetch_row(compiled.sql, compiled.values)
        assert row is not None
        text: str = row[0]
        parsed: dict[str, Any] = orjson.loads(text)
        if any(parsed.get(key) is None for key in compiled.must_exist):
            # The interpreted path answers NOT_FOUND with the field's path.
            return {"path": "interpreted", "reason": "not found"}
        if context.cost is not None and context.cost.actual is None:
            # Counted here, once (PostgreSQL counting them costs it more than this walk).
            context.cost.actual = actual(parsed)
        # Over HTTP the answer's bytes are PostgreSQL's, written as they are (orjson embeds
        # a Fragment without serializing it again); a WebSocket's messages are encoded by
        # Strawberry from the parsed answer.
        data: Any = orjson.Fragment(text) if context.response is not None else parsed
        ctx.result = GraphQLExecutionResult(data=data)
        return {"path": "compiled"}

    def get_results(self) -> dict[str, Any]:
        return {"execution": self.report} if self.report else {}
