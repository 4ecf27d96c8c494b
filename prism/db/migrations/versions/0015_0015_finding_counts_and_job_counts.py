"""Findings are counted from a column that is never sealed, and jobs are counted by state.

- ``analysis_results.finding_count``: how many findings an analysis has. A RESTRICTED
  document's findings are sealed (``feedback_items`` holds ``[]``), so counting the JSON
  undercounts them; the count is stored beside it instead. A BEFORE trigger keeps it equal to
  the JSON's length whenever the findings are in clear, and keeps the stored count when they
  are sealed (the writer gives it: ``prism.jobs.pipeline.store_analysis``). Existing clear
  rows are backfilled here (their UPDATE marks their BI day slices stale, so the rollups are
  recomputed by the next ``bi.refresh``); existing sealed rows can only be counted with the
  organization's data key, so a ``bi.count_findings`` job is queued per organization that has
  any (``prism.jobs.bi``): NULL until it has run.
- ``prism_job_counts()``: jobs not SUCCEEDED by state and kind, over every organization, for
  the ``prism_jobs`` gauge on /metrics (the app role sees no job outside a tenant transaction);
  a partial index keeps it to the unfinished and dead jobs, however many have succeeded.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from prism.db.migrations.rls import APP_ROLE

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNT_FINDINGS_JOB = "bi.count_findings"

FINDING_COUNT = """
CREATE FUNCTION prism_finding_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.sealed IS NULL THEN
        NEW.finding_count := jsonb_array_length(NEW.feedback_items);
    END IF;
    RETURN NEW;
END $$"""

JOB_COUNTS_SIGNATURE = "prism_job_counts()"
JOB_COUNTS = f"""
CREATE FUNCTION {JOB_COUNTS_SIGNATURE}
RETURNS TABLE (state text, kind text, jobs bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT state::text, kind, count(*) FROM jobs WHERE state <> 'SUCCEEDED' GROUP BY 1, 2
$$"""


def upgrade() -> None:
    op.add_column("analysis_results", sa.Column("finding_count", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_analysis_results_finding_count_nonnegative"),
        "analysis_results",
        "finding_count IS NULL OR finding_count >= 0",
    )
    op.execute(FINDING_COUNT)
    op.execute(
        "CREATE TRIGGER finding_count BEFORE INSERT OR UPDATE ON analysis_results "
        "FOR EACH ROW EXECUTE FUNCTION prism_finding_count()"
    )
    # Clear rows: the trigger sets the count (and the BI triggers mark their day slices).
    op.execute("UPDATE analysis_results SET finding_count = 0 WHERE sealed IS NULL")
    # Sealed rows: counted by a job that can open them.
    op.execute(
        f"""
        INSERT INTO jobs (id, organization_id, kind, payload, state, priority, attempts,
                          max_attempts, run_at, created_at, updated_at)
        SELECT gen_random_uuid(), organization_id, '{COUNT_FINDINGS_JOB}', '{{}}'::jsonb,
               'QUEUED', 0, 0, 5, now(), now(), now()
        FROM analysis_results WHERE sealed IS NOT NULL AND finding_count IS NULL
        GROUP BY organization_id
        """
    )
    op.create_index(
        "ix_jobs_unfinished",
        "jobs",
        ["state", "kind"],
        postgresql_where=sa.text("state <> 'SUCCEEDED'"),
    )
    op.execute(JOB_COUNTS)
    op.execute(f"REVOKE ALL ON FUNCTION {JOB_COUNTS_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {JOB_COUNTS_SIGNATURE} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {JOB_COUNTS_SIGNATURE}")
    op.drop_index("ix_jobs_unfinished", table_name="jobs")
    op.execute(f"DELETE FROM jobs WHERE kind = '{COUNT_FINDINGS_JOB}'")
    op.execute("DROP TRIGGER IF EXISTS finding_count ON analysis_results")
    op.execute("DROP FUNCTION IF EXISTS prism_finding_count()")
    op.drop_constraint(
        op.f("ck_analysis_results_finding_count_nonnegative"), "analysis_results", type_="check"
    )
    op.drop_column("analysis_results", "finding_count")
