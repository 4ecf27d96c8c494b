"""What a caller may see, as data: built by ``prism.authz`` from a principal, applied by every
query function (and mirrored by RLS for the organization part)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from prism.models.enums import Classification


@dataclass(frozen=True)
class Scope:
    organization_id: uuid.UUID
    user_id: uuid.UUID | None
    # Documents above this classification do not exist for the caller.
    max_classification: Classification
    # RESTRICTED documents are visible only within their department, unless all_departments.
    department: str | None
    all_departments: bool

    @classmethod
    def system(cls, organization_id: uuid.UUID) -> Scope:
        """Everything of one organization: for operator commands and workers, never requests."""
        return cls(
            organization_id=organization_id,
            user_id=None,
            max_classification=Classification.RESTRICTED,
            department=None,
            all_departments=True,
        )
