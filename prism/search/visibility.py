"""The one function that turns a caller's ``Scope`` into the filter every search carries:
organization, classification at most the clearance, RESTRICTED only within the caller's
department (unless all departments), and never a deleted document.

A backend's ``search`` takes a ``MandatoryFilter``, not a ``Scope``: there is no way to ask
either backend anything without it. Both renderings come from the same fields, and
tests/test_search.py holds both to ``authz.policy.can_see`` for every kind of principal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from prism.models.documents import visible_documents
from prism.models.enums import Classification
from prism.models.scope import Scope


@dataclass(frozen=True)
class MandatoryFilter:
    scope: Scope
    organization_id: uuid.UUID
    classifications: tuple[Classification, ...]
    # RESTRICTED documents visible only in this department (None: in none), unless
    # all_departments.
    department: str | None
    all_departments: bool

    def sql(self) -> sa.ColumnElement[bool]:
        """For the PostgreSQL backend: the read rule of every other list of Prism."""
        return visible_documents(self.scope)

    def opensearch(self) -> list[dict[str, Any]]:
        """For the OpenSearch backend: filter clauses (no scoring, always required)."""
        clauses: list[dict[str, Any]] = [
            {"term": {"organization_id": str(self.organization_id)}},
            {"terms": {"classification": [c.value for c in self.classifications]}},
            {"bool": {"must_not": [{"term": {"deleted": True}}]}},
        ]
        if Classification.RESTRICTED in self.classifications and not self.all_departments:
            either: list[dict[str, Any]] = [
                {"bool": {"must_not": [{"term": {"classification": "RESTRICTED"}}]}}
            ]
            if self.department:
                either.append({"term": {"department": self.department}})
            clauses.append({"bool": {"should": either, "minimum_should_match": 1}})
        return clauses


def mandatory_filter(scope: Scope) -> MandatoryFilter:
    return MandatoryFilter(
        scope=scope,
        organization_id=scope.organization_id,
        classifications=tuple(scope.max_classification.at_most()),
        department=scope.department,
        all_departments=scope.all_departments,
    )
