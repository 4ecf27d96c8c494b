"""The job queue's figures for metrics gain the age of each state's oldest job.

``prism_job_queue()``: jobs not SUCCEEDED by state and kind over every organization (as
``prism_job_counts()``, which it replaces), with the seconds since the oldest of them became
what it is: runnable (QUEUED, FAILED: its ``run_at``, not before now), started (RUNNING) or
given up (DEAD). A SECURITY DEFINER function: any transaction may count, none sees a row.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 09:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from prism.db.migrations.rls import APP_ROLE

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "prism_job_queue()"
QUEUE = f"""
CREATE FUNCTION {SIGNATURE}
RETURNS TABLE (state text, kind text, jobs bigint, oldest_seconds double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT state::text, kind, count(*),
           extract(epoch FROM now() - min(
               CASE WHEN state IN ('QUEUED', 'FAILED') THEN least(run_at, now())
                    WHEN state = 'RUNNING' THEN coalesce(started_at, updated_at)
                    ELSE updated_at END))::double precision
    FROM jobs WHERE state <> 'SUCCEEDED' GROUP BY 1, 2
$$"""
COUNTS_SIGNATURE = "prism_job_counts()"
COUNTS = f"""
CREATE FUNCTION {COUNTS_SIGNATURE}
RETURNS TABLE (state text, kind text, jobs bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT state::text, kind, count(*) FROM jobs WHERE state <> 'SUCCEEDED' GROUP BY 1, 2
$$"""


def _grant(signature: str) -> None:
    op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def upgrade() -> None:
    op.execute(QUEUE)
    _grant(SIGNATURE)
    op.execute(f"DROP FUNCTION {COUNTS_SIGNATURE}")


def downgrade() -> None:
    op.execute(COUNTS)
    _grant(COUNTS_SIGNATURE)
    op.execute(f"DROP FUNCTION {SIGNATURE}")
