"""Registered operations over GraphQL: an organization's ADMIN registers, lists and retires
the queries its dashboards and BI tools run (by hash, or by their text)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from prism.execution.ids import to_global_id
from prism.resolvers import operations as operation_resolvers
from prism.resolvers.operations import Described
from prism.schema.base import Info


@strawberry.type(
    description="A registered operation: run by its `sha256` (`extensions.persistedQuery`) or, "
    "by a BI token, by its text."
)
class RegisteredOperation:
    id: strawberry.ID = strawberry.field(description="Opaque global ID.")
    name: str
    sha256: str = strawberry.field(description="What clients send in `persistedQuery`.")
    document: str = strawberry.field(description="The text, printed canonically.")
    is_global: bool = strawberry.field(
        name="global",
        description="An operator's (`prism operations push`), for every organization; it "
        "cannot be retired here.",
    )
    created_at: datetime
    retired_at: datetime | None = strawberry.field(
        description="When it stopped running (null: it runs)."
    )
    cost: int = strawberry.field(
        description="Objects it may return with its variables' defaults (the limit is the "
        "server's maximum query cost)."
    )
    planned: bool = strawberry.field(
        description="Whether Prism answers it, for the caller, with one planned SQL statement."
    )
    not_planned_reason: str | None = strawberry.field(
        description="Why it is not planned (null when it is)."
    )

    @classmethod
    def of(cls, d: Described) -> RegisteredOperation:
        return cls(
            id=strawberry.ID(to_global_id("RegisteredOperation", d.row_id)),
            name=d.name,
            sha256=d.sha256,
            document=d.document,
            is_global=d.is_global,
            created_at=d.created_at,
            retired_at=d.retired_at,
            cost=d.cost,
            planned=d.planned,
            not_planned_reason=d.not_planned_reason,
        )


@strawberry.type
class OperationsQuery:
    @strawberry.field(
        description="The organization's registered operations, then the global ones "
        "(ADMIN, APPROVER, AUDITOR; tokens with `bi:read`)."
    )
    async def registered_operations(
        self, info: Info, include_retired: bool = False
    ) -> list[RegisteredOperation]:
        found = await operation_resolvers.registered_operations(
            info.context, info.schema._schema, include_retired
        )
        return [RegisteredOperation.of(d) for d in found]


@strawberry.type
class OperationsMutation:
    @strawberry.mutation(
        description="Register every named operation of `document` for the organization "
        "(ADMIN; tokens with `operations:admin`); registering a text again returns it."
    )
    async def register_operations(self, info: Info, document: str) -> list[RegisteredOperation]:
        found = await operation_resolvers.register_operations(
            info.context, info.schema._schema, document
        )
        return [RegisteredOperation.of(d) for d in found]

    @strawberry.mutation(
        description="Retire one of the organization's operations: it stops running "
        "(ADMIN; tokens with `operations:admin`)."
    )
    async def retire_operation(self, info: Info, id: strawberry.ID) -> RegisteredOperation:
        found = await operation_resolvers.retire_operation(info.context, info.schema._schema, id)
        return RegisteredOperation.of(found)
