"""BI rollup tables move the data version when a refresh rewrites them, so a cached answer of
a BI field does not outlive the refresh (the base-table write that made a day stale has
moved it already, but the rollup is rewritten later).

Revision ID: 0013
Revises: 0007
Create Date: 2026-11-26 22:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from prism.db.migrations.rls import track_data_version, untrack_data_version

revision: str = "0013"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUPS = (
    "bi_document_daily",
    "bi_analysis_daily",
    "bi_feedback_daily",
    "bi_reviewer_daily",
    "bi_activity_hourly",
    "bi_activity_daily",
)


def upgrade() -> None:
    for table in ROLLUPS:
        track_data_version(table)


def downgrade() -> None:
    for table in ROLLUPS:
        untrack_data_version(table)
