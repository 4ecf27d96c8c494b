"""The audit log and its hash chain: read in the caller's organization (ADMIN, AUDITOR)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from prism.authz.policy import Action, require
from prism.execution.context import Context
from prism.models import audit as audit_models
from prism.models.pagination import Page, PageRequest


class AuditFilterArgument(Protocol):
    """The ``filter`` argument of ``auditLog``: read (its IDs decoded) only once the caller may
    read the log and the page arguments are valid."""

    def to_model(self) -> audit_models.AuditFilter: ...


async def read_audit_log(
    ctx: Context, filter: AuditFilterArgument | None, first: int | None, after: str | None
) -> Page[audit_models.AuditEvent]:
    """A page of the organization's audit events, oldest first."""
    principal = ctx.require_principal()
    require(principal, Action.AUDIT_READ)
    page_request = PageRequest.parse(first, after, ordering="audit")
    flt = filter.to_model() if filter is not None else None
    async with ctx.transaction.read() as session:
        return await audit_models.read_audit_events(
            session, principal.scope(), flt=flt, page=page_request
        )


async def verify_audit_chain(
    ctx: Context, after: datetime | None, before: datetime | None
) -> audit_models.ChainReport:
    """The organization's hash chain re-verified, optionally within [after, before)."""
    principal = ctx.require_principal()
    require(principal, Action.AUDIT_READ)
    # The chain spans every event of the organization, whatever the reader's clearance;
    # the report names at most one event id, never its content.
    async with ctx.services.db.transaction(principal.organization_id) as session:
        return await audit_models.verify_chain(
            session, organization_id=principal.organization_id, after=after, before=before
        )
