"""Stored addresses have their domain in its one spelling (``prism.models.addresses``).

Before, ``user@acme.test.`` (trailing dot), ``user@acme。test`` (ideographic full stop) or an
internationalized domain in Unicode were stored as written, so the domain checks, which
compare ``lower(…)`` of the stored text, took them for domains of their own. Each such
address is rewritten to its canonical form here; an address whose canonical form is already
another user's is not merged silently: the migration stops and names them. Addresses that are
not valid at all are left as they are (they sign in only as written, and no domain claim
matches them). Organizations' domains were always stored lowercase ASCII host names.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 02:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from prism.models.addresses import canonical_email

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Domains already canonical: lowercase-insensitive ASCII letters, digits, '-' and inner dots.
_PLAIN_DOMAIN = r"@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT id, email FROM users WHERE email !~ :plain"), {"plain": _PLAIN_DOMAIN}
    ).all()
    changes = {
        row.id: canonical
        for row in rows
        if (canonical := canonical_email(row.email)) is not None and canonical != row.email
    }
    if not changes:
        return
    taken = (
        bind.execute(
            sa.text("SELECT lower(email) FROM users WHERE lower(email) = ANY(:emails)"),
            {"emails": [email.lower() for email in changes.values()]},
        )
        .scalars()
        .all()
    )
    wanted = [email.lower() for email in changes.values()]
    clashes = sorted(set(taken) | {e for e in wanted if wanted.count(e) > 1})
    if clashes:
        raise RuntimeError(
            "These addresses are held twice, under two spellings of the same domain: "
            f"{', '.join(clashes)}. Rename or erase one of each and migrate again."
        )
    for user_id, email in changes.items():
        bind.execute(
            sa.text("UPDATE users SET email = :email WHERE id = :id"),
            {"email": email, "id": user_id},
        )


def downgrade() -> None:
    """The old spellings are not kept: the canonical addresses stay."""
