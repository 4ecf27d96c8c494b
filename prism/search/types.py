"""What a search is asked and answers, independent of the backend that answers it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from prism.errors import BadUserInput
from prism.models.enums import Classification, DocumentType, RiskLevel

MAX_QUERY_LENGTH = 500
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_FILTER_VALUES = 10
# GraphQL names of the facets, in the order they are answered.
FACET_FIELDS = ("classification", "documentType", "riskLevel")
# Highlights are HTML-escaped text with the matched words inside <em>…</em>, on both backends.
HIGHLIGHT_START, HIGHLIGHT_END = "<em>", "</em>"
HIGHLIGHT_FRAGMENTS = 3


@dataclass(frozen=True)
class SearchFilters:
    """The caller's own narrowing (never the visibility rule, which is not optional)."""

    classification: tuple[Classification, ...] = ()
    document_type: tuple[DocumentType, ...] = ()
    risk_level: tuple[RiskLevel, ...] = ()
    document_id: uuid.UUID | None = None

    def fingerprint(self) -> list[Any]:
        return [
            sorted(c.value for c in self.classification),
            sorted(t.value for t in self.document_type),
            sorted(r.value for r in self.risk_level),
            str(self.document_id) if self.document_id else None,
        ]


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the backend that made it, the last hit's score and section."""

    backend: str
    score: float
    section_id: uuid.UUID


@dataclass(frozen=True)
class SearchRequest:
    query: str
    filters: SearchFilters
    first: int
    after: Cursor | None = None

    @classmethod
    def parse(
        cls,
        query: str,
        *,
        filters: SearchFilters | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> SearchRequest:
        """Validate client input; every refusal is BAD_USER_INPUT naming the argument."""
        text = query.strip()
        if not text:
            raise BadUserInput("`query` must not be empty.", argument="query")
        if len(text) > MAX_QUERY_LENGTH:
            raise BadUserInput(
                f"`query` is at most {MAX_QUERY_LENGTH} characters.", argument="query"
            )
        if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text):
            raise BadUserInput("`query` holds control characters.", argument="query")
        filters = filters or SearchFilters()
        for name, values in (
            ("classification", filters.classification),
            ("documentType", filters.document_type),
            ("riskLevel", filters.risk_level),
        ):
            if len(values) > MAX_FILTER_VALUES:
                raise BadUserInput(
                    f"`filter.{name}` takes at most {MAX_FILTER_VALUES} values.",
                    argument=f"filter.{name}",
                )
        if first is None:
            first = DEFAULT_PAGE_SIZE
        if not 0 <= first <= MAX_PAGE_SIZE:
            raise BadUserInput(f"`first` must be between 0 and {MAX_PAGE_SIZE}.", argument="first")
        request = cls(query=text, filters=filters, first=first)
        if after is not None:
            request = cls(query=text, filters=filters, first=first, after=request.decode(after))
        return request

    def fingerprint(self) -> str:
        """Ties a cursor to the query and filters it was made for."""
        raw = orjson.dumps([self.query, self.filters.fingerprint()])
        return hashlib.sha256(raw).hexdigest()[:16]

    def encode(self, backend: str, score: float, section_id: uuid.UUID) -> str:
        payload = orjson.dumps(["search", self.fingerprint(), backend, score, str(section_id)])
        return base64.urlsafe_b64encode(payload).decode().rstrip("=")

    def decode(self, cursor: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            kind, fingerprint, backend, score, section_id = orjson.loads(raw)
            if kind != "search" or fingerprint != self.fingerprint():
                raise ValueError("cursor of another search")
            if not isinstance(backend, str) or isinstance(score, bool):
                raise ValueError("bad cursor")
            if not isinstance(score, int | float) or not math.isfinite(score):
                raise ValueError("bad cursor")
            return Cursor(backend=backend, score=float(score), section_id=uuid.UUID(section_id))
        except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
            raise BadUserInput(
                "`after` is not a valid cursor for this search.", argument="after"
            ) from exc


@dataclass(frozen=True)
class SectionDocument:
    """One section as every search index holds it: PII-masked text and the document fields
    search filters and facets on (never the raw text, never the filename)."""

    section_id: uuid.UUID
    document_id: uuid.UUID
    organization_id: uuid.UUID
    ord: int
    text: str
    classification: Classification
    department: str | None
    document_type: DocumentType
    risk_level: RiskLevel | None
    legal_hold: bool
    document_created_at: datetime
    # The section's language (ISO 639-1; None: unknown): which analysis its text gets.
    language: str | None = None


@dataclass(frozen=True)
class Hit:
    section_id: uuid.UUID
    document_id: uuid.UUID
    score: float
    highlights: list[str]
    cursor: str


@dataclass(frozen=True)
class Facet:
    field: str
    buckets: list[tuple[str, int]]


@dataclass
class SearchPage:
    hits: list[Hit]
    has_next_page: bool
    has_previous_page: bool
    total_count: int
    facets: list[Facet]
    backend: str
    # Set when the configured backend was down and another one answered.
    fallback_reason: str | None = None


def facets_in_order(counts: dict[str, dict[str, int]]) -> list[Facet]:
    """Facets in FACET_FIELDS order, buckets by count (desc) then value."""
    return [
        Facet(
            field=name,
            buckets=sorted(counts.get(name, {}).items(), key=lambda kv: (-kv[1], kv[0])),
        )
        for name in FACET_FIELDS
    ]


def highlight_fragments(fragments: Sequence[str], start: str, end: str) -> list[str]:
    """Escape raw fragments marked with ``start``/``end`` into the answered HTML form; keep
    only fragments that hold a match."""
    answered = []
    for fragment in fragments:
        if start not in fragment:
            continue
        escaped = html.escape(fragment.strip(), quote=False)
        answered.append(escaped.replace(start, HIGHLIGHT_START).replace(end, HIGHLIGHT_END))
    return answered[:HIGHLIGHT_FRAGMENTS]
