"""API tokens no longer move the data version: their once-a-minute `last_used_at` stamp
retired every cached answer of the organization. Answers listing tokens are not cached.

Revision ID: 0012
Revises: 0006
Create Date: 2026-11-26 22:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from prism.db.migrations.rls import track_data_version, untrack_data_version

revision: str = "0012"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    untrack_data_version("api_tokens")


def downgrade() -> None:
    track_data_version("api_tokens")
