"""Job queue: claim, lease renewal and release functions for workers, a NOTIFY on every new
job (sent at commit, so a rolled-back change wakes nobody), an index for expired leases, and
per-job idempotency of analyses.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 18:31:12.708761
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from prism.db.migrations.rls import APP_ROLE

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEFINER = "SECURITY DEFINER SET search_path = public, pg_temp"
SIGNATURES = (
    "prism_claim_jobs(text, integer, integer)",
    "prism_renew_leases(text, uuid[], integer)",
    "prism_release_jobs(text, uuid[])",
)
FUNCTIONS = (
    f"""
    CREATE FUNCTION prism_claim_jobs(p_worker text, p_limit integer, p_lease_seconds integer)
    RETURNS SETOF jobs LANGUAGE sql {_DEFINER} AS $$
        WITH picked AS (
            SELECT id FROM jobs
            WHERE (state IN ('QUEUED', 'FAILED') AND run_at <= now())
               OR (state = 'RUNNING' AND locked_until < now())
            ORDER BY priority, run_at
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs j
        SET state = 'RUNNING', attempts = j.attempts + 1, locked_by = p_worker,
            locked_until = now() + make_interval(secs => p_lease_seconds),
            started_at = coalesce(j.started_at, now()), updated_at = now()
        FROM picked WHERE j.id = picked.id
        RETURNING j.*
    $$""",
    f"""
    CREATE FUNCTION prism_renew_leases(p_worker text, p_ids uuid[], p_lease_seconds integer)
    RETURNS integer LANGUAGE sql {_DEFINER} AS $$
        WITH renewed AS (
            UPDATE jobs SET locked_until = now() + make_interval(secs => p_lease_seconds)
            WHERE id = ANY(p_ids) AND locked_by = p_worker AND state = 'RUNNING'
            RETURNING 1
        )
        SELECT count(*)::integer FROM renewed
    $$""",
    f"""
    CREATE FUNCTION prism_release_jobs(p_worker text, p_ids uuid[])
    RETURNS integer LANGUAGE sql {_DEFINER} AS $$
        WITH released AS (
            UPDATE jobs SET state = 'QUEUED', locked_by = NULL, locked_until = NULL,
                attempts = greatest(attempts - 1, 0), run_at = now(), updated_at = now()
            WHERE id = ANY(p_ids) AND locked_by = p_worker AND state = 'RUNNING'
            RETURNING 1
        )
        SELECT count(*)::integer FROM released
    $$""",
    """
    CREATE FUNCTION prism_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('prism_jobs', '');
        RETURN NULL;
    END $$""",
    """
    CREATE TRIGGER jobs_notify AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION prism_jobs_notify()""",
    *[f"REVOKE ALL ON FUNCTION {sig} FROM PUBLIC" for sig in SIGNATURES],
    *[f"GRANT EXECUTE ON FUNCTION {sig} TO {APP_ROLE}" for sig in SIGNATURES],
)


def upgrade() -> None:
    op.add_column("analysis_results", sa.Column("job_id", sa.UUID(), nullable=True))
    op.create_unique_constraint(
        op.f("uq_analysis_results_section_id_job_id"), "analysis_results", ["section_id", "job_id"]
    )
    op.create_index(
        "ix_jobs_leases", "jobs", ["locked_until"], postgresql_where=sa.text("state = 'RUNNING'")
    )
    for statement in FUNCTIONS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify ON jobs")
    op.execute("DROP FUNCTION IF EXISTS prism_jobs_notify()")
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.drop_index("ix_jobs_leases", table_name="jobs")
    op.drop_constraint(
        op.f("uq_analysis_results_section_id_job_id"), "analysis_results", type_="unique"
    )
    op.drop_column("analysis_results", "job_id")
