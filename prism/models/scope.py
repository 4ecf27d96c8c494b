"""What a caller may see, as data: built by ``prism.authz`` from a principal, applied by every
query function (and mirrored by RLS for the organization part)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

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


def within_clearance(
    scope: Scope, classification: Any, department: Any, *, unclassified_visible: bool = False
) -> sa.ColumnElement[bool]:
    """SQL form of the read rule on a (classification, department) pair of columns: at most
    the scope's clearance, and RESTRICTED only within the department (or all_departments)."""
    allowed: sa.ColumnElement[bool] = classification.in_(scope.max_classification.at_most())
    if not scope.all_departments and scope.max_classification is Classification.RESTRICTED:
        same_department = department == scope.department if scope.department else sa.false()
        allowed = sa.and_(
            allowed, sa.or_(classification != Classification.RESTRICTED, same_department)
        )
    if unclassified_visible:
        allowed = sa.or_(classification.is_(None), allowed)
    return allowed
