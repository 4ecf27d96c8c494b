"""The person a privacy request is about, as the policy sees them."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from prism.authz.policy import Resource
from prism.authz.principal import Principal
from prism.errors import NotFound
from prism.models import users as user_models
from prism.models.users import User


def user_resource(user: User) -> Resource:
    return Resource(organization_id=user.organization_id, kind="User", owner_id=user.id)


async def subject_for_update(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID
) -> User:
    """The principal's organization's user ``user_id``, locked (NOT_FOUND if there is none)."""
    rows = await user_models.read_users_by_ids(
        session, principal.organization_id, [user_id], for_update=True
    )
    if not rows:
        raise NotFound("User not found.")
    return rows[0]
