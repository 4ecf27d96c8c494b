"""Changes that end or alter a bearer credential are notified on ``prism_credentials``.

The API remembers verified credentials for a few seconds (``prism.authn.cache``); every
change that could make a remembered answer wrong notifies the channel from the transaction
that makes it, whichever code (a use case, the CLI, an operator's SQL) wrote it: an API
token revoked, expiring, re-scoped or deleted; a sign-in session revoked (sign-out, a replayed
refresh token, revocation of all sessions) or deleted; a user deactivated, erased, deleted or
given another role, clearance, department or access expiry. The notification carries no
data: listeners forget everything they remember (such changes are rare).

The token check also returns the token's expiry, so a remembered token is not used past it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 04:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from prism.db.migrations.rls import APP_ROLE

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "prism_credentials"
SIGNATURE = "prism_authenticate_api_token(bytea)"

NOTIFY_FUNCTION = f"""
CREATE FUNCTION prism_notify_credentials() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- One notification per transaction: PostgreSQL folds identical payloads.
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END $$"""

# (table, the columns whose change matters)
WATCHED = (
    (
        "api_tokens",
        ("revoked_at", "expires_at", "scopes", "role", "clearance", "department", "user_id"),
    ),
    ("sessions", ("revoked_at", "user_id", "family_id")),
    (
        "users",
        (
            "is_active",
            "role",
            "clearance",
            "department",
            "access_expires_at",
            "organization_id",
            "erased_at",
        ),
    ),
)


def _token_function(with_expiry: bool) -> str:
    extra_column = ", token_expires_at timestamptz" if with_expiry else ""
    extra_value = ", t.expires_at" if with_expiry else ""
    return f"""
CREATE FUNCTION prism_authenticate_api_token(p_hash bytea)
RETURNS TABLE (
    token_id uuid, organization_id uuid, scopes varchar[], token_role varchar,
    token_clearance varchar, token_department varchar, user_id uuid, user_active boolean,
    user_role varchar, user_clearance varchar, user_department varchar,
    user_access_expires_at timestamptz{extra_column}
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
               u.department, u.access_expires_at{extra_value}
        FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id
        WHERE t.token_hash = p_hash AND t.revoked_at IS NULL
          AND (t.expires_at IS NULL OR t.expires_at > now());
END $$"""


def _replace_token_function(with_expiry: bool) -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute(_token_function(with_expiry))
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {APP_ROLE}")


def upgrade() -> None:
    op.execute(NOTIFY_FUNCTION)
    for table, columns in WATCHED:
        changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)
        op.execute(
            f"CREATE TRIGGER {table}_credentials_changed AFTER UPDATE ON {table} "
            f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION prism_notify_credentials()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_credentials_removed AFTER DELETE OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION prism_notify_credentials()"
        )
    _replace_token_function(with_expiry=True)


def downgrade() -> None:
    _replace_token_function(with_expiry=False)
    for table, _ in WATCHED:
        op.execute(f"DROP TRIGGER {table}_credentials_removed ON {table}")
        op.execute(f"DROP TRIGGER {table}_credentials_changed ON {table}")
    op.execute("DROP FUNCTION prism_notify_credentials()")
