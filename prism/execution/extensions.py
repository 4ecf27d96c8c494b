"""Schema extensions: the request transaction's end, and the one place errors are mapped."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from functools import lru_cache
from typing import Any

import structlog
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    ValidationRule,
    ValueNode,
    VariableDefinitionNode,
    parse,
)
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.types.graphql import OperationType

from prism import tracing
from prism.db.faults import RETRY_AFTER_SECONDS, collided, unavailable
from prism.errors import Conflict, OutcomeUnknown, PrismError, ServiceUnavailable
from prism.execution import DOCUMENTS_KEPT
from prism.execution.context import Context
from prism.observability import (
    GRAPHQL_ERRORS,
    GRAPHQL_LATENCY,
    GRAPHQL_OPERATIONS,
    operation_label,
)

log = structlog.get_logger("prism.graphql")


class TransactionEnd(SchemaExtension):
    """End the request's transaction: commit when every root field answered, roll back when
    any answered null with an error (bad input changes nothing). The client's view decides:
    a mutation whose payload arrived (a nested read failed inside it) has happened; one that
    came back null has not."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context) and (
            self.execution_context.operation_type is OperationType.MUTATION
        ):
            context.transaction.for_writes()
        yield

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if not isinstance(context, Context):
            yield
            return
        try:
            yield
        except BaseException:
            # Cancelled (the request's deadline) or failed outside execution: roll back, and
            # let what happened leave as it is.
            try:
                await context.finish(commit=False, final=True)
            except Exception as exc:  # noqa: BLE001 - the original error is what matters
                log.warning("rollback failed", request_id=context.meta.request_id, error=repr(exc))
            raise
        commit = _every_root_field_answered(self.execution_context.result)
        try:
            await context.finish(commit=commit, final=True)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a coded answer
            self._finish_failed(context, exc, committing=commit)

    def _finish_failed(self, context: Context, exc: Exception, *, committing: bool) -> None:
        """The transaction could not end as planned: the answer becomes one coded error.

        A mutation whose COMMIT lost its connection may have happened (OUTCOME_UNKNOWN: read
        before retrying); a read's, or a rollback's, is SERVICE_UNAVAILABLE; a COMMIT the
        server refused is CONFLICT (nothing changed); anything else is INTERNAL, logged."""
        request_id = context.meta.request_id
        error: PrismError
        if isinstance(exc, PrismError):
            error = exc
        elif unavailable(exc):
            if committing and context.transaction.writes:
                error = OutcomeUnknown(
                    "The connection to the database was lost while the change was being "
                    "committed: it may or may not have been saved. Check before retrying.",
                    retryAfter=RETRY_AFTER_SECONDS,
                )
            else:
                error = _unavailable_error()
            log.warning(
                "transaction end failed",
                code=error.code,
                request_id=request_id,
                error=type(exc).__name__,
            )
        elif collided(exc) or isinstance(exc, IntegrityError):
            error = Conflict("The change conflicts with another one made meanwhile; retry.")
        else:
            log.error("transaction end failed", request_id=request_id, exc_info=exc)
            error = PrismError("Unexpected error.", requestId=request_id)
        if not committing and not isinstance(exc, PrismError) and error.code != "INTERNAL":
            # A rollback that could not be sent: nothing was committed, and the answer
            # already says what went wrong.
            return
        GRAPHQL_ERRORS.labels(error.code).inc()
        result = self.execution_context.result
        if result is None:
            raise error from exc
        result.data = None
        result.errors = [GraphQLError(error.message, extensions=error.extensions)]


def _every_root_field_answered(result: object) -> bool:
    errors = getattr(result, "errors", None) or []
    if not errors:
        return True
    data = getattr(result, "data", None)
    if data is None:
        return False
    return all(error.path and data.get(error.path[0]) is not None for error in errors)


def _is_client_error(error: GraphQLError) -> bool:
    original = error.original_error
    # No original error (or a GraphQL one): the document did not parse or validate, or the
    # variables did not coerce. A PrismError is a domain answer. A scalar's ValueError is a
    # value the client sent only where graphql-core coerces values: a literal in the document
    # (located at its value node) or a variable (at its definition). A ValueError or
    # TypeError anywhere else (a dependency's client library, our own code) is a bug.
    if original is None or isinstance(original, PrismError | GraphQLError):
        return True
    return (
        error.path is None
        and isinstance(original, ValueError | TypeError)
        and any(isinstance(node, ValueNode | VariableDefinitionNode) for node in error.nodes or ())
    )


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
        errors = self._unavailable(errors)
        processed = super()._process_errors([_database_input_error(e) for e in errors])
        for error in processed:
            if error.extensions is None or "code" not in error.extensions:
                code = (
                    "QUERY_TOO_COMPLEX"
                    if _LIMIT_MESSAGES.search(error.message)
                    else "BAD_USER_INPUT"
                )
                error.extensions = {**(error.extensions or {}), "code": code}
        return processed

    def _unavailable(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        """Errors of a database (or another dependency) that cannot be reached become
        SERVICE_UNAVAILABLE, logged as one line per request without a stack: an outage is
        not a bug, and a thousand tracebacks of it would hide the ones that are."""
        mapped: list[GraphQLError] = []
        causes: set[str] = set()
        for error in errors:
            original = error.original_error
            if (
                original is not None
                and not isinstance(original, PrismError | GraphQLError)
                and unavailable(original)
            ):
                causes.add(type(original).__name__)
                unavailable_error = _unavailable_error()
                error = GraphQLError(
                    unavailable_error.message,
                    nodes=error.nodes,
                    path=error.path,
                    extensions=unavailable_error.extensions,
                )
            mapped.append(error)
        if causes:
            context = self.execution_context.context
            log.warning(
                "database unavailable",
                request_id=context.meta.request_id if isinstance(context, Context) else None,
                errors=len(errors),
                causes=sorted(causes),
            )
        return mapped


def _unavailable_error() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The database is unavailable; try again shortly.", retryAfter=RETRY_AFTER_SECONDS
    )


def _database_input_error(error: GraphQLError) -> GraphQLError:
    """Values the database refuses (too long, NUL bytes, out of range; or a row a
    concurrent change just removed) are the client's to fix or retry, not internal errors."""
    original = error.original_error
    if not isinstance(original, DBAPIError):
        return error
    if isinstance(original, DataError) or _sqlstate(original).startswith("22"):
        code, message = (
            "BAD_USER_INPUT",
            "A value is too long or holds characters that cannot be stored.",
        )
    elif isinstance(original, IntegrityError) or _sqlstate(original) in _RETRYABLE:
        code, message = "CONFLICT", "The change conflicts with another one made meanwhile; retry."
    else:
        return error
    return GraphQLError(message, nodes=error.nodes, path=error.path, extensions={"code": code})


# serialization_failure, deadlock_detected: nothing was changed, and a retry can succeed.
_RETRYABLE = frozenset({"40001", "40P01"})


def _sqlstate(error: BaseException) -> str:
    """PostgreSQL's SQLSTATE of a driver error (class 22: data exceptions), wherever in the
    chain of causes the driver put it."""
    seen: BaseException | None = error
    while seen is not None:
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return ""


# What Strawberry's depth, alias and token limiters say; they attach no code of their own.
_LIMIT_MESSAGES = re.compile(
    r"exceeds maximum operation depth|aliases found\. Allowed"
    r"|Document contains more than \d+ tokens"
)


class ResponseExtensions(SchemaExtension):
    """What resolvers tell the client beside the data (`Context.response_extensions`)."""

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        if isinstance(context, Context):
            return dict(context.response_extensions)
        return {}


# The metrics' series by (operation label, type): bounded as the labels are
# (``operation_label``: a few hundred names).
_SERIES: dict[tuple[str, str], tuple[Any, Any]] = {}


def record_operation(
    name: str | None, kind: str, seconds: float, errors: list[GraphQLError] | None
) -> None:
    """An operation's count, latency and error codes, for /metrics."""
    label = operation_label(name)
    series = _SERIES.get((label, kind))
    if series is None:
        series = _SERIES[(label, kind)] = (
            GRAPHQL_OPERATIONS.labels(label, kind),
            GRAPHQL_LATENCY.labels(label),
        )
    series[0].inc()
    series[1].observe(seconds)
    for error in errors or ():
        GRAPHQL_ERRORS.labels((error.extensions or {}).get("code", "INTERNAL")).inc()


class Metrics(SchemaExtension):
    """Operation counts, latency and error codes for /metrics."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        try:
            kind = context.operation_type.value
        except RuntimeError:  # the document did not parse
            kind = "invalid"
        errors = getattr(context.result, "errors", None)
        record_operation(context.operation_name, kind, time.perf_counter() - started, errors)


class Tracing(SchemaExtension):
    """One span per GraphQL operation, named by its type and name once they are known
    (``prism.tracing.operation_span``); in the schema only when tracing is on."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        with tracing.operation_span("operation", context.operation_name) as span:
            yield
            try:
                kind = context.operation_type.value
            except RuntimeError:  # the document did not parse
                kind = "invalid"
            tracing.name_operation(span, kind, context.operation_name)


# Mutations that check a password, a refresh token, a reset token or a second factor, or send
# a reset e-mail: one per request, so aliases cannot multiply them.
SECRET_CHECKS = frozenset(
    {
        "login",
        "refreshSession",
        "confirmMfaEnrollment",
        "disableMfa",
        "regenerateMfaBackupCodes",
        "changePassword",
        "requestPasswordReset",
        "resetPassword",
    }
)


class OneSecretCheckPerRequest(ValidationRule):
    """Aliases (`a: login(...) b: login(...)`) would let one request try many passwords or
    codes: a document may hold one of these mutations, once."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.seen = 0

    def enter_field(self, node: FieldNode, *_args: object) -> None:
        parent = self.context.get_parent_type()
        if parent is None or parent.name != "Mutation" or node.name.value not in SECRET_CHECKS:
            return
        self.seen += 1
        if self.seen == 2:
            self.report_error(
                GraphQLError(
                    "A request may check a password, a token or a code once: send one "
                    f"`{node.name.value}` per request.",
                    node,
                )
            )


@lru_cache(maxsize=DOCUMENTS_KEPT)
def parse_document(query: str, max_tokens: int | None) -> DocumentNode:
    """The document of ``query``, parsed once per process (an LRU of ``DOCUMENTS_KEPT``
    texts); raises GraphQLError when it does not parse or has more than ``max_tokens``
    tokens."""
    return parse(query, max_tokens=max_tokens)


class ParseCache(SchemaExtension):
    """Parse each distinct document once per process (``parse_document``). A document that
    does not parse is left to Strawberry, which reports the syntax error the usual way."""

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.query is not None:
            with suppress(GraphQLError):
                ctx.graphql_document = parse_document(
                    ctx.query, ctx.parse_options.get("max_tokens")
                )
        yield
