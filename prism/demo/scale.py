"""A realistic multi-organization corpus at scale (`prism demo --scale N`, `bench/bi.py`): N
documents with sections, AI analyses, reviewer feedback with its approval workflow, and the
audit trail of it all, spread over the last ``days`` days with office-hours rhythm.

Rows are written with COPY (asyncpg ``copy_records_to_table``) as the database owner: COPY is
not available under row-level security, and row-by-row inserts would take hours at this size.
Each organization is written in one transaction and is complete: its own users, documents
uploaded by them, and an audit trail that is a valid hash chain (``verifyAuditChain`` passes),
starting with the organization's creation. The BI triggers fire as for any write, so the
rollups are built by the usual refresh afterwards. What the data is drawn from is in
``prism.demo.draws``; the rows of one document are made by ``prism.demo.rows``.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import orjson

from prism.db.engine import url_for_asyncpg
from prism.demo.draws import MODEL_MIXES, NAMES, Event, Generator, Person
from prism.demo.rows import (
    ANALYSIS_COLUMNS,
    AUDIT_COLUMNS,
    DOCUMENT_COLUMNS,
    FEEDBACK_COLUMNS,
    SECTION_COLUMNS,
    document_rows,
)
from prism.models.audit import canonical_form
from prism.models.enums import Role

TABLES = ("documents", "document_sections", "analysis_results", "user_feedback", "audit_logs")
CHUNK = 20_000


@dataclass
class ScaleResult:
    organizations: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    seconds: float = 0.0


Advance = Callable[[str, int], None]


def _chain(events: list[Event]) -> list[tuple[Any, ...]]:
    """Order events as verifyAuditChain reads them and link each to the one before."""
    events.sort(key=lambda e: (e.created_at, e.id))
    previous: str | None = None
    rows = []
    for e in events:
        e.prev_hash = previous
        # canonical_form reads attributes only; Event carries the same ones as AuditEvent.
        digest = hashlib.sha256(canonical_form(cast(Any, e))).hexdigest()
        rows.append(
            (
                e.id,
                e.created_at,
                e.organization_id,
                e.actor_id,
                e.event_type,
                e.category,
                e.description,
                e.resource_type,
                e.resource_id,
                orjson.dumps(e.after).decode() if e.after is not None else None,
                e.user_agent,
                e.classification.value if e.classification else None,
                e.department,
                previous,
                digest,
            )
        )
        previous = digest
    return rows


async def _copy(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    advance: Advance,
) -> None:
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        await conn.copy_records_to_table(table, records=chunk, columns=list(columns))
        advance(table, len(chunk))


def organization_sizes(documents: int, rng: random.Random) -> list[int]:
    """A few large organizations and a tail of small ones (Zipf-like), summing to
    ``documents``."""
    count = min(len(NAMES), max(3, round(math.log10(max(documents, 10)) * 1.5)))
    weights = [1 / (i + 1) ** 0.9 for i in range(count)]
    rng.shuffle(weights)
    sizes = [int(documents * w / sum(weights)) for w in weights]
    sizes[0] += documents - sum(sizes)
    return sorted(sizes, reverse=True)


async def generate(
    owner_url: str,
    *,
    documents: int,
    password_hash: str,
    days: int = 365,
    seed: int = 1,
    advance: Advance | None = None,
    planned: Callable[[str, int], None] | None = None,
) -> ScaleResult:
    """Write ``documents`` documents (with everything that hangs off them) into new
    organizations. ``planned(table, rows)`` is told the expected rows of a table as soon as
    they are known; ``advance(table, rows)`` each time rows are written."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not secrets
    now = datetime.now(UTC).replace(microsecond=0)
    gen = Generator(rng, now, days, password_hash)
    result = ScaleResult()
    clock = time.perf_counter()

    def step(table: str, rows: int) -> None:
        result.rows[table] += rows
        if advance is not None:
            advance(table, rows)

    sizes = organization_sizes(documents, rng)
    plans = [[rng.randint(2, 18) for _ in range(size)] for size in sizes]
    if planned is not None:
        planned("documents", documents)
        planned("document_sections", sum(sum(p) for p in plans))
    conn = await asyncpg.connect(url_for_asyncpg(owner_url))
    try:
        suffix = uuid.uuid4().hex[:6]  # names are unique per database
        for index, plan in enumerate(plans):
            name = f"{NAMES[index]} ({suffix})"
            async with conn.transaction():
                org_id, admin = await _organization(conn, gen, name, suffix, plan, step)
            result.organizations.append((org_id, name, admin))
        # Fresh statistics: planned on the empty tables' estimates, the first queries (and the
        # first BI refresh) would join whole organizations instead of scanning index ranges.
        await conn.execute(f"ANALYZE users, {', '.join(TABLES)}, bi_invalidations")
    finally:
        await conn.close()
    result.seconds = time.perf_counter() - clock
    return result


async def _organization(
    conn: asyncpg.Connection,
    gen: Generator,
    name: str,
    suffix: str,
    plan: list[int],
    step: Advance,
) -> tuple[uuid.UUID, str]:
    rng, now = gen.rng, gen.now
    org_id = gen.new_id()
    born = now - timedelta(days=gen.days + 1)
    slug = f"{name.split(' (')[0].lower().replace(' ', '-')}-{suffix}"
    await conn.execute(
        "INSERT INTO organizations (id, name, domain, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $4)",
        org_id,
        name,
        f"{slug}.example",
        born,
    )
    events = [
        Event(
            gen.new_id(),
            born,
            org_id,
            None,
            "organization.create",
            "administration",
            f"Organization {name!r} created",
            "Organization",
            org_id,
            {"name": name},
        )
    ]
    people = gen.people(org_id, slug, min(400, max(10, len(plan) // 120)))
    joined = born + timedelta(minutes=5)
    await conn.copy_records_to_table(
        "users",
        records=[
            (
                p.id,
                org_id,
                p.email,
                gen.password_hash,
                p.first_name,
                p.last_name,
                p.role.value,
                p.department,
                p.clearance.value,
                True,
                False,
                joined,
                joined,
            )
            for p in people
        ],
        columns=[
            "id",
            "organization_id",
            "email",
            "password_hash",
            "first_name",
            "last_name",
            "role",
            "department",
            "clearance",
            "is_active",
            "mfa_enabled",
            "created_at",
            "updated_at",
        ],
    )
    for p in people:
        events.append(
            Event(
                gen.new_id(),
                joined,
                org_id,
                None,
                "user.create",
                "user_management",
                f"User {p.email} created",
                "User",
                p.id,
                {"email": p.email, "role": p.role.value},
            )
        )
    uploaders = [p for p in people if p.role in (Role.REVIEWER, Role.APPROVER, Role.ADMIN)]
    reviewers = [p for p in people if p.role in (Role.REVIEWER, Role.APPROVER)]
    approvers = [p for p in people if p.role in (Role.APPROVER, Role.ADMIN)]
    mix = MODEL_MIXES[rng.randrange(len(MODEL_MIXES))]
    logins: dict[tuple[uuid.UUID, Any], datetime] = {}

    def acted(person: Person, moment: datetime) -> None:
        key = (person.id, moment.date())
        if key not in logins or moment < logins[key]:
            logins[key] = moment

    for start in range(0, len(plan), 2_000):
        batch = plan[start : start + 2_000]
        rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES[:4]}
        for sections in batch:
            document_rows(
                gen, org_id, sections, mix, uploaders, reviewers, approvers, rows, events, acted
            )
        await _copy(conn, "documents", DOCUMENT_COLUMNS, rows["documents"], step)
        await _copy(conn, "document_sections", SECTION_COLUMNS, rows["document_sections"], step)
        await _copy(conn, "analysis_results", ANALYSIS_COLUMNS, rows["analysis_results"], step)
        await _copy(conn, "user_feedback", FEEDBACK_COLUMNS, rows["user_feedback"], step)
    for (user_id, _), first_action in logins.items():
        at = max(first_action - timedelta(minutes=rng.randint(1, 30)), joined)
        events.append(
            Event(gen.new_id(), at, org_id, user_id, "auth.login", "authentication", "Signed in")
        )
    chained = _chain(events)
    await _copy(conn, "audit_logs", AUDIT_COLUMNS, chained, step)
    last = chained[-1]
    await conn.execute(
        "INSERT INTO audit_chain_heads (organization_id, last_hash, last_event_id, events)"
        " VALUES ($1, $2, $3, $4)",
        org_id,
        last[-1],
        last[0],
        len(chained),
    )
    admin = next(p for p in people if p.role is Role.ADMIN)
    return org_id, admin.email


def totals(rows: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{count:,} {table}" for table, count in rows)
