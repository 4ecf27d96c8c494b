"""Registered-operation fields: the organization's own and the global ones, with what each
costs and whether the planner answers it for the caller."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

from graphql import GraphQLSchema, OperationType, parse

from prism.bi import operations
from prism.errors import BadUserInput
from prism.execution.context import Context
from prism.execution.cost import estimate, operation_of
from prism.execution.ids import expect_id
from prism.execution.planned import CompiledOperations
from prism.models.registered_operations import OrganizationOperation, RegisteredOperation
from prism.operations.persisted import split_operations


@dataclass(frozen=True)
class Described:
    """A registered operation as the API shows it."""

    row_id: uuid.UUID
    name: str
    sha256: str
    document: str
    is_global: bool
    created_at: datetime
    retired_at: datetime | None
    cost: int
    planned: bool
    not_planned_reason: str | None


def _described(
    ctx: Context, schema: GraphQLSchema, row: OrganizationOperation | RegisteredOperation
) -> Described:
    principal = ctx.require_principal()
    document = parse(row.document)
    operation = operation_of(document, row.name)
    assert operation is not None  # registered documents hold their one named operation
    plan = CompiledOperations.plans.get(
        row.document, document, row.name, principal, digest=row.sha256
    )
    reason = plan if isinstance(plan, str) else plan.reason
    if isinstance(row, OrganizationOperation):
        row_id, is_global, retired_at = row.id, False, row.retired_at
    else:
        row_id, is_global, retired_at = uuid.UUID(row.sha256[:32]), True, None
    return Described(
        row_id=row_id,
        name=row.name,
        sha256=row.sha256,
        document=row.document,
        is_global=is_global,
        created_at=row.created_at,
        retired_at=retired_at,
        cost=estimate(schema, document, operation, None).cost,
        planned=reason is None,
        not_planned_reason=reason,
    )


async def registered_operations(
    ctx: Context, schema: GraphQLSchema, include_retired: bool
) -> list[Described]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        own, shared = await operations.list_operations(
            session, principal, include_retired=include_retired
        )
    rows: list[OrganizationOperation | RegisteredOperation] = [*own, *shared]
    return [_described(ctx, schema, row) for row in rows]


# A dashboard's queries fit in far less; validation runs in a thread, off the event loop.
MAX_DOCUMENT_LENGTH = 64 * 1024


async def register_operations(ctx: Context, schema: GraphQLSchema, source: str) -> list[Described]:
    principal = ctx.require_principal()
    if len(source) > MAX_DOCUMENT_LENGTH:
        raise BadUserInput(
            f"A document to register is at most {MAX_DOCUMENT_LENGTH} characters.",
            argument="document",
        )
    try:
        found = await asyncio.to_thread(split_operations, source, schema)
    except BadUserInput as exc:
        raise BadUserInput(exc.message, argument="document") from exc
    for name, text in found:
        operation = operation_of(parse(text), name)
        if operation is None or operation.operation is not OperationType.QUERY:
            # A BI token runs what its organization registers: reads only.
            raise BadUserInput(
                f"`{name}` is not a query: an organization registers queries only.",
                argument="document",
            )
    async with ctx.transaction.write() as session:
        stored = await operations.register_operations(session, principal, ctx.meta, found)
    ctx.transaction.on_commit(lambda: ctx.services.operations.forget(principal.organization_id))
    return [_described(ctx, schema, row) for row, _ in stored]


async def retire_operation(ctx: Context, schema: GraphQLSchema, operation_id: str) -> Described:
    principal = ctx.require_principal()
    row_id = expect_id(operation_id, "RegisteredOperation")
    async with ctx.transaction.write() as session:
        row = await operations.retire_operation(session, principal, ctx.meta, row_id)
    ctx.transaction.on_commit(lambda: ctx.services.operations.forget(principal.organization_id))
    return _described(ctx, schema, row)
