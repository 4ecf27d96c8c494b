"""The registered-operations rule, enforced where every transport's documents pass.

Transports resolve persisted queries before they execute (`Context.resolve_operation`: HTTP
in `PrismGraphQL.execute_single`, WebSocket in `PrismTransportWS.run_operation`). This
extension is the fail-closed half: a caller held to registered operations (a BI token;
everyone under PRISM_REGISTERED_OPERATIONS_ONLY) whose document is not the registered
operation its transport resolved is refused before validation, so a transport that forgets
the resolution cannot run arbitrary documents."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from prism.errors import PersistedQueryRequired
from prism.execution.context import Context

REFUSAL = PersistedQueryRequired(
    "Only registered operations are accepted here: send "
    "`extensions.persistedQuery.sha256Hash` of one (see `prism operations`)."
)


def refusal(context: Context, query: str | None) -> GraphQLError | None:
    """PERSISTED_QUERY_REQUIRED when the caller is held to registered operations and
    ``query`` is not the registered operation its transport resolved; None otherwise."""
    if context.registered_only:
        operation = context.operation
        if operation is None or not operation.registered or operation.query != query:
            return GraphQLError(REFUSAL.message, extensions=REFUSAL.extensions)
    return None


class RegisteredOperationsOnly(SchemaExtension):
    def on_validate(self) -> Iterator[None]:
        # Before validation (whose errors would describe the schema to a caller that may
        # not send documents at all): a refusal here is the request's only error.
        ctx = self.execution_context
        context = ctx.context
        if isinstance(context, Context):
            refused = refusal(context, ctx.query)
            if refused is not None:
                ctx.pre_execution_errors = [refused]
        yield
