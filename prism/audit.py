"""The one way a use case records what it changed: ``record(session, ...)`` appends the audit
event to its organization's chain in the change's own transaction, so a change and its event
commit together or not at all. Every audited change in Prism goes through here (the domain
packages call it; nothing above them writes audit rows), and so each also writes its outbox
event (``prism.events.catalog``: the CloudEvent, its topic and what it may carry) in the same
statement that advances the chain head: what leaves Prism is exactly what was committed."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from prism.authz.principal import Principal
from prism.events.catalog import from_audit
from prism.models.audit import Actor, AuditEvent, RequestMeta, Subject, record_event
from prism.models.outbox import Draft

__all__ = ["OPERATOR", "Actor", "RequestMeta", "Subject", "actor_of", "record"]

# The request an operator's command makes (the CLI, the demo data): no address, its own agent.
OPERATOR = RequestMeta(user_agent="prism-cli")


def actor_of(principal: Principal | None) -> Actor:
    """Who acted: a user, an API token, or Prism itself (no principal: the worker, the CLI)."""
    if principal is None:
        return Actor()
    return Actor(user_id=principal.user_id, api_token_id=principal.api_token_id)


async def record(
    session: AsyncSession,
    principal: Principal | None,
    meta: RequestMeta | None,
    *,
    event_type: str,
    category: str,
    description: str,
    organization_id: uuid.UUID | None = None,
    resource_type: str | None = None,
    resource_id: uuid.UUID | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    subject: Subject | None = None,
    actor: Actor | None = None,
) -> AuditEvent:
    """Append one event for a change made by ``principal`` (or by Prism itself when it is
    None; then ``organization_id`` names the organization). ``actor`` overrides who is
    recorded, for a change made on someone's behalf before they have a principal (sign-in)."""
    if organization_id is None:
        if principal is None:
            raise ValueError("an event without a principal names its organization")
        organization_id = principal.organization_id
    return await record_event(
        session,
        organization_id=organization_id,
        actor=actor if actor is not None else actor_of(principal),
        meta=meta,
        event_type=event_type,
        category=category,
        description=description,
        resource_type=resource_type,
        resource_id=resource_id,
        before=before,
        after=after,
        subject=subject,
        outbox=outbox_event,
    )


def outbox_event(event: AuditEvent) -> Draft:
    """The outbox's CloudEvent of an audit event (written in the same statement)."""
    return from_audit(
        event_id=event.id,
        organization_id=event.organization_id,
        time=event.created_at,
        event_type=event.event_type,
        actor_user_id=event.actor_id,
        actor_api_token_id=event.api_token_id,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        classification=event.classification.value if event.classification else None,
        department=event.department,
        before=event.before,
        after=event.after,
    )
