"""Organizations own their e-mail domain: one organization per domain, and two narrow lookups
for operators (which organization owns a domain; whether another has users in it).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from prism.db.migrations.rls import APP_ROLE

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEFINER = "LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp STABLE"
FUNCTIONS = (
    f"""
    CREATE FUNCTION prism_domain_owner(p_domain text) RETURNS uuid {_DEFINER} AS $$
        SELECT id FROM organizations WHERE lower(domain) = lower(p_domain)
    $$""",
    f"""
    CREATE FUNCTION prism_domain_used_elsewhere(p_domain text, p_organization uuid)
    RETURNS boolean {_DEFINER} AS $$
        SELECT EXISTS (
            SELECT 1 FROM users
            WHERE organization_id <> p_organization
              AND lower(substring(email FROM '@([^@]*)$')) = lower(p_domain)
        )
    $$""",
)
SIGNATURES = ("prism_domain_owner(text)", "prism_domain_used_elsewhere(text, uuid)")


def upgrade() -> None:
    shared = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT lower(domain) FROM organizations WHERE domain IS NOT NULL"
                " GROUP BY 1 HAVING count(*) > 1"
            )
        )
        .scalars()
        .all()
    )
    if shared:
        raise RuntimeError(
            "Each e-mail domain belongs to one organization; these are set on several: "
            f"{', '.join(shared)}. Clear all but one (organizations.domain) and migrate again."
        )
    op.create_index(
        "uq_organizations_domain",
        "organizations",
        [sa.literal_column("lower(domain)")],
        unique=True,
    )
    for function in FUNCTIONS:
        op.execute(function)
    for signature in SIGNATURES:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def downgrade() -> None:
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.drop_index("uq_organizations_domain", table_name="organizations")
