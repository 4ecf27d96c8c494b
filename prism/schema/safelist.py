"""The registered-operations rule, enforced where every transport's documents pass.

Transports resolve persisted queries before they execute (`Context.resolve_operation`: HTTP
in `PrismGraphQL.execute_single` and `execute_operation`, WebSocket in
`PrismTransportWS.run_operation`). This extension is the fail-closed half: a caller held to
registered operations (a BI token; everyone under PRISM_REGISTERED_OPERATIONS_ONLY) whose
document is not the registered operation its transport resolved is refused before
execution, so a transport that forgets the resolution cannot run arbitrary documents."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from prism.errors import PersistedQueryRequired
from prism.resolvers.context import Context

REFUSAL = PersistedQueryRequired(
    "Only registered operations are accepted here: send "
    "`extensions.persistedQuery.sha256Hash` of one (see `prism operations`)."
)


class RegisteredOperationsOnly(SchemaExtension):
    def on_validate(self) -> Iterator[None]:
        yield
        ctx = self.execution_context
        context = ctx.context
        if not isinstance(context, Context) or not context.registered_only:
            return
        operation = context.operation
        if operation is not None and operation.registered and operation.query == ctx.query:
            return
        ctx.pre_execution_errors = [GraphQLError(REFUSAL.message, extensions=REFUSAL.extensions)]
