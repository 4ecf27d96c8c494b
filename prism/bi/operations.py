"""An organization's registered operations: the queries its dashboards and BI tools run by
hash (or by their text, for tools that can only send text). Its ADMIN registers, lists and
retires them; each change is audited in its transaction. An operator's global operations
(``prism operations push``) are listed beside them and cannot be retired here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.errors import BadUserInput, not_found
from prism.models import registered_operations as operations
from prism.models.registered_operations import OrganizationOperation, RegisteredOperation

# An organization's live operations: a dashboard needs tens, not thousands.
MAX_OPERATIONS = 500
MAX_PER_REQUEST = 50


async def register_operations(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    found: Sequence[tuple[str, str]],
) -> list[tuple[OrganizationOperation, bool]]:
    """Register (name, document) pairs, already split and validated against the schema:
    (row, newly registered) for each."""
    require(principal, Action.OPERATION_MANAGE)
    if len(found) > MAX_PER_REQUEST:
        raise BadUserInput(
            f"At most {MAX_PER_REQUEST} operations per request.", argument="document"
        )
    if await operations.count_live_organization_operations(session) + len(found) > MAX_OPERATIONS:
        raise BadUserInput(
            f"An organization keeps at most {MAX_OPERATIONS} registered operations: retire "
            "some first.",
            argument="document",
        )
    stored = await operations.add_organization_operations(
        session, principal.organization_id, principal.user_id, found
    )
    for row, new in stored:
        if new:
            await audit.record(
                session,
                principal,
                meta,
                event_type="operation.registered",
                category="configuration",
                description=f"Registered operation {row.name}",
                resource_type="RegisteredOperation",
                resource_id=row.id,
                after={"name": row.name, "sha256": row.sha256},
            )
    return stored


async def list_operations(
    session: AsyncSession, principal: Principal, *, include_retired: bool
) -> tuple[list[OrganizationOperation], list[RegisteredOperation]]:
    """The organization's operations (retired ones too when asked) and the global ones."""
    require(principal, Action.OPERATION_READ)
    own = await operations.list_organization_operations(session, include_retired=include_retired)
    return own, await operations.list_operations(session)


async def retire_operation(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    operation_id: uuid.UUID,
) -> OrganizationOperation:
    """Retire one of the organization's operations: it stops running at once in this process
    and within ``ORGANIZATION_TTL_SECONDS`` in the others (the caller has the process's
    registry forget the organization's operations once the change commits)."""
    require(principal, Action.OPERATION_MANAGE)
    row = await operations.read_organization_operation(session, operation_id)
    if row is None:
        raise not_found("RegisteredOperation")
    if operations.retire(row):
        await audit.record(
            session,
            principal,
            meta,
            event_type="operation.retired",
            category="configuration",
            description=f"Retired operation {row.name}",
            resource_type="RegisteredOperation",
            resource_id=row.id,
            before={"name": row.name, "sha256": row.sha256},
        )
    await session.flush()
    return row
