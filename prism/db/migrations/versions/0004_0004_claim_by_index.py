"""Claim jobs with two index scans instead of one sort of every runnable job: the OR of
"runnable" and "lease expired" ruled out both partial indexes (a claim took 29 ms at 100,000
queued jobs; each branch alone takes well under 1 ms).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 20:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HEAD = """
CREATE OR REPLACE FUNCTION prism_claim_jobs(p_worker text, p_limit integer, p_lease_seconds integer)
RETURNS SETOF jobs LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
"""
_CLAIM = """
    UPDATE jobs j
    SET state = 'RUNNING', attempts = j.attempts + 1, locked_by = p_worker,
        locked_until = now() + make_interval(secs => p_lease_seconds),
        started_at = coalesce(j.started_at, now()), updated_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.*
$$"""

NEW = (
    _HEAD
    + """
    WITH expired AS (
        SELECT id FROM jobs
        WHERE state = 'RUNNING' AND locked_until < now()
        ORDER BY locked_until LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), runnable AS (
        SELECT id FROM jobs
        WHERE state IN ('QUEUED', 'FAILED') AND run_at <= now()
        ORDER BY priority, run_at LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT id FROM expired UNION ALL SELECT id FROM runnable LIMIT p_limit
    )"""
    + _CLAIM
)

OLD = (
    _HEAD
    + """
    WITH picked AS (
        SELECT id FROM jobs
        WHERE (state IN ('QUEUED', 'FAILED') AND run_at <= now())
           OR (state = 'RUNNING' AND locked_until < now())
        ORDER BY priority, run_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )"""
    + _CLAIM
)


def upgrade() -> None:
    op.execute(NEW)


def downgrade() -> None:
    op.execute(OLD)
