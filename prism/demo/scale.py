"""A realistic multi-organization corpus at scale (`prism demo --scale N`, `bench/bi.py`): N
documents with sections, AI analyses, reviewer feedback with its approval workflow, and the
audit trail of it all, spread over the last ``days`` days with office-hours rhythm.

Rows are written with COPY (asyncpg ``copy_records_to_table``) as the database owner: COPY is
not available under row-level security, and row-by-row inserts would take hours at this size.
Each organization is written in one transaction and is complete: its own users, documents
uploaded by them, and an audit trail that is a valid hash chain (``verifyAuditChain`` passes),
starting with the organization's creation. The BI triggers fire as for any write, so the
rollups are built by the usual refresh afterwards.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import asyncpg
import orjson

from prism.db.engine import url_for_asyncpg
from prism.models.audit import canonical_form
from prism.models.enums import (
    Classification,
    DocumentType,
    FeedbackAction,
    ProcessingStatus,
    RiskLevel,
    Role,
    WorkflowStatus,
)

NAMES = (
    "Initech",
    "Vandelay Industries",
    "Hooli",
    "Soylent Foods",
    "Tyrell Legal",
    "Stark Advisory",
    "Wayne Holdings",
    "Cyberdyne Systems",
    "Wonka Confectionery",
    "Umbrella Pharma",
)
FIRST = ("Ada", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kim")
LAST = ("Adler", "Brook", "Costa", "Dietz", "Evans", "Fujita", "Gomez", "Haas", "Ito", "Jones")
DEPARTMENTS = ("legal", "finance", "hr", "engineering", "sales", "compliance")
CATEGORIES = (
    "LIABILITY",
    "INDEMNITY",
    "TERM",
    "TERMINATION",
    "PRIVACY",
    "CLARITY",
    "COMPLIANCE",
    "READABILITY",
)
HEADINGS = (
    "Definitions",
    "Term",
    "Fees",
    "Liability",
    "Indemnity",
    "Termination",
    "Data protection",
    "Confidentiality",
    "Governing law",
    "Service levels",
)
SENTENCES = (
    "The Supplier shall deliver the Services in accordance with the agreed service levels.",
    "Either party may terminate this Agreement on ninety days' written notice.",
    "The Customer shall pay each invoice within thirty days of receipt.",
    "Neither party shall disclose Confidential Information to any third party.",
    "This Agreement shall automatically renew for successive one-year terms.",
)


@dataclass(frozen=True)
class Model:
    name: str
    version: str | None
    input_price_per_1k: Decimal
    output_price_per_1k: Decimal
    seconds: tuple[float, float]


RULES = Model("prism-rules", "1.0", Decimal(0), Decimal(0), (0.002, 0.03))
HAIKU = Model(
    "anthropic.claude-3-5-haiku-20241022-v1:0", None, Decimal("0.0008"), Decimal("0.004"), (1, 9)
)
SONNET = Model(
    "anthropic.claude-3-5-sonnet-20241022-v2:0", None, Decimal("0.003"), Decimal("0.015"), (3, 25)
)
MODEL_MIXES = ((RULES, HAIKU), (HAIKU, SONNET), (RULES, HAIKU, SONNET), (HAIKU,))

C = Classification
CLASSIFICATIONS = ((C.PUBLIC, 15), (C.INTERNAL, 45), (C.CONFIDENTIAL, 28), (C.RESTRICTED, 12))
DOCUMENT_TYPES = tuple((t, w) for t, w in zip(DocumentType, (10, 40, 15, 20, 10, 5), strict=True))
ACTIONS = (
    (FeedbackAction.ACCEPTED, 55),
    (FeedbackAction.REJECTED, 20),
    (FeedbackAction.MODIFIED, 15),
    (FeedbackAction.CUSTOM, 10),
)
RATINGS = ((None, 35), (1, 3), (2, 5), (3, 14), (4, 25), (5, 18))
RISKS = ((RiskLevel.LOW, 55), (RiskLevel.MEDIUM, 30), (RiskLevel.HIGH, 15))
ROLES = ((Role.REVIEWER, 62), (Role.APPROVER, 10), (Role.AUDITOR, 5), (Role.VIEWER, 23))
ITEMS_PER_ANALYSIS = ((0, 30), (1, 35), (2, 20), (3, 10), (4, 5))

DOCUMENT_COLUMNS = (
    "id",
    "organization_id",
    "uploaded_by",
    "department",
    "filename",
    "mime_type",
    "file_size",
    "sha256",
    "document_type",
    "classification",
    "language_code",
    "word_count",
    "page_count",
    "processing_status",
    "processing_error",
    "legal_hold",
    "retention_expires_at",
    "storage_tier",
    "total_sections",
    "total_feedback_items",
    "risk_level",
    "confidence",
    "cost_usd",
    "model_used",
    "created_at",
    "updated_at",
    "deleted_at",
)
SECTION_COLUMNS = (
    "id",
    "organization_id",
    "document_id",
    "ord",
    "name",
    "content",
    "word_count",
    "created_at",
)
ANALYSIS_COLUMNS = (
    "id",
    "organization_id",
    "document_id",
    "section_id",
    "model",
    "model_version",
    "started_at",
    "completed_at",
    "duration_seconds",
    "risk_level",
    "confidence",
    "tokens_used",
    "cost_usd",
    "feedback_items",
    "job_id",
    "created_at",
)
FEEDBACK_COLUMNS = (
    "id",
    "organization_id",
    "document_id",
    "section_id",
    "analysis_id",
    "user_id",
    "item_id",
    "action",
    "category",
    "rating",
    "custom_text",
    "workflow_status",
    "approved_by",
    "approved_at",
    "created_at",
    "updated_at",
)
AUDIT_COLUMNS = (
    "id",
    "created_at",
    "organization_id",
    "actor_id",
    "event_type",
    "category",
    "description",
    "resource_type",
    "resource_id",
    "after",
    "user_agent",
    "classification",
    "department",
    "prev_hash",
    "hash",
)
TABLES = ("documents", "document_sections", "analysis_results", "user_feedback", "audit_logs")
CHUNK = 20_000


@dataclass
class Person:
    id: uuid.UUID
    email: str
    role: Role
    clearance: Classification
    department: str
    first_name: str
    last_name: str


@dataclass
class Event:
    """An audit event before it is chained (the attributes ``canonical_form`` reads)."""

    id: uuid.UUID
    created_at: datetime
    organization_id: uuid.UUID
    actor_id: uuid.UUID | None
    event_type: str
    category: str
    description: str
    resource_type: str | None = None
    resource_id: uuid.UUID | None = None
    after: dict[str, Any] | None = None
    classification: Classification | None = None
    department: str | None = None
    api_token_id: None = None
    before: None = None
    ip_address: None = None
    user_agent: str = "prism-scale"
    request_id: None = None
    prev_hash: str | None = None


@dataclass
class ScaleResult:
    organizations: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    seconds: float = 0.0


Advance = Callable[[str, int], None]


_CUMULATIVE: dict[int, tuple[Sequence[tuple[Any, int]], list[Any], list[int]]] = {}


def _weighted(rng: random.Random, pairs: Sequence[tuple[Any, int]]) -> Any:
    """One of the values, by weight (cumulative weights cached per table of pairs)."""
    table = _CUMULATIVE.get(id(pairs))
    if table is None or table[0] is not pairs:
        values, running, total = [], [], 0
        for value, weight in pairs:
            total += weight
            values.append(value)
            running.append(total)
        table = _CUMULATIVE[id(pairs)] = (pairs, values, running)
    _, values, running = table
    return values[bisect.bisect_right(running, rng.random() * running[-1])]


class _Generator:
    def __init__(self, rng: random.Random, now: datetime, days: int, password_hash: str):
        self.rng, self.now, self.days, self.password_hash = rng, now, days, password_hash

    def new_id(self) -> uuid.UUID:
        # Random, not seeded: a second run into the same database must not collide.
        return uuid.uuid4()

    def office_moment(self, earliest: datetime) -> datetime:
        """A working-hours instant between ``earliest`` and an hour ago (weekends quieter)."""
        rng = self.rng
        latest = self.now - timedelta(hours=1)
        span_days = max((latest - earliest).days, 1)
        for _ in range(8):
            day = earliest.date() + timedelta(days=rng.randrange(span_days + 1))
            if day.weekday() >= 5 and rng.random() < 0.8:
                continue
            hour = min(max(rng.gauss(13, 2.6), 6), 21)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hour)
            if earliest <= moment <= latest:
                return moment
        return earliest + (latest - earliest) * rng.random()

    def people(self, org_id: uuid.UUID, slug: str, count: int) -> list[Person]:
        rng = self.rng
        roles = [Role.ADMIN, Role.APPROVER, Role.AUDITOR]
        roles += [_weighted(rng, ROLES) for _ in range(count - len(roles))]
        people = []
        for n, role in enumerate(roles):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            if role is Role.ADMIN:
                clearance = C.RESTRICTED
            elif role is Role.VIEWER:
                clearance = C.INTERNAL
            else:
                clearance = C.RESTRICTED if rng.random() < 0.15 else C.CONFIDENTIAL
            people.append(
                Person(
                    id=self.new_id(),
                    email=f"{first.lower()}.{last.lower()}.{n}@{slug}.example",
                    role=role,
                    clearance=clearance,
                    department="legal" if n == 0 else rng.choice(DEPARTMENTS),
                    first_name=first,
                    last_name=last,
                )
            )
        return people


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
    gen = _Generator(rng, now, days, password_hash)
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
    gen: _Generator,
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
            _document(
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


def _document(
    gen: _Generator,
    org_id: uuid.UUID,
    sections: int,
    mix: Sequence[Model],
    uploaders: list[Person],
    reviewers: list[Person],
    approvers: list[Person],
    rows: dict[str, list[tuple[Any, ...]]],
    events: list[Event],
    acted: Callable[[Person, datetime], None],
) -> None:
    rng, now = gen.rng, gen.now
    uploader = rng.choice(uploaders)
    created = gen.office_moment(now - timedelta(days=gen.days))
    document_id = gen.new_id()
    classification = _weighted(rng, CLASSIFICATIONS)
    document_type = _weighted(rng, DOCUMENT_TYPES)
    roll = rng.random()
    status = (
        ProcessingStatus.FAILED
        if roll < 0.03
        else ProcessingStatus.ANALYZING
        if roll < 0.04 and created > now - timedelta(days=2)
        else ProcessingStatus.COMPLETED
    )
    filename = f"{document_type.value.lower()}-{document_id.hex[:8]}.pdf"
    acted(uploader, created)
    events.append(
        Event(
            gen.new_id(),
            created,
            org_id,
            uploader.id,
            "document.upload",
            "data_change",
            f"Document {filename!r} uploaded",
            "Document",
            document_id,
            {"filename": filename, "classification": classification.value},
            classification,
            uploader.department,
        )
    )
    section_ids = []
    for ord_ in range(sections):
        section_id = gen.new_id()
        section_ids.append(section_id)
        heading = HEADINGS[ord_ % len(HEADINGS)]
        rows["document_sections"].append(
            (
                section_id,
                org_id,
                document_id,
                ord_,
                f"{ord_ + 1}. {heading}",
                rng.choice(SENTENCES),
                180,
                created,
            )
        )
    runs = 0 if status is ProcessingStatus.FAILED else 2 if rng.random() < 0.06 else 1
    finished = created + timedelta(seconds=rng.uniform(20, 300))
    latest: list[tuple[RiskLevel, float, Decimal, int, str]] = []
    for run in range(runs):
        model = mix[rng.randrange(len(mix))]
        if run:
            finished = gen.office_moment(finished)
        job_id = gen.new_id()
        latest = []
        clock = finished
        for ord_, section_id in enumerate(section_ids):
            if status is ProcessingStatus.ANALYZING and ord_ >= len(section_ids) // 2:
                break
            seconds = rng.uniform(*model.seconds)
            started, clock = clock, clock + timedelta(seconds=seconds)
            risk = _weighted(rng, RISKS)
            confidence = round(rng.uniform(0.55, 0.99), 3)
            items = [
                {
                    "id": f"{ord_}-{n}",
                    "category": rng.choice(CATEGORIES),
                    "description": "Review this clause.",
                    "riskLevel": risk.value,
                    "confidence": confidence,
                }
                for n in range(_weighted(rng, ITEMS_PER_ANALYSIS))
            ]
            if model is RULES:
                tokens, cost = 0, Decimal(0)
            else:
                prompt, answer = rng.randint(600, 3_000), rng.randint(80, 700)
                tokens = prompt + answer
                cost = (
                    prompt * model.input_price_per_1k + answer * model.output_price_per_1k
                ) / 1000
                cost = cost.quantize(Decimal("0.000001"))
            analysis_id = gen.new_id()
            rows["analysis_results"].append(
                (
                    analysis_id,
                    org_id,
                    document_id,
                    section_id,
                    model.name,
                    model.version,
                    started,
                    clock,
                    seconds,
                    risk.value,
                    confidence,
                    tokens,
                    cost,
                    orjson.dumps(items).decode(),
                    job_id,
                    clock,
                )
            )
            latest.append((risk, confidence, cost, len(items), model.name))
            if items and rng.random() < 0.35:
                _feedback(
                    gen,
                    org_id,
                    document_id,
                    section_id,
                    analysis_id,
                    items,
                    clock,
                    reviewers,
                    approvers,
                    classification,
                    uploader.department,
                    rows,
                    events,
                    acted,
                )
        events.append(
            Event(
                gen.new_id(),
                clock,
                org_id,
                None,
                "document.analyzed",
                "processing",
                f"Document {filename!r} analysed: {len(latest)} sections",
                "Document",
                document_id,
                {"jobId": str(job_id)},
                classification,
                uploader.department,
            )
        )
    risks = [r for r, *_ in latest]
    deleted = gen.office_moment(created) if rng.random() < 0.01 else None
    rows["documents"].append(
        (
            document_id,
            org_id,
            uploader.id,
            uploader.department,
            filename,
            "application/pdf",
            rng.randint(20_000, 4_000_000),
            uuid.UUID(int=gen.rng.getrandbits(128)).hex * 2,
            document_type.value,
            classification.value,
            "en",
            sections * 180,
            sections // 3 + 1,
            status.value,
            "The PDF could not be parsed." if status is ProcessingStatus.FAILED else None,
            False,
            created + timedelta(days=2555),
            "HOT",
            sections,
            sum(n for *_, n, _ in latest),
            max(risks, key=lambda r: r.rank).value if risks else None,
            round(sum(c for _, c, *_ in latest) / len(latest), 4) if latest else None,
            sum((c for _, _, c, *_ in latest), Decimal(0)) if latest else None,
            latest[0][4] if latest else None,
            created,
            finished,
            deleted,
        )
    )


def _feedback(
    gen: _Generator,
    org_id: uuid.UUID,
    document_id: uuid.UUID,
    section_id: uuid.UUID,
    analysis_id: uuid.UUID,
    items: list[dict[str, Any]],
    analysed: datetime,
    reviewers: list[Person],
    approvers: list[Person],
    classification: Classification,
    department: str,
    rows: dict[str, list[tuple[Any, ...]]],
    events: list[Event],
    acted: Callable[[Person, datetime], None],
) -> None:
    rng, now = gen.rng, gen.now
    given = analysed + timedelta(seconds=rng.expovariate(1 / 7_200))
    if given > now - timedelta(minutes=1):
        return
    reviewer = rng.choice(reviewers)
    item = rng.choice(items)
    action = _weighted(rng, ACTIONS)
    rating = _weighted(rng, RATINGS)
    feedback_id = gen.new_id()
    status, approver, approved_at = WorkflowStatus.SUBMITTED, None, None
    reviewed = given + timedelta(seconds=rng.expovariate(1 / 86_400))
    if reviewed < now and rng.random() < 0.7:
        candidates = [a for a in approvers if a.id != reviewer.id]
        approver = rng.choice(candidates)
        approved_at = reviewed
        status = WorkflowStatus.APPROVED if rng.random() < 0.85 else WorkflowStatus.REJECTED
    rows["user_feedback"].append(
        (
            feedback_id,
            org_id,
            document_id,
            section_id,
            analysis_id,
            reviewer.id,
            item["id"],
            action.value,
            item["category"],
            rating,
            "Rephrase as agreed with counsel."
            if action in (FeedbackAction.CUSTOM, FeedbackAction.MODIFIED)
            else None,
            status.value,
            approver.id if approver else None,
            approved_at,
            given,
            approved_at or given,
        )
    )
    acted(reviewer, given)
    subject = (classification, department)
    events.append(
        Event(
            gen.new_id(),
            given,
            org_id,
            reviewer.id,
            "feedback.submit",
            "review",
            f"Feedback {action.value} on analysis item {item['id']}",
            "Feedback",
            feedback_id,
            {"action": action.value, "itemId": item["id"], "rating": rating},
            *subject,
        )
    )
    if approver is not None and approved_at is not None:
        acted(approver, approved_at)
        events.append(
            Event(
                gen.new_id(),
                approved_at,
                org_id,
                approver.id,
                "feedback.review",
                "review",
                f"Feedback {status.value.lower()}",
                "Feedback",
                feedback_id,
                {"workflowStatus": status.value},
                *subject,
            )
        )


def totals(rows: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{count:,} {table}" for table, count in rows)
