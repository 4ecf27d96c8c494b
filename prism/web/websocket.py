"""graphql-transport-ws with the rights of an HTTP request.

A socket authenticates once, in connection_init, but it is not a session of its own: every
operation on it (subscriptions, queries and mutations) authenticates its credential again
by the HTTP requests' path (`authenticate_bearer`), runs in a context of its own
(principal, transaction, loaders, persisted query), and is held to registered operations as
an HTTP request would be (`Context.resolve_operation`). Between operations the connection
checks its credential every PRISM_WEBSOCKET_RECHECK_SECONDS: a revoked API token, a
signed-out session or an expired JWT closes the socket with 4401 Unauthorized.

A message is held to what an HTTP request is held to, and refused as the protocol says:
- larger than an HTTP JSON body (``edge.MAX_JSON_BODY``): closed with 4400 before it is
  decoded (the reference client does not reconnect on 4400; it would on a 4413 and send the
  same message again). ``prism serve`` also gives uvicorn that ``ws_max_size`` (1009 above);
- not a protocol message (not a JSON object, a subscribe or complete without a non-empty
  string ``id``, a subscribe whose payload is not an object): 4400; an ``id`` in use: 4409;
- a payload HTTP would refuse (``edge.operation_request_problem``; no document; an
  operation name the document lacks) and a document that does not parse: an ``error``
  message for that operation, coded BAD_USER_INPUT (as over HTTP), and
  the socket's other operations go on. Nothing of this is logged as a fault of the server.

A socket runs at most 100 operations at once (Strawberry's ``max_subscriptions_per_connection``)
and one credential (an API token; else a user, all its sessions) holds at most
PRISM_WEBSOCKET_MAX_SOCKETS_PER_CREDENTIAL open sockets per server process: one more is
closed with 4429 after its connection_init, before the ack (a graphql-ws client does not
reconnect on 4429). The count is per process: N workers allow N times as many."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import suppress
from json import JSONDecodeError
from typing import Any
from weakref import WeakKeyDictionary

import structlog
from graphql import GraphQLError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)
from strawberry.types.execution import PreExecutionError
from strawberry.types.unset import UnsetType
from strawberry.utils.aio import aclosing
from strawberry.utils.operation import get_operation_type

from prism.db.faults import answer_deadline, answered_within, log_failure
from prism.errors import BadUserInput, PrismError, ServiceUnavailable, Unauthenticated
from prism.execution.context import Context
from prism.execution.extensions import parse_document
from prism.execution.limits import charge_context_refusal, context_spent
from prism.web.edge import MAX_JSON_BODY, exceeds_body_limit, operation_request_problem

log = structlog.get_logger("prism.web.websocket")

UNAUTHORIZED = 4401
BAD_REQUEST = 4400
UNAVAILABLE = ServiceUnavailable("The operation could not be started; try again.")


class PrismOperation(Operation[Context, None]):
    """One subscribe message: its document (or persisted query) and the context it runs in."""

    __slots__ = ("context", "extensions")

    def __init__(
        self,
        handler: BaseGraphQLTransportWSHandler[Context, None],
        id: str,
        query: Any,
        variables: dict[str, object] | None,
        operation_name: str | None,
        extensions: dict[str, Any] | None,
    ) -> None:
        super().__init__(handler, id, query, variables, operation_name)
        self.extensions = extensions
        self.context: Context | None = None


def _error(exc: PrismError) -> GraphQLError:
    return GraphQLError(exc.message, extensions=exc.extensions)


# Open sockets per credential (API token, else user), per app in this process.
_OPEN_SOCKETS: WeakKeyDictionary[object, Counter[uuid.UUID]] = WeakKeyDictionary()


class MessageTooLarge(Exception):
    pass


# Strawberry's HTTP answers to a request without a document and to an operation name the
# document lacks: the same words over a WebSocket.
NO_QUERY = "No GraphQL query found in the request"


def operation_problem(query: str, operation_name: str | None) -> str | None:
    try:
        document = parse_document(query, None)
    except GraphQLError:
        return None  # the schema reports the syntax error
    try:
        get_operation_type(document, operation_name)  # what Strawberry's HTTP path runs
    except RuntimeError:
        return CannotGetOperationTypeError(operation_name).as_http_error_reason()
    return None


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256


class PrismTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's handler, with one context per operation and the credential re-checked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recheck_task: asyncio.Task[None] | None = None
        self.socket_key: uuid.UUID | None = None
        self.closing: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        """Strawberry's, with the credential's socket count checked before the ack."""
        if self.connection_timed_out:
            return
        if self.connection_init_timeout_task:
            self.connection_init_timeout_task.cancel()
        payload: Any = message.get("payload", {})
        if not isinstance(payload, dict):
            await self.websocket.close(code=BAD_REQUEST, reason="Invalid connection init payload")
            return
        if self.connection_init_received:
            await self.websocket.close(code=4429, reason="Too many initialisation requests")
            return
        self.connection_init_received = True
        self.context.connection_params = payload
        try:
            ack_payload = await self.view.on_ws_connect(self.context)
        except ConnectionRejectionError:
            await self.websocket.close(code=4403, reason="Forbidden")
            return
        if not self._claim_socket():
            limit = self.context.services.settings.websocket_max_sockets_per_credential
            reason = f"At most {limit} open WebSockets per credential"
            await self.websocket.close(code=4429, reason=reason)
            return
        if isinstance(ack_payload, UnsetType):
            await self.send_message({"type": "connection_ack"})
        else:
            await self.send_message({"type": "connection_ack", "payload": ack_payload})
        self.connection_acknowledged = True
        if self.recheck_task is None:
            self.recheck_task = asyncio.create_task(self.recheck())
            self.recheck_task.add_done_callback(self._task_done)

    def _claim_socket(self) -> bool:
        principal = self.context.principal
        if principal is None:
            return False
        key = principal.api_token_id or principal.user_id or principal.organization_id
        counts = _OPEN_SOCKETS.setdefault(self.view, Counter())
        if counts[key] >= self.context.services.settings.websocket_max_sockets_per_credential:
            return False
        counts[key] += 1
        self.socket_key = key
        return True

    async def shutdown(self) -> None:
        if self.socket_key is not None:
            counts = _OPEN_SOCKETS.get(self.view)
            if counts is not None:
                counts[self.socket_key] -= 1
                if counts[self.socket_key] <= 0:
                    del counts[self.socket_key]
            self.socket_key = None
        if self.recheck_task is not None:
            self.recheck_task.cancel()
            with suppress(asyncio.CancelledError):
                await self.recheck_task
        if self.closing is not None and not self.closing.done():
            self.closing.cancel()
        await super().shutdown()

    def disconnecter(
        self, operation: PrismOperation
    ) -> Callable[[int, str], Coroutine[Any, Any, None]]:
        """How ``operation`` ends itself and its socket when its client no longer reads: the
        operation (stuck sending) is cancelled now, which frees what it holds, and the socket
        is closed with ``code``, whose close frame leaves after what the client has not read
        yet."""

        async def disconnect(code: int, reason: str) -> None:
            self.operations.pop(operation.id, None)
            if operation.task is not None and operation.task is not asyncio.current_task():
                operation.task.cancel()
            if self.closing is None:
                self.closing = asyncio.create_task(self._close(code, reason[:120]))

        return disconnect

    async def _close(self, code: int, reason: str) -> None:
        with suppress(Exception):
            await self.websocket.close(code=code, reason=reason)

    async def recheck(self) -> None:
        """Close the socket once its credential no longer authenticates."""
        interval = self.context.services.settings.websocket_recheck_seconds
        deadline = answer_deadline(self.context.services.settings.request_timeout_seconds)
        while True:
            await asyncio.sleep(interval)
            try:
                async with answered_within(deadline, "credential re-check"):
                    await self.context.reauthenticate()
            except Unauthenticated:
                await self.websocket.close(code=UNAUTHORIZED, reason="Unauthorized")
                return
            except Exception as exc:  # noqa: BLE001 (logged by log_failure)
                # The database is away: operations fail on their own until it is back, and
                # each re-check says so in one line; anything else is a bug, with its stack.
                log_failure(log, "websocket credential re-check failed", exc)

    async def handle(self) -> None:
        """Strawberry's loop, with every message measured before it is decoded."""
        self.on_request_accepted()
        try:
            try:
                async for message in self._messages():
                    await self.handle_message(message)
            except NonTextMessageReceived:
                await self.handle_invalid_message("WebSocket message type must be text")
            except NonJsonMessageReceived:
                await self.handle_invalid_message("WebSocket message must be valid JSON")
            except MessageTooLarge:
                await self.handle_invalid_message(
                    f"WebSocket messages are limited to {MAX_JSON_BODY} bytes"
                )
        except WebSocketDisconnected:
            pass
        finally:
            await self.shutdown()

    async def _messages(self) -> AsyncIterator[Any]:
        ws = getattr(self.websocket, "ws", None)
        assert isinstance(ws, WebSocket), "served by Starlette"
        while ws.application_state != WebSocketState.DISCONNECTED:
            try:
                text = await ws.receive_text()
            except KeyError as exc:  # a binary frame
                raise NonTextMessageReceived from exc
            except WebSocketDisconnect:
                return
            if exceeds_body_limit(text):
                raise MessageTooLarge
            try:
                yield self.view.decode_json(text)
            except JSONDecodeError as exc:
                raise NonJsonMessageReceived from exc

    async def handle_message(self, message: Message) -> None:
        raw: Any = message
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            await self.handle_invalid_message("A message is an object with a `type`")
            return
        if raw["type"] in ("subscribe", "complete") and not _valid_id(raw.get("id")):
            await self.handle_invalid_message(
                f"A {raw['type']} message needs an `id`: a string of 1 to 256 characters"
            )
            return
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged:
            await self.websocket.close(code=UNAUTHORIZED, reason="Unauthorized")
            return
        payload: Any = message.get("payload")
        if not isinstance(payload, dict):
            await self.handle_invalid_message("Invalid subscribe payload: not an object")
            return
        if message["id"] in self.operations:
            reason = f"Subscriber for {message['id']} already exists"
            await self.websocket.close(code=4409, reason=reason)
            return
        if (
            self.max_subscriptions_per_connection is not None
            and len(self.operations) >= self.max_subscriptions_per_connection
        ):
            error = GraphQLError("Subscription limit reached", extensions={"code": "RATE_LIMITED"})
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
            return
        problem = operation_request_problem(payload)
        if problem is not None:
            error = _error(BadUserInput(problem))
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
            return
        operation = PrismOperation(
            self,
            message["id"],
            payload.get("query"),
            payload.get("variables"),
            payload.get("operationName"),
            payload.get("extensions"),
        )
        operation.task = asyncio.create_task(self.run_operation(operation))
        operation.task.add_done_callback(self._task_done)
        self.operations[message["id"]] = operation

    async def _handle_pre_execution_error(
        self, operation: Operation[Context, None], result: PreExecutionError
    ) -> None:
        """An operation refused before it runs (no parse, invalid, unknown operation name):
        charged to its caller as over HTTP, before the errors are sent."""
        context = getattr(operation, "context", None)
        if isinstance(context, Context):
            limited = await charge_context_refusal(context)
            if limited is not None:
                result.errors = [limited]
        await super()._handle_pre_execution_error(operation, result)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Authenticate, resolve the document, run it in a context of its own."""
        assert isinstance(operation, PrismOperation)
        try:
            deadline = answer_deadline(self.context.services.settings.request_timeout_seconds)
            async with answered_within(deadline, "credential re-check"):
                principal = await self.context.reauthenticate()
            context = self.context.for_operation(principal)
            context.disconnect = self.disconnecter(operation)
            operation.context = context
            # A caller who cannot pay for one more refusal is answered before the lookup.
            limited = await context_spent(context)
            if limited is not None:
                await operation.send_initial_errors([limited])
                return
            resolved = await context.resolve_operation(operation.query, operation.extensions)
            if not resolved.query:
                raise BadUserInput(NO_QUERY)
            problem = operation_problem(resolved.query, operation.operation_name)
            if problem is not None:
                raise BadUserInput(problem)
        except Unauthenticated as exc:
            await operation.send_initial_errors([_error(exc)])
            await self.websocket.close(code=UNAUTHORIZED, reason="Unauthorized")
            return
        except PrismError as exc:
            charged = operation.context
            limited = None if charged is None else await charge_context_refusal(charged)
            await operation.send_initial_errors([limited or _error(exc)])
            return
        except Exception as exc:  # noqa: BLE001 (logged by log_failure)
            # The database or the cache store is away: refused, like an HTTP request would be
            # (one line; a stack only for what is not an outage).
            log_failure(log, "websocket operation not started", exc)
            await operation.send_initial_errors([_error(UNAVAILABLE)])
            return
        try:
            result_source = await self.schema.stream(
                resolved.query,
                variable_values=operation.variables,
                context_value=context,
                root_value=self.root_value,
                operation_name=operation.operation_name,
                operation_extensions=operation.extensions,
            )
            async with aclosing(result_source):
                await self._send_result_stream(operation, result_source)
            await operation.send_operation_message(
                CompleteMessage(id=operation.id, type="complete")
            )
        except (_OperationStreamClosed, WebSocketDisconnected):
            # The client went away before the last message (its socket closed as the
            # operation ended): nobody to tell, nothing went wrong.
            return
        except Exception as error:
            await self.handle_task_exception(error)
            with suppress(Exception):
                await operation.send_operation_message(
                    CompleteMessage(id=operation.id, type="complete")
                )
            self.operations.pop(operation.id, None)
            raise

    @staticmethod
    def _get_pre_execution_close_reason(error: GraphQLError) -> str | None:
        """A document that does not parse is that operation's error, not the socket's end
        (Strawberry closes the socket, and every other operation on it, with 4400)."""
        return None
