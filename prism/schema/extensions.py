"""Schema extensions: the request transaction's end, and the one place errors are mapped."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator

import structlog
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from prism.errors import PrismError
from prism.observability import GRAPHQL_ERRORS, GRAPHQL_LATENCY, GRAPHQL_OPERATIONS
from prism.resolvers.context import Context

log = structlog.get_logger("prism.graphql")


class RequestTransaction(SchemaExtension):
    """End the request's transaction: commit when the operation answered without errors,
    roll back otherwise (bad input changes nothing)."""

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        clean = False
        try:
            yield
            clean = not getattr(self.execution_context.result, "errors", None)
        finally:
            if isinstance(context, Context):
                await context.transaction.finish(commit=clean)


def _is_client_error(error: GraphQLError) -> bool:
    original = error.original_error
    # No original error (or a GraphQL one): the document did not parse or validate, or the
    # variables did not coerce. A PrismError is a domain answer. Anything else is a bug.
    return original is None or isinstance(original, PrismError | GraphQLError)


class ErrorCodes(MaskErrors):
    """Every error leaves with ``extensions.code``. Domain errors keep their message; parse,
    validation and coercion errors are BAD_USER_INPUT; anything else is logged with its stack
    and reaches the client as INTERNAL with no detail."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda e: not _is_client_error(e))

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        context = self.execution_context.context
        request_id = context.meta.request_id if isinstance(context, Context) else None
        log.error(
            "unexpected error",
            path=error.path,
            request_id=request_id,
            exc_info=error.original_error,
        )
        return GraphQLError(
            message="Unexpected error.",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": "INTERNAL", "requestId": request_id},
        )

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            if error.extensions is None or "code" not in error.extensions:
                code = (
                    "QUERY_TOO_COMPLEX"
                    if _LIMIT_MESSAGES.search(error.message)
                    else "BAD_USER_INPUT"
                )
                error.extensions = {**(error.extensions or {}), "code": code}
        return processed


# What Strawberry's depth and alias limiters say; they attach no code of their own.
_LIMIT_MESSAGES = re.compile(r"exceeds maximum operation depth|aliases found\. Allowed")


class Metrics(SchemaExtension):
    """Operation counts, latency and error codes for /metrics."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        name = context.operation_name or "anonymous"
        try:
            kind = context.operation_type.value
        except RuntimeError:  # the document did not parse
            kind = "invalid"
        GRAPHQL_OPERATIONS.labels(name, kind).inc()
        GRAPHQL_LATENCY.labels(name).observe(time.perf_counter() - started)
        result = context.result
        for error in getattr(result, "errors", None) or []:
            GRAPHQL_ERRORS.labels((error.extensions or {}).get("code", "INTERNAL")).inc()
