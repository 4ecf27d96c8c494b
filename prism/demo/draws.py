"""What the scale corpus (``prism.demo.scale``) is drawn from: organization and people names,
vocabulary, the models and their prices, the weights of classifications, types, actions,
ratings, risks and roles; the people and audit events of an organization before they are
written; and the generator of ids, office-hours instants and people."""

from __future__ import annotations

import bisect
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from prism.models.enums import (
    Classification,
    DocumentType,
    FeedbackAction,
    RiskLevel,
    Role,
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


_CUMULATIVE: dict[int, tuple[Sequence[tuple[Any, int]], list[Any], list[int]]] = {}


def weighted(rng: random.Random, pairs: Sequence[tuple[Any, int]]) -> Any:
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


class Generator:
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
        roles += [weighted(rng, ROLES) for _ in range(count - len(roles))]
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
