"""Audit events record the classification and department of what they concern, so a reader
below that clearance does not see them (nor the names and ids they carry).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 19:08:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLASSIFICATION = sa.Enum(
    "PUBLIC",
    "INTERNAL",
    "CONFIDENTIAL",
    "RESTRICTED",
    name="classification",
    native_enum=False,
    create_constraint=True,
    length=32,
)


def upgrade() -> None:
    op.add_column("audit_logs", sa.Column("classification", CLASSIFICATION, nullable=True))
    op.add_column("audit_logs", sa.Column("department", sa.String(length=100), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_logs", "department")
    op.drop_column("audit_logs", "classification")
