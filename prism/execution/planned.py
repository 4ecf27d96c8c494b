"""Running a planned operation: the schema extension that answers a registered read-only query
with the one statement ``prism.execution.planner`` made for it, and falls back to the
interpreted path (the reference) when there is none.

It runs in the request's transaction (on the driver's connection, no ORM in between), so
row-level security and the organization setting apply as to any statement. The statement also
says whether the roots that must exist do and how many objects the answer holds (the rate
limit's refund), so over HTTP the answer is written as the bytes PostgreSQL returned, neither
parsed nor walked (decision 0023). A plan (or the reason there is none) is cached per (operation,
visibility class, variables); each request only binds its values. A document the statement
does not find goes to the interpreted path, which answers NOT_FOUND with the field's path.
The answer records which path ran, and why not the compiled one."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson
from graphql import DocumentNode
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension

from prism.execution.context import Context
from prism.execution.cost import operation_of
from prism.execution.fragments import NotPlanned
from prism.execution.limits import visibility_key
from prism.execution.planner import Compiled, plan
from prism.models.answers import enveloped


class CompiledOperations(SchemaExtension):
    """Answer a registered query with its compiled statement when it has one (and the
    interpreted path otherwise); report which ran in ``extensions.execution``."""

    # Shared by every request of the process (extensions are made per request).
    _plans: ClassVar[OrderedDict[tuple[str, ...], Compiled | str]] = OrderedDict()
    PLAN_CACHE_SIZE = 1024

    def __init__(self) -> None:
        self.report: dict[str, str] | None = None

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        context = ctx.context
        if (
            isinstance(context, Context)
            and ctx.result is None
            and context.operation is not None
            and context.operation.registered
            and context.principal is not None
            and ctx.graphql_document is not None
        ):
            if not context.services.settings.compiled_operations:
                self.report = {"path": "interpreted", "reason": "compiled operations are off"}
            else:
                self.report = await self._run(context, ctx.graphql_document)
        yield

    async def _run(self, context: Context, document: DocumentNode) -> dict[str, str]:
        ctx = self.execution_context
        operation = operation_of(document, ctx.operation_name)
        principal = context.principal
        assert principal is not None
        assert context.operation is not None
        if operation is None:
            return {"path": "interpreted", "reason": "no single operation"}
        key = (
            context.operation.sha256 or "",
            visibility_key(principal),
            orjson.dumps(ctx.variables or {}, option=orjson.OPT_SORT_KEYS).decode(),
        )
        compiled = self._plans.get(key)
        if compiled is None:
            try:
                compiled = plan(document, operation, principal, ctx.variables)
            except NotPlanned as reason:
                compiled = str(reason)
            self._plans[key] = compiled
            while len(self._plans) > self.PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        if isinstance(compiled, str):
            return {"path": "interpreted", "reason": compiled}
        statement = enveloped(compiled.sql, compiled.must_exist)
        row = await context.transaction.fetch_row(statement, compiled.values)
        assert row is not None
        text, found, objects = row
        if not found:
            # The interpreted path answers NOT_FOUND with the field's path.
            return {"path": "interpreted", "reason": "not found"}
        if context.cost is not None and context.cost.actual is None:
            context.cost.actual = objects
        # Over HTTP the answer's bytes are PostgreSQL's, written as they are (orjson embeds
        # a Fragment without parsing it); a WebSocket's messages are encoded by Strawberry.
        data: Any = orjson.Fragment(text) if context.response is not None else orjson.loads(text)
        ctx.result = GraphQLExecutionResult(data=data)
        return {"path": "compiled"}

    def get_results(self) -> dict[str, Any]:
        return {"execution": self.report} if self.report else {}
