"""Retention policies: read with defaults, changed with validation and an audit event."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from prism.errors import BadUserInput
from prism.models import governance as models
from prism.models.audit import Actor, RequestMeta, record_event
from prism.models.enums import DataCategory
from prism.models.governance import DEFAULT_POLICIES, RetentionPolicy

__all__ = ["DEFAULT_POLICIES", "RetentionPolicy", "read_policies", "update_policy"]

FIELDS = ("hot_days", "warm_days", "cold_days", "archive_days", "delete_after_days")
MAX_DAYS = 36_500


async def read_policies(session: AsyncSession, organization_id: uuid.UUID) -> list[RetentionPolicy]:
    policies = await models.read_retention_policies(session, organization_id)
    return [policies[c] for c in DataCategory]


def _snapshot(policy: RetentionPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in FIELDS}


async def update_policy(
    session: AsyncSession,
    organization_id: uuid.UUID,
    category: DataCategory,
    changes: dict[str, int | None],
    *,
    actor: Actor,
    meta: RequestMeta | None = None,
) -> RetentionPolicy:
    """Apply ``changes`` (field name → days; ``delete_after_days`` may be None: never) to the
    category's policy; a documents policy also moves its documents' ``retentionExpiresAt``."""
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
    await record_event(
        session,
        organization_id=organization_id,
        actor=actor,
        event_type="retention.update",
        category="governance",
        description=f"Retention policy of {category.value} changed",
        before=_snapshot(current),
        after={**_snapshot(updated), "documentsRescheduled": rescheduled},
        meta=meta,
    )
    return updated
