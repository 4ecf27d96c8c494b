"""The outbox: every organization's events (CloudEvents), numbered in commit order, written in
the transaction of the change they describe, and read by consumers with a cursor each.

``audit_chain_heads.outbox_sequence`` numbers an organization's events (the head row every
writer of the organization already locks); ``outbox_events`` holds them (row-level security
like every tenant table) and notifies ``prism_outbox`` with the organization id at commit;
``outbox_cursors`` is how far each consumer got per organization, ``outbox_consumers`` the
consumers that hold back pruning. SECURITY DEFINER functions let a consumer see which
organizations have events for it, its lag, the activity figures of its metrics snapshots, and
prune what every consumer has passed, without reading any organization's rows.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from prism.db.migrations.rls import APP_ROLE, disable_tenant_rls, enable_tenant_rls

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEFINER = "SECURITY DEFINER SET search_path = public, pg_temp"
SIGNATURES = (
    "prism_outbox_pending(text, integer)",
    "prism_outbox_lag(text)",
    "prism_outbox_prune(timestamptz, integer)",
    "prism_outbox_forget(text)",
    "prism_outbox_activity(timestamptz)",
)
FUNCTIONS = (
    f"""
    CREATE FUNCTION prism_outbox_pending(p_consumer text, p_limit integer)
    RETURNS TABLE (organization_id uuid, last_sequence bigint, head_sequence bigint)
    LANGUAGE sql STABLE {_DEFINER} AS $$
        SELECT h.organization_id, coalesce(c.last_sequence, 0), h.outbox_sequence
        FROM audit_chain_heads h
        LEFT JOIN outbox_cursors c
            ON c.consumer = p_consumer AND c.organization_id = h.organization_id
        WHERE h.outbox_sequence > coalesce(c.last_sequence, 0)
        -- the least recently served first: no organization waits behind busier ones
        ORDER BY c.updated_at NULLS FIRST
        LIMIT p_limit
    $$""",
    f"""
    CREATE FUNCTION prism_outbox_lag(p_consumer text)
    RETURNS TABLE (events bigint, oldest timestamptz)
    LANGUAGE sql STABLE {_DEFINER} AS $$
        WITH behind AS (
            SELECT h.organization_id, coalesce(c.last_sequence, 0) AS done,
                   h.outbox_sequence AS head
            FROM audit_chain_heads h
            LEFT JOIN outbox_cursors c
                ON c.consumer = p_consumer AND c.organization_id = h.organization_id
            WHERE h.outbox_sequence > coalesce(c.last_sequence, 0)
        )
        SELECT coalesce(sum(b.head - b.done), 0)::bigint,
               (SELECT min(e.created_at) FROM behind b2
                JOIN LATERAL (
                    SELECT created_at FROM outbox_events e
                    WHERE e.organization_id = b2.organization_id AND e.sequence > b2.done
                    ORDER BY e.sequence LIMIT 1
                ) e ON true)
        FROM behind b
    $$""",
    f"""
    CREATE FUNCTION prism_outbox_prune(p_before timestamptz, p_limit integer)
    RETURNS integer LANGUAGE sql {_DEFINER} AS $$
        WITH doomed AS (
            SELECT e.organization_id, e.sequence FROM outbox_events e
            WHERE e.created_at < p_before
              AND NOT EXISTS (
                  SELECT 1 FROM outbox_consumers k
                  LEFT JOIN outbox_cursors c
                      ON c.consumer = k.name AND c.organization_id = e.organization_id
                  WHERE coalesce(c.last_sequence, 0) < e.sequence)
            ORDER BY e.created_at
            LIMIT p_limit
        ), deleted AS (
            DELETE FROM outbox_events e USING doomed d
            WHERE e.organization_id = d.organization_id AND e.sequence = d.sequence
            RETURNING 1
        )
        SELECT count(*)::integer FROM deleted
    $$""",
    f"""
    CREATE FUNCTION prism_outbox_forget(p_consumer text)
    RETURNS boolean LANGUAGE sql {_DEFINER} AS $$
        WITH cursors AS (DELETE FROM outbox_cursors WHERE consumer = p_consumer),
        gone AS (DELETE FROM outbox_consumers WHERE name = p_consumer RETURNING 1)
        SELECT count(*) > 0 FROM gone
    $$""",
    f"""
    CREATE FUNCTION prism_outbox_activity(p_since timestamptz)
    RETURNS TABLE (organization_id uuid, jobs jsonb, analyses bigint, documents bigint,
                   seconds_avg double precision, seconds_p95 double precision,
                   tokens bigint, cost_usd numeric)
    LANGUAGE sql STABLE {_DEFINER} AS $$
        WITH queue AS (
            SELECT q.organization_id, jsonb_object_agg(q.kind, q.states) AS jobs
            FROM (
                SELECT j.organization_id, j.kind,
                       jsonb_object_agg(j.state, j.jobs) AS states
                FROM (
                    SELECT organization_id, kind, state::text AS state, count(*) AS jobs
                    FROM jobs WHERE state <> 'SUCCEEDED'
                    GROUP BY organization_id, kind, state
                ) j
                GROUP BY j.organization_id, j.kind
            ) q
            GROUP BY q.organization_id
        ), work AS (
            SELECT a.organization_id, count(*) AS analyses,
                   count(DISTINCT a.document_id) AS documents,
                   avg(a.duration_seconds) AS seconds_avg,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_seconds)
                       AS seconds_p95,
                   sum(a.tokens_used)::bigint AS tokens, sum(a.cost_usd) AS cost_usd
            FROM analysis_results a
            WHERE a.created_at >= p_since
            GROUP BY a.organization_id
        )
        SELECT coalesce(q.organization_id, w.organization_id), coalesce(q.jobs, '{{}}'::jsonb),
               coalesce(w.analyses, 0), coalesce(w.documents, 0), w.seconds_avg,
               w.seconds_p95, coalesce(w.tokens, 0), coalesce(w.cost_usd, 0)
        FROM queue q FULL JOIN work w ON w.organization_id = q.organization_id
    $$""",
    """
    CREATE FUNCTION prism_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        org uuid;
    BEGIN
        FOR org IN SELECT DISTINCT organization_id FROM inserted LOOP
            PERFORM pg_notify('prism_outbox', org::text);
        END LOOP;
        RETURN NULL;
    END $$""",
    """
    CREATE TRIGGER outbox_events_notify AFTER INSERT ON outbox_events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION prism_outbox_notify()""",
    *[f"REVOKE ALL ON FUNCTION {sig} FROM PUBLIC" for sig in SIGNATURES],
    *[f"GRANT EXECUTE ON FUNCTION {sig} TO {APP_ROLE}" for sig in SIGNATURES],
)


def upgrade() -> None:
    op.add_column(
        "audit_chain_heads",
        sa.Column("outbox_sequence", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "outbox_events",
        sa.Column("organization_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("topic", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column(
            "classification",
            sa.Enum(
                "PUBLIC",
                "INTERNAL",
                "CONFIDENTIAL",
                "RESTRICTED",
                name="classification",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("department", sa.String(length=100), nullable=True),
        sa.Column("event", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_outbox_events_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "sequence", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("id", name=op.f("uq_outbox_events_id")),
    )
    op.create_index(op.f("ix_outbox_events_created_at"), "outbox_events", ["created_at"])
    op.create_table(
        "outbox_cursors",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("organization_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_outbox_cursors_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("consumer", "organization_id", name=op.f("pk_outbox_cursors")),
    )
    op.create_table(
        "outbox_consumers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "registered_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_outbox_consumers")),
    )
    # Events are written and read, never changed: the app may not UPDATE them (pruning is the
    # SECURITY DEFINER function's).
    enable_tenant_rls("outbox_events", grants="SELECT, INSERT")
    enable_tenant_rls("outbox_cursors", grants="SELECT, INSERT, UPDATE")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON outbox_consumers TO {APP_ROLE}")
    for statement in FUNCTIONS:
        op.execute(statement)


def downgrade() -> None:
    for sig in SIGNATURES:
        op.execute(f"DROP FUNCTION {sig}")
    op.execute("DROP TRIGGER outbox_events_notify ON outbox_events")
    op.execute("DROP FUNCTION prism_outbox_notify()")
    op.execute(f"REVOKE ALL ON outbox_consumers FROM {APP_ROLE}")
    disable_tenant_rls("outbox_cursors")
    disable_tenant_rls("outbox_events")
    op.drop_table("outbox_consumers")
    op.drop_table("outbox_cursors")
    op.drop_index(op.f("ix_outbox_events_created_at"), table_name="outbox_events")
    op.drop_table("outbox_events")
    op.drop_column("audit_chain_heads", "outbox_sequence")
