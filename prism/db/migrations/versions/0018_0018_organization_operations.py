"""Registered operations of one organization, and the normalized text of every registered
operation (what a query sent as text is matched on).

An organization's ADMIN registers, lists and retires its own operations (its dashboards'
queries) over GraphQL; an operator's global ones (``registered_operations``) stay. A BI token
that sends the text of one of them runs it as that operation: the text is matched on the
sha256 of its normalized form (``graphql.strip_ignored_characters``: whitespace, commas and
comments do not count).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from graphql import strip_ignored_characters

from prism.db.migrations.rls import enable_tenant_rls

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _normalized_hash(document: str) -> str:
    return hashlib.sha256(strip_ignored_characters(document).encode()).hexdigest()


def upgrade() -> None:
    op.add_column(
        "registered_operations", sa.Column("normalized_sha256", sa.CHAR(length=64), nullable=True)
    )
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT sha256, document FROM registered_operations"))
    for sha256, document in rows.all():
        connection.execute(
            sa.text("UPDATE registered_operations SET normalized_sha256 = :n WHERE sha256 = :s"),
            {"n": _normalized_hash(document), "s": sha256},
        )
    op.alter_column("registered_operations", "normalized_sha256", nullable=False)
    op.create_index(
        op.f("ix_registered_operations_normalized_sha256"),
        "registered_operations",
        ["normalized_sha256"],
    )
    op.create_table(
        "organization_operations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("sha256", sa.CHAR(length=64), nullable=False),
        sa.Column("normalized_sha256", sa.CHAR(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_operations_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_organization_operations_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_operations")),
        sa.UniqueConstraint(
            "organization_id",
            "sha256",
            name=op.f("uq_organization_operations_organization_id_sha256"),
        ),
    )
    op.create_index(
        op.f("ix_organization_operations_organization_id_normalized_sha256"),
        "organization_operations",
        ["organization_id", "normalized_sha256"],
    )
    enable_tenant_rls("organization_operations", grants="SELECT, INSERT, UPDATE")


def downgrade() -> None:
    op.drop_table("organization_operations")
    op.drop_index(
        op.f("ix_registered_operations_normalized_sha256"), table_name="registered_operations"
    )
    op.drop_column("registered_operations", "normalized_sha256")
