"""Keyset pagination: opaque cursors over (sort key, id), pages capped at MAX_PAGE_SIZE.

A cursor encodes the ordering it was made for and the key of the row it points at, so a page
is found with an index range scan instead of OFFSET, and a cursor of another list or ordering
is refused as bad input instead of silently giving a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute, aliased

from prism.errors import BadUserInput
from prism.models.base import among

T = TypeVar("T")
# A sort key column: a mapped attribute (Document.created_at) or a SQL expression.
Column = sa.ColumnElement[Any] | QueryableAttribute[Any]

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class PageRequest:
    """What a client asked for, validated: ``after`` is the decoded key, not the cursor."""

    first: int = DEFAULT_PAGE_SIZE
    after: tuple[Any, ...] | None = None
    ordering: str = "default"
    descending: bool = False

    @classmethod
    def parse(
        cls,
        first: int | None,
        after: str | None,
        *,
        ordering: str = "default",
        descending: bool = False,
    ) -> PageRequest:
        if first is None:
            first = DEFAULT_PAGE_SIZE
        if first < 0 or first > MAX_PAGE_SIZE:
            raise BadUserInput(f"`first` must be between 0 and {MAX_PAGE_SIZE}.", argument="first")
        key = decode_cursor(after, ordering) if after is not None else None
        return cls(first=first, after=key, ordering=ordering, descending=descending)


@dataclass
class Page(Generic[T]):
    items: list[T]
    # Each item's sort key; its cursor is made only when a client asks for it.
    keys: list[tuple[Any, ...]]
    ordering: str
    has_next_page: bool
    has_previous_page: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def cursor(self, index: int) -> str:
        return encode_cursor(self.ordering, self.keys[index])


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"d": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    if value is None or isinstance(value, int | str):
        return value
    raise TypeError(f"cannot put {type(value).__name__} in a cursor")


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, raw),) = value.items()
        if tag == "d" and isinstance(raw, str):
            return datetime.fromisoformat(raw)
        if tag == "u" and isinstance(raw, str):
            return uuid.UUID(raw)
        raise ValueError("unknown cursor value")
    if value is None or isinstance(value, int | str):
        return value
    raise ValueError("unknown cursor value")


def encode_cursor(ordering: str, key: Sequence[Any]) -> str:
    payload = orjson.dumps([ordering, [_encode_value(v) for v in key]])
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(cursor: str, ordering: str) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, key = orjson.loads(raw)
        if made_for != ordering or not isinstance(key, list):
            raise ValueError("cursor of another list")
        return tuple(_decode_value(v) for v in key)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise BadUserInput(
            "`after` is not a valid cursor for this list.", argument="after"
        ) from exc


def after_clause(
    columns: Sequence[Column], key: tuple[Any, ...], *, descending: bool
) -> sa.ColumnElement[bool]:
    if len(key) != len(columns) or not all(
        _fits(value, column) for value, column in zip(key, columns, strict=True)
    ):
        raise BadUserInput("`after` is not a valid cursor for this list.", argument="after")
    left = sa.tuple_(*columns)
    right = sa.tuple_(*[sa.literal(v, type_=c.type) for v, c in zip(key, columns, strict=True)])
    return left < right if descending else left > right


def _fits(value: Any, column: Column) -> bool:
    """A cursor is client input: each value must have its column's type (and no NUL)."""
    expected = column.type.python_type
    if isinstance(value, str) and "\x00" in value:
        return False
    if expected is datetime:
        return isinstance(value, datetime) and value.tzinfo is not None
    return isinstance(value, expected) and not (expected is int and isinstance(value, bool))


def order_by(columns: Sequence[Column], *, descending: bool) -> list[sa.UnaryExpression[Any]]:
    return [c.desc() if descending else c.asc() for c in columns]


async def keyset_page(
    session: AsyncSession,
    query: sa.Select[tuple[T]],
    columns: Sequence[Column],
    page: PageRequest,
    key_of: Callable[[T], tuple[Any, ...]] | None = None,
) -> Page[T]:
    """One page of ``query`` ordered by ``columns`` (the last one unique, normally ``id``)."""
    if page.after is not None:
        query = query.where(after_clause(columns, page.after, descending=page.descending))
    query = query.order_by(*order_by(columns, descending=page.descending)).limit(page.first + 1)
    rows = list(await session.scalars(query))
    return make_page(rows, page, key_of or _attribute_key(columns))


def make_page(rows: list[T], page: PageRequest, key_of: Callable[[T], tuple[Any, ...]]) -> Page[T]:
    """Cut the one extra row fetched to learn whether a next page exists."""
    items = rows[: page.first]
    return Page(
        items=items,
        keys=[key_of(item) for item in items],
        ordering=page.ordering,
        has_next_page=len(rows) > page.first,
        has_previous_page=page.after is not None,
    )


def _attribute_key(columns: Sequence[Column]) -> Callable[[Any], tuple[Any, ...]]:
    names = [getattr(c, "key", None) for c in columns]
    if any(n is None for n in names):
        raise TypeError("pass key_of for computed sort keys")

    def key_of(row: Any) -> tuple[Any, ...]:
        return tuple(getattr(row, str(n)) for n in names)

    return key_of


async def window_pages(
    session: AsyncSession,
    base: sa.Select[Any],
    entity: Any,
    parent_column: QueryableAttribute[uuid.UUID],
    parent_ids: Sequence[uuid.UUID],
    key_columns: Sequence[Column],
    page: PageRequest,
    key_of: Any,
) -> dict[uuid.UUID, Page[Any]]:
    """Per-parent keyset pages of children in one statement (``row_number()`` per parent).

    Used by the nested connections so a list of N parents costs one query, not N."""
    pages: dict[uuid.UUID, Page[Any]] = {}
    parent_key = parent_column.key
    if not parent_ids:
        return pages
    rank = sa.func.row_number().over(
        partition_by=parent_column, order_by=order_by(key_columns, descending=page.descending)
    )
    inner = base.where(among(parent_column, parent_ids))
    if page.after is not None:
        inner = inner.where(after_clause(key_columns, page.after, descending=page.descending))
    ranked = inner.add_columns(rank.label("rn")).subquery()
    alias = aliased(entity, ranked)
    query = (
        sa.select(alias)
        .where(ranked.c.rn <= page.first + 1)
        .order_by(ranked.c[parent_key], ranked.c.rn)
    )
    grouped: dict[uuid.UUID, list[Any]] = {pid: [] for pid in parent_ids}
    for row in await session.scalars(query):
        grouped[getattr(row, parent_key)].append(row)
    for pid, rows in grouped.items():
        pages[pid] = make_page(rows, page, key_of)
    return pages
