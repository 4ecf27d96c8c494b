"""MFA (sealed TOTP secrets, replay guard, hashed backup codes) and sign-in throttling.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from prism.db.migrations.rls import APP_ROLE, disable_tenant_rls, enable_tenant_rls

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEFINER = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp"
# Failures older than this are forgotten; a pair that signed in within KNOWN is "known".
WINDOW = "interval '1 hour'"
KNOWN = "interval '30 days'"

ATTEMPT = f"""
CREATE FUNCTION prism_auth_attempt(
    p_keys bytea[], p_free integer[], p_base integer[], p_max integer[],
    p_skip_when_known boolean[], p_known bytea
) RETURNS integer {_DEFINER} AS $$
DECLARE
    v_known boolean;
    v_wait integer := 0;
    v_row auth_throttle;
BEGIN
    -- Rows are created and locked in the caller's order (always the same kinds in the same
    -- order), so concurrent attempts queue instead of deadlocking.
    FOR i IN 1 .. array_length(p_keys, 1) LOOP
        INSERT INTO auth_throttle (key) VALUES (p_keys[i]) ON CONFLICT (key) DO NOTHING;
    END LOOP;
    SELECT coalesce(last_success_at > now() - {KNOWN}, false) INTO v_known
    FROM auth_throttle WHERE key = p_known;
    FOR i IN 1 .. array_length(p_keys, 1) LOOP
        SELECT * INTO v_row FROM auth_throttle WHERE key = p_keys[i] FOR UPDATE;
        IF NOT (p_skip_when_known[i] AND coalesce(v_known, false))
           AND v_row.locked_until > now() THEN
            v_wait := greatest(v_wait, ceil(extract(epoch FROM v_row.locked_until - now()))::int);
        END IF;
    END LOOP;
    IF v_wait > 0 THEN
        RETURN v_wait;
    END IF;
    FOR i IN 1 .. array_length(p_keys, 1) LOOP
        UPDATE auth_throttle t SET
            failures = f.n,
            last_failure_at = now(),
            locked_until = CASE WHEN f.n > p_free[i] THEN now() + make_interval(
                secs => least(p_base[i] * power(2, least(f.n - p_free[i] - 1, 30)), p_max[i])
            ) END
        FROM (
            SELECT CASE WHEN last_failure_at > now() - {WINDOW} THEN failures ELSE 0 END + 1 AS n
            FROM auth_throttle WHERE key = p_keys[i]
        ) f
        WHERE t.key = p_keys[i];
    END LOOP;
    -- Forget stale rows now and then (a full pass over a small table).
    IF random() < 0.01 THEN
        DELETE FROM auth_throttle
        WHERE coalesce(last_success_at, '-infinity') < now() - {KNOWN}
          AND coalesce(last_failure_at, '-infinity') < now() - {WINDOW}
          AND coalesce(locked_until, '-infinity') < now();
    END IF;
    RETURN 0;
END $$"""

SUCCESS = f"""
CREATE FUNCTION prism_auth_success(p_reset bytea[], p_refund bytea[], p_known bytea)
RETURNS void {_DEFINER} AS $$
BEGIN
    UPDATE auth_throttle SET failures = 0, last_failure_at = NULL, locked_until = NULL
    WHERE key = ANY (p_reset);
    UPDATE auth_throttle SET failures = greatest(failures - 1, 0)
    WHERE key = ANY (p_refund);
    INSERT INTO auth_throttle (key, last_success_at) VALUES (p_known, now())
    ON CONFLICT (key) DO UPDATE SET last_success_at = now();
END $$"""

SIGNATURES = (
    "prism_auth_attempt(bytea[], integer[], integer[], integer[], boolean[], bytea)",
    "prism_auth_success(bytea[], bytea[], bytea)",
)


def upgrade() -> None:
    op.add_column("users", sa.Column("mfa_secret", sa.LargeBinary(), nullable=True))
    op.add_column("users", sa.Column("mfa_last_step", sa.BigInteger(), nullable=True))
    op.create_table(
        "mfa_backup_codes",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
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
            name=op.f("fk_mfa_backup_codes_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_mfa_backup_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_backup_codes")),
        sa.UniqueConstraint(
            "user_id", "code_hash", name=op.f("uq_mfa_backup_codes_user_id_code_hash")
        ),
    )
    enable_tenant_rls("mfa_backup_codes")
    # Not a tenant table and not granted to the app role: only the functions below touch it.
    op.create_table(
        "auth_throttle",
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_auth_throttle")),
    )
    op.execute(ATTEMPT)
    op.execute(SUCCESS)
    for signature in SIGNATURES:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def downgrade() -> None:
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.drop_table("auth_throttle")
    disable_tenant_rls("mfa_backup_codes")
    op.drop_table("mfa_backup_codes")
    op.drop_column("users", "mfa_last_step")
    op.drop_column("users", "mfa_secret")
