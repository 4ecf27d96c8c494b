"""Retention policies: read with defaults, changed with validation and an audit event."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.errors import BadUserInput
from prism.models import governance as models
from prism.models.enums import DataCategory
from prism.models.governance import DEFAULT_POLICIES, RetentionPolicy
from prism.services import Services

__all__ = [
    "DEFAULT_POLICIES",
    "RetentionPolicy",
    "list_retention_policies",
    "read_policies",
    "update_retention_policy",
]

FIELDS = ("hot_days", "warm_days", "cold_days", "archive_days", "delete_after_days")
MAX_DAYS = 36_500


async def read_policies(session: AsyncSession, organization_id: uuid.UUID) -> list[RetentionPolicy]:
    policies = await models.read_retention_policies(session, organization_id)
    return [policies[c] for c in DataCategory]


async def list_retention_policies(
    session: AsyncSession, services: Services, principal: Principal
) -> list[RetentionPolicy]:
    """The organization's policies, one per data category (ADMIN)."""
    require(principal, Action.RETENTION_READ)
    return await read_policies(session, principal.organization_id)


def _snapshot(policy: RetentionPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in FIELDS}


async def update_retention_policy(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta | None,
    category: DataCategory,
    changes: dict[str, int | None],
) -> RetentionPolicy:
    """Apply ``changes`` (field name → days; ``delete_after_days`` may be None: never) to the
    category's policy (ADMIN); a documents policy also moves its documents'
    ``retentionExpiresAt``."""
    require(principal, Action.RETENTION_UPDATE)
    organization_id = principal.organization_id
    for name, value in changes.items():
        if name not in FIELDS:
            raise BadUserInput(f"Unknown retention field {name!r}.")
        if value is None and name != "delete_after_days":
            raise BadUserInput(f"`{name}` cannot be null.", argument=name)
        if value is not None and not 1 <= value <= MAX_DAYS:
            raise BadUserInput(f"Days are 1 to {MAX_DAYS}.", argument=name)
    current = await models.read_retention_policy(session, organization_id, category)
    updated = replace(current, **changes)  # type: ignore[arg-type]
    problems = updated.problems()
    if problems:
        raise BadUserInput(" ".join(problems))
    if updated == current:
        return current
    await models.store_retention_policy(session, organization_id, updated)
    rescheduled = None
    if category is DataCategory.DOCUMENTS:
        rescheduled = await models.reset_document_expiry(session, organization_id, updated)
    await audit.record(
        session,
        principal,
        meta,
        event_type="retention.update",
        category="governance",
        description=f"Retention policy of {category.value} changed",
        before=_snapshot(current),
        after={**_snapshot(updated), "documentsRescheduled": rescheduled},
    )
    return updated
