"""Authenticate an API token in one statement: the token, its user and their rights.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 22:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from prism.db.migrations.rls import APP_ROLE

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "prism_authenticate_api_token(bytea)"

FUNCTION = """
CREATE FUNCTION prism_authenticate_api_token(p_hash bytea)
RETURNS TABLE (
    token_id uuid, organization_id uuid, scopes varchar[], token_role varchar,
    token_clearance varchar, token_department varchar, user_id uuid, user_active boolean,
    user_role varchar, user_clearance varchar, user_department varchar,
    user_access_expires_at timestamptz
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    -- lastUsedAt is kept to the minute: one write per token per minute, not per request.
    UPDATE api_tokens SET last_used_at = now()
    WHERE token_hash = p_hash AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > now())
      AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');
    RETURN QUERY
        SELECT t.id, t.organization_id, t.scopes, t.role::varchar, t.clearance::varchar,
               t.department, u.id, u.is_active, u.role::varchar, u.clearance::varchar,
               u.department, u.access_expires_at
        FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id
        WHERE t.token_hash = p_hash AND t.revoked_at IS NULL
          AND (t.expires_at IS NULL OR t.expires_at > now());
END $$"""


def upgrade() -> None:
    op.execute(FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
