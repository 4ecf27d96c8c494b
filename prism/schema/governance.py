"""Governance types: retention policies and data-quality reports; the governance fields of
the root Query and Mutation."""

from __future__ import annotations

from datetime import datetime

import strawberry

from prism.models.governance import QualityRun
from prism.models.governance import RetentionPolicy as PolicyRow
from prism.resolvers import governance as governance_resolvers
from prism.schema.base import Info
from prism.schema.enums import DataCategory


@strawberry.type(
    description="How long one category of data stays in each storage tier (age thresholds "
    "in days) and when it is deleted."
)
class RetentionPolicy:
    category: DataCategory
    hot_days: int = strawberry.field(description="HOT until this age.")
    warm_days: int = strawberry.field(description="WARM until this age.")
    cold_days: int = strawberry.field(description="COLD until this age, ARCHIVE after.")
    archive_days: int = strawberry.field(description="End of the retention period.")
    delete_after_days: int | None = strawberry.field(description="null: never deleted")

    @classmethod
    def from_row(cls, row: PolicyRow) -> RetentionPolicy:
        return cls(
            category=row.category,
            hot_days=row.hot_days,
            warm_days=row.warm_days,
            cold_days=row.cold_days,
            archive_days=row.archive_days,
            delete_after_days=row.delete_after_days,
        )


@strawberry.input(
    description="Changes to one category's retention policy; omitted fields stay as they are "
    "(deleteAfterDays: null means never delete)."
)
class UpdateRetentionPolicyInput:
    category: DataCategory
    hot_days: int | None = strawberry.UNSET
    warm_days: int | None = strawberry.UNSET
    cold_days: int | None = strawberry.UNSET
    archive_days: int | None = strawberry.UNSET
    delete_after_days: int | None = strawberry.UNSET

    def changes(self) -> dict[str, int | None]:
        given = {
            "hot_days": self.hot_days,
            "warm_days": self.warm_days,
            "cold_days": self.cold_days,
            "archive_days": self.archive_days,
            "delete_after_days": self.delete_after_days,
        }
        return {name: value for name, value in given.items() if value is not strawberry.UNSET}


@strawberry.type(description="One data-quality check of one run.")
class QualityCheck:
    table: str
    dimension: str = strawberry.field(
        description="completeness, validity, consistency or timeliness."
    )
    name: str
    score: float = strawberry.field(description="Share of the checked rows that pass (0-1).")
    failing_rows: int
    checked_rows: int
    description: str


@strawberry.type(description="The latest data-quality assessment of the organization.")
class DataQualityReport:
    assessed_at: datetime
    overall_score: float = strawberry.field(description="Mean of the checks' scores (0-1).")
    checks: list[QualityCheck]

    @classmethod
    def from_row(cls, row: QualityRun) -> DataQualityReport:
        return cls(
            assessed_at=row.assessed_at,
            overall_score=row.overall_score,
            checks=[
                QualityCheck(
                    table=c["table"],
                    dimension=c["dimension"],
                    name=c["name"],
                    score=c["score"],
                    failing_rows=c["failingRows"],
                    checked_rows=c["checkedRows"],
                    description=c["description"],
                )
                for c in row.checks
            ],
        )


@strawberry.type
class GovernanceQuery:
    """``retentionPolicies`` and ``dataQualityReport`` of the root Query."""

    @strawberry.field(
        description="The organization's retention policy of every data category (ADMIN)."
    )
    async def retention_policies(self, info: Info) -> list[RetentionPolicy]:
        rows = await governance_resolvers.retention_policies(info.context)
        return [RetentionPolicy.from_row(r) for r in rows]

    @strawberry.field(
        description="The latest data-quality assessment (ADMIN, AUDITOR); null before the "
        "first one."
    )
    async def data_quality_report(self, info: Info) -> DataQualityReport | None:
        row = await governance_resolvers.data_quality_report(info.context)
        return DataQualityReport.from_row(row) if row else None


@strawberry.type
class GovernanceMutation:
    """``updateRetentionPolicy`` of the root Mutation."""

    @strawberry.mutation(
        description="Change one category's retention policy (ADMIN); a documents policy also "
        "moves its documents' retentionExpiresAt."
    )
    async def update_retention_policy(
        self, info: Info, input: UpdateRetentionPolicyInput
    ) -> RetentionPolicy:
        row = await governance_resolvers.update_retention_policy(
            info.context, input.category, input.changes()
        )
        return RetentionPolicy.from_row(row)
