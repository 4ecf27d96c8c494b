"""The envelope of a planned answer: the statement's JSON text as PostgreSQL wrote it, whether
the root fields that must exist do, and how many objects the answer holds (what the rate
limit refunds against), so that the server neither parses the JSON nor walks it."""

from __future__ import annotations

import re

import sqlalchemy as sa

# GraphQL names, the only thing written into the SQL besides fixed text.
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
_ENVELOPES: dict[tuple[str, tuple[str, ...]], sa.TextClause] = {}
CACHE_SIZE = 1024
# Objects at every level of the answer (arrays are walked, not counted), the root excluded.
_COUNT = (
    "(SELECT count(*) FROM jsonb_path_query(b.j, 'strict $.**') AS v "
    "WHERE jsonb_typeof(v) = 'object') - 1"
)
_JSONB = "LATERAL (SELECT q.t::jsonb AS j) AS b"


def enveloped(statement: sa.TextClause, must_exist: tuple[str, ...]) -> sa.TextClause:
    """``statement`` (one row, one JSON object as text) as (its text, whether every key of
    ``must_exist`` is there and not null, the number of objects below the root)."""
    key = (statement.text, must_exist)
    found = _ENVELOPES.get(key)
    if found is not None:
        return found
    for name in must_exist:
        if _NAME.fullmatch(name) is None:
            raise ValueError(f"not a GraphQL name: {name!r}")
    exists = " AND ".join(f"(b.j -> '{name}') <> 'null'::jsonb" for name in must_exist)
    # Only checked GraphQL names and the planner's own statement are written into the text.
    text = f"SELECT q.t, {exists or 'true'}, {_COUNT} FROM ({statement.text}) AS q(t), {_JSONB}"  # noqa: S608
    found = sa.text(text)
    if len(_ENVELOPES) >= CACHE_SIZE:
        del _ENVELOPES[next(iter(_ENVELOPES))]
    _ENVELOPES[key] = found
    return found
