"""``node(id)`` and ``nodes(ids)``: load any object by global ID, with the read rule of its
type."""

from __future__ import annotations

import asyncio
from typing import Any

from prism.authz.policy import Action, Resource, decide, may_read_token, require
from prism.errors import BadUserInput, NotFound, PrismError
from prism.execution.context import Context
from prism.execution.ids import from_global_id
from prism.models import organizations
from prism.models.pagination import MAX_PAGE_SIZE

# Type name -> (action the caller needs, loader attribute).
_READABLE: dict[str, tuple[Action, str]] = {
    "Document": (Action.DOCUMENT_READ, "document"),
    "Section": (Action.DOCUMENT_READ, "section"),
    "Analysis": (Action.DOCUMENT_READ, "analysis"),
    "Feedback": (Action.DOCUMENT_READ, "feedback"),
    "User": (Action.USER_READ, "user"),
    "Job": (Action.JOB_READ, "job"),
    "AuditEvent": (Action.AUDIT_READ, "audit_event"),
    "ApiToken": (Action.TOKEN_CREATE, "api_token"),
    "DataExport": (Action.USER_EXPORT, "data_export"),
}


async def load_node(ctx: Context, global_id: str) -> tuple[str, Any]:
    """The type name and row behind ``global_id``; NOT_FOUND for a missing row and for one the
    caller may not see, alike."""
    principal = ctx.require_principal()
    type_name, row_id = from_global_id(global_id)
    if type_name == "Organization":
        if row_id != principal.organization_id:
            raise NotFound("Organization not found.")
        async with ctx.transaction.read() as session:
            org = await organizations.read_organization(session, row_id)
        if org is None:
            raise NotFound("Organization not found.")
        return type_name, org
    if type_name not in _READABLE:
        raise NotFound("Node not found.")
    action, loader_name = _READABLE[type_name]
    require(principal, action)
    row = await getattr(ctx.loaders, loader_name).load(row_id)
    if row is None:
        raise NotFound(f"{type_name} not found.")
    if type_name == "ApiToken" and not may_read_token(principal, row.user_id, row.created_by):
        raise NotFound("ApiToken not found.")
    if type_name == "DataExport":
        # The person it is about, or an ADMIN: anyone else is told it does not exist.
        owner = Resource(
            organization_id=row.organization_id, kind="DataExport", owner_id=row.subject_id
        )
        if not decide(principal, Action.USER_EXPORT, owner).allowed:
            raise NotFound("DataExport not found.")
    return type_name, row


async def load_nodes(ctx: Context, ids: list[str]) -> list[tuple[str, Any] | PrismError]:
    """What ``load_node`` answers for each of ``ids`` (at most MAX_PAGE_SIZE), in order; a
    refused or missing one is its error, in its place."""
    if len(ids) > MAX_PAGE_SIZE:
        raise BadUserInput(f"At most {MAX_PAGE_SIZE} ids.", argument="ids")
    # Loaded together, so the loaders batch them: one statement per type, not per id.
    loaded = await asyncio.gather(
        *(load_node(ctx, global_id) for global_id in ids), return_exceptions=True
    )
    result: list[tuple[str, Any] | PrismError] = []
    for item in loaded:
        if isinstance(item, PrismError):
            result.append(item)
        elif isinstance(item, BaseException):
            raise item
        else:
            result.append(item)
    return result
