"""graphql-transport-ws with the rights of an HTTP request.

A socket authenticates once, in connection_init, but it is not a session of its own: every
operation on it (subscriptions, queries and mutations) authenticates its credential again
by the HTTP requests' path (`identity.authenticate_bearer`), runs in a context of its own
(principal, transaction, loaders, persisted query), and is held to registered operations as
an HTTP request would be (`Context.resolve_operation`). Between operations the connection
checks its credential every PRISM_WEBSOCKET_RECHECK_SECONDS: a revoked API token, a
signed-out session or an expired JWT closes the socket with 4401 Unauthorized."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import structlog
from graphql import GraphQLError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.types.execution import PreExecutionError
from strawberry.utils.aio import aclosing

from prism.errors import PrismError, ServiceUnavailable, Unauthenticated
from prism.resolvers.context import Context
from prism.schema.limits import charge_context_refusal, context_spent

log = structlog.get_logger("prism.websocket")

UNAUTHORIZED = 4401
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


class PrismTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's handler, with one context per operation and the credential re-checked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recheck_task: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self.recheck_task is None:
            self.recheck_task = asyncio.create_task(self.recheck())
            self.recheck_task.add_done_callback(self._task_done)

    async def shutdown(self) -> None:
        if self.recheck_task is not None:
            self.recheck_task.cancel()
            with suppress(asyncio.CancelledError):
                await self.recheck_task
        await super().shutdown()

    async def recheck(self) -> None:
        """Close the socket once its credential no longer authenticates."""
        interval = self.context.services.settings.websocket_recheck_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.context.reauthenticate()
            except Unauthenticated:
                await self.websocket.close(code=UNAUTHORIZED, reason="Unauthorized")
                return
            except Exception as exc:
                # The database is away: operations fail on their own until it is back.
                log.warning("websocket credential re-check failed", exc_info=exc)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged:
            await self.websocket.close(code=UNAUTHORIZED, reason="Unauthorized")
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
        payload: Any = message["payload"]
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str | None):
            await self.handle_invalid_message("Invalid subscribe payload")
            return
        extensions = payload.get("extensions")
        operation = PrismOperation(
            self,
            message["id"],
            payload.get("query"),
            payload.get("variables"),
            payload.get("operationName"),
            extensions if isinstance(extensions, dict) else None,
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
            principal = await self.context.reauthenticate()
            context = self.context.for_operation(principal)
            operation.context = context
            # A caller who cannot pay for one more refusal is answered before the lookup.
            limited = await context_spent(context)
            if limited is not None:
                await operation.send_initial_errors([limited])
                return
            resolved = await context.resolve_operation(operation.query, operation.extensions)
        except Unauthenticated as exc:
            await operation.send_initial_errors([_error(exc)])
            await self.websocket.close(code=UNAUTHORIZED, reason="Unauthorized")
            return
        except PrismError as exc:
            charged = operation.context
            limited = None if charged is None else await charge_context_refusal(charged)
            await operation.send_initial_errors([limited or _error(exc)])
            return
        except Exception as exc:
            # The database or the cache store is away: refused, like an HTTP request would be.
            log.warning("websocket operation not started", exc_info=exc)
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
        except _OperationStreamClosed:
            return
        except Exception as error:
            await self.handle_task_exception(error)
            with suppress(Exception):
                await operation.send_operation_message(
                    CompleteMessage(id=operation.id, type="complete")
                )
            self.operations.pop(operation.id, None)
            raise
