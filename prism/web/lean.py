"""The lean path: a planned read query over HTTP answered without Strawberry's request
pipeline (decision 0025).

A POST of JSON to /graphql with a bearer credential is read here first. What the full path
would do for it is done here by the same functions, in the same order, with none of the
machinery around them (a schema extension object and a context manager per hook per
request): authenticate (``BearerAuthentication``), the refusal door (``refusal_spent``),
the headers' checks (``PrismGraphQL.refuse_unread``), the body (``decode_json``, the request
shape), the persisted query (``Context.resolve_operation``), the parse (``parse_document``),
the registered-operations rule, input bounds, validation (``Validation``: remembered, or done
here and remembered for the full path), the cost, the response cache, the rate-limit charge,
the planned statement (``answer_planned``), the refund, the validators, the transaction's end
(with the audit of restricted reads), the metrics; the answer is made by the view's own
``process_result`` and ``create_response``, so its body and headers are the full path's.

Anything else is handed over, untouched, to the full path (Starlette's authentication, the
Strawberry view and its extensions), which stays the reference and answers every error: not
a POST of JSON, no bearer or one that does not authenticate, a streaming Accept, a body over
the limit or not a single operation, a persisted query that does not resolve, a document that
does not parse or is invalid, not a query, input over its bounds, a cost
over the limit, a refused rate-limit charge, variables that do not coerce, an operation the
planner does not plan, a statement that fails, a root that must exist and does not, a
transaction that does not end, a cache or store that fails. A handover lets no side effect
happen twice: before the charge nothing was written; after it, the transaction is rolled back
and what the charge still holds is given back first. The body read here is replayed to the
full path, and the principal found here is kept (not authenticated twice).

The planned statement is sent alone, outside a transaction block, on a connection of the
statement pool that carries the organization as a session setting (``single_statement``,
decision 0037: one round trip, no ORM session), unless the response cache read the data
version first (then it runs in that session's transaction).

The deadline, request id, access log and client address are the middleware's around both
paths (``prism.web.app``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from graphql import (
    DocumentNode,
    GraphQLSchema,
    OperationType,
    specified_rules,
)
from starlette.authentication import AuthenticationError
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.types import ExecutionResult
from strawberry.utils.operation import get_first_operation

from prism import tracing
from prism.authn.cache import PROVISIONAL, Provisional
from prism.execution import inputs
from prism.execution.context import Context
from prism.execution.cost import actual, operation_of
from prism.execution.extensions import parse_document, record_operation
from prism.execution.limits import (
    Charge,
    charge_request,
    check_cost,
    cost_results,
    file_answer,
    look_up_answer,
    refund_unused,
    refusal_spent,
    take,
)
from prism.execution.planned import answer_planned, execution_results, roll_back
from prism.execution.safelist import refusal
from prism.observability import LEAN_PATH
from prism.schema import PrismSchema
from prism.services import Services
from prism.web.auth import BearerAuthentication, caller_of
from prism.web.body import media_type
from prism.web.edge import MAX_JSON_BODY, operation_request_problem
from prism.web.graphql import PrismGraphQL

log = structlog.get_logger("prism.lean")

_STANDARD_RULES = tuple(specified_rules)
_AUTHENTICATION = BearerAuthentication()
_ANSWERED = LEAN_PATH.labels("answered")


class HandOver(Exception):
    """The request is the full path's to answer (``reason`` is counted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LeanGraphQL:
    """ASGI middleware in front of authentication and the GraphQL view: answers a planned
    read query itself, hands everything else on (``HandOver``)."""

    def __init__(self, app: ASGIApp, view: PrismGraphQL, enabled: bool = True) -> None:
        self.app = app
        self.view = view
        self.enabled = enabled
        schema = view.schema
        assert isinstance(schema, PrismSchema)
        assert schema.validation is not None
        self.schema = schema
        self.validation = schema.validation
        self.graphql_schema = schema._schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            self.enabled
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/graphql"
        ):
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        pending = Provisional()
        try:
            await self._answer(scope, receive, send, read, pending)
        except HandOver as handed:
            LEAN_PATH.labels(handed.reason).inc()
            if pending.used and not await _confirmed(scope, pending):
                # A remembered credential that a change may have ended: the full path
                # authenticates the request itself.
                scope.pop("auth", None)
                scope.pop("user", None)
            await self.app(scope, _replay(read, receive), send)
            return
        _ANSWERED.inc()

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        read: list[Message],
        pending: Provisional,
    ) -> None:
        content_type = accept = None
        authorization = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                authorization = True
            elif name == b"accept":
                accept = value.decode("latin-1")
        if not authorization:
            raise HandOver("anonymous")
        if media_type(content_type)[0] != "application/json":
            raise HandOver("not json")
        if accept is not None and self.view.streams(accept):
            raise HandOver("stream")
        services: Services = scope["app"].state.services
        request = Request(scope)
        token = PROVISIONAL.set(pending)
        try:
            await _authenticate(request)
        finally:
            PROVISIONAL.reset(token)
        if await refusal_spent(services, caller_of(scope)) is not None:
            raise HandOver("refusals spent")
        if self.view.refuse_unread(request) is not None:
            raise HandOver("refused before reading")
        data = _decoded(await _body(receive, read))
        started = time.perf_counter()
        sub_response = await self.view.get_sub_response(request)
        context = await self.view.get_context(request, sub_response)
        context.transaction.single_statement()
        try:
            resolved = await context.resolve_operation(data["query"], data["extensions"])
        except Exception:  # noqa: BLE001 - the full path answers with the error's code
            raise HandOver("persisted query") from None
        query = resolved.query
        if query is None:
            raise HandOver("no query")
        try:
            document = parse_document(query, self.schema.max_tokens)
        except Exception:  # noqa: BLE001 - the full path reports it
            raise HandOver("does not parse") from None
        name = data["operationName"]
        if name is None:
            first = get_first_operation(document)
            name = first.name.value if first is not None and first.name is not None else None
        operation = operation_of(document, name)
        if operation is None or operation.operation is not OperationType.QUERY:
            raise HandOver("not a query")
        if refusal(context, query) is not None:
            raise HandOver("registered operations only")
        variables = data["variables"]
        if inputs.input_problem(document, variables, query) is not None:
            raise HandOver("input bounds")
        key = self.validation.key(self.graphql_schema, _STANDARD_RULES, query, document)
        errors = self.validation.known(key)
        if errors is None:
            # First seen: validated here as the full path would (and remembered for it).
            errors = self.validation.validate(self.graphql_schema, document, key)
        if errors:
            raise HandOver("not valid")
        if check_cost(context, self.graphql_schema, document, operation, variables) is not None:
            raise HandOver("cost")
        data, report = await _run(context, self.graphql_schema, document, name, variables, pending)
        if tracing.ENABLED:
            tracing.operation_answered("query", name)
        record_operation(name, "query", time.perf_counter() - started, None)
        result = ExecutionResult(
            data=data,
            errors=None,
            extensions={
                **context.response_extensions,
                **cost_results(context),
                **execution_results(report),
            },
        )
        response_data = await self.view.process_result(request, result)
        response = self.view.create_response(response_data, sub_response)
        await response(scope, receive, send)


async def _run(
    context: Context,
    schema: GraphQLSchema,
    document: DocumentNode,
    name: str | None,
    variables: dict[str, Any] | None,
    pending: Provisional,
) -> tuple[Any, dict[str, str] | None]:
    """From the response cache to the transaction's end (the part with side effects, in the
    extensions' order): the answer's data and which path ran (None: the cache answered).
    A remembered credential used unconfirmed (``pending``) is confirmed once the statement
    has run, before anything is kept or sent."""
    charge: Charge | None = None
    taken = 0  # what the charge still holds of the caller's bucket
    try:
        lookup = await look_up_answer(context, variables, query=True)
        charge, error = await charge_request(context, refused=False)
        if error is not None:
            raise HandOver("rate limited")  # a refused charge took nothing
        taken = charge.amount
        assert context.cost is not None
        report: dict[str, str] | None = None
        cached = lookup.stored is not None
        if lookup.stored is not None:
            data: Any = orjson.loads(lookup.stored)
            context.cost.actual = actual(data)
        else:
            try:
                report, data = await answer_planned(context, schema, document, name, variables)
            except Exception:  # noqa: BLE001 - the full path runs it again and reports it
                raise HandOver("statement failed") from None
            if data is None:
                raise HandOver("interpreted")  # the report says why
        credentials = context.services.credentials
        if (
            pending.used
            and credentials is not None
            and not await credentials.confirm(pending, context.transaction.heard_since)
        ):
            raise HandOver("credential changed")
        taken -= await refund_unused(context, charge)
        await file_answer(context, lookup, data, query=True, cached=cached)
        try:
            await context.finish(commit=True)
        except Exception:  # noqa: BLE001 - the full path answers with the error's code
            raise HandOver("transaction end") from None
    except HandOver:
        await _undo(context, charge, taken)
        raise
    except Exception:  # noqa: BLE001 - the cache or the store failing: the full path answers
        await _undo(context, charge, taken)
        raise HandOver("failed") from None
    except BaseException:
        # Cancelled (the request's deadline) or failed: the transaction rolls back.
        await roll_back(context)
        raise
    return data, report


async def _undo(context: Context, charge: Charge | None, taken: int) -> None:
    """Before the full path answers: the transaction rolled back, and what the charge still
    holds given back (the full path charges the request again)."""
    await roll_back(context)
    if charge is None or taken <= 0:
        return
    try:
        await take(context.services, charge.key, -taken, charge.rate)
    except Exception as exc:  # noqa: BLE001 - the answer matters more than the refund
        log.warning("lean path: charge not given back", error=type(exc).__name__)


async def _confirmed(scope: Scope, pending: Provisional) -> bool:
    """Whether the remembered credential used unconfirmed still holds (the LISTEN round
    trip), so the full path may take the principal found as it is."""
    credentials = scope["app"].state.services.credentials
    try:
        return credentials is not None and await credentials.confirm(pending, None)
    except Exception:  # noqa: BLE001 - not known: the full path authenticates again
        return False


async def _authenticate(request: HTTPConnection) -> None:
    """The principal, as the authentication middleware finds it (which then does not look
    again); a request that does not authenticate is the full path's to refuse."""
    try:
        found = await _AUTHENTICATION.authenticate(request)
    except AuthenticationError:
        raise HandOver("not authenticated") from None
    except Exception:  # noqa: BLE001 - the full path meets it again and answers it
        raise HandOver("authentication failed") from None
    if found is None:
        raise HandOver("anonymous")
    request.scope["auth"], request.scope["user"] = found


async def _body(receive: Receive, read: list[Message]) -> bytes:
    """The whole body (every message kept in ``read`` for the full path to replay), or
    HandOver when it exceeds the JSON limit or the client left."""
    size = 0
    chunks: list[bytes] = []
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            raise HandOver("disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_JSON_BODY:
            raise HandOver("body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decoded(body: bytes) -> dict[str, Any]:
    """The request's JSON as the view reads it: one operation, of the right shape."""
    try:
        value = inputs.decode_json(body)
    except inputs.JsonRefused:
        raise HandOver("not valid json") from None
    if not isinstance(value, dict):
        raise HandOver("not one operation")
    fields = {
        "query": value.get("query"),
        "variables": value.get("variables"),
        "extensions": value.get("extensions"),
        "operationName": value.get("operationName"),
    }
    if operation_request_problem(fields) is not None:
        raise HandOver("request shape")
    return fields


def _replay(read: list[Message], receive: Receive) -> Callable[[], Awaitable[Message]]:
    """``receive`` with the messages already read given back first."""
    pending = list(read)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
