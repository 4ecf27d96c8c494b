"""The caller of a request: a signed-in user or an API token, always inside one organization."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from prism.models.enums import Classification, Role
from prism.models.scope import Scope

# API token scopes (v1), from the public contract.
SCOPES: frozenset[str] = frozenset(
    {
        "documents:read",
        "documents:write",
        "analysis:run",
        "feedback:write",
        "search:read",
        "audit:read",
        "bi:read",
        "users:admin",
        "tokens:admin",
        "operations:admin",
        "events:read",
        "webhooks:admin",
    }
)


@dataclass(frozen=True)
class Principal:
    organization_id: uuid.UUID
    user_id: uuid.UUID | None
    api_token_id: uuid.UUID | None
    role: Role
    clearance: Classification
    department: str | None
    # None for a signed-in user (the role decides); a token's scopes narrow its role.
    scopes: frozenset[str] | None
    access_expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def scope(self) -> Scope:
        """What this principal may see, as the filter every query function applies."""
        return Scope(
            organization_id=self.organization_id,
            user_id=self.user_id,
            max_classification=self.clearance,
            department=self.department,
            all_departments=self.is_admin,
        )

    @property
    def granted_scopes(self) -> frozenset[str]:
        return SCOPES if self.scopes is None else self.scopes
