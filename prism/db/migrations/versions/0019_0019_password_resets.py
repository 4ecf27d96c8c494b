"""Password reset tokens: sent by e-mail, stored as their sha256 only, usable once and for a
short while (``PRISM_PASSWORD_RESET_MINUTES``).

A tenant table under row-level security like the others; the token is presented before its
organization is known, so ``prism_password_reset_lookup`` (SECURITY DEFINER, like the refresh
token's) answers which organization a live token's hash belongs to, and nothing more.
Nothing here is a bearer credential: no notification of ``prism_credentials`` is needed (the
sessions a reset ends notify through their own trigger, migration 0017).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from prism.db.migrations.rls import APP_ROLE, disable_tenant_rls, enable_tenant_rls

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "prism_password_reset_lookup(bytea)"
LOOKUP = """
CREATE FUNCTION prism_password_reset_lookup(p_hash bytea)
RETURNS TABLE (reset_id uuid, organization_id uuid)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp STABLE AS $$
    SELECT id, organization_id FROM password_resets
    WHERE token_hash = p_hash AND used_at IS NULL AND expires_at > now()
$$"""


def upgrade() -> None:
    op.create_table(
        "password_resets",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_password_resets_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_password_resets_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_resets")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_resets_token_hash")),
    )
    op.create_index("ix_password_resets_user_id", "password_resets", ["user_id"], unique=False)
    enable_tenant_rls("password_resets")
    op.execute(LOOKUP)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    disable_tenant_rls("password_resets")
    op.drop_index("ix_password_resets_user_id", table_name="password_resets")
    op.drop_table("password_resets")
