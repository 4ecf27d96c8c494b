"""The Node interface, PageInfo, and the connection helpers every list uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import strawberry

from prism.models.pagination import Page
from prism.resolvers.context import Context

Info = strawberry.Info[Context, None]

T = TypeVar("T")
N = TypeVar("N")


@strawberry.interface(description="An object with a globally unique, opaque ID.")
class Node:
    id: strawberry.ID = strawberry.field(description="Opaque global ID.")


@strawberry.type(description="Where a page of a connection sits.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def from_page(cls, page: Page[Any]) -> PageInfo:
        return cls(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            start_cursor=page.cursors[0] if page.cursors else None,
            end_cursor=page.cursors[-1] if page.cursors else None,
        )


def edges_of(page: Page[T], to_node: Callable[[T], N], edge: Callable[..., Any]) -> list[Any]:
    return [
        edge(cursor=cursor, node=to_node(item))
        for cursor, item in zip(page.cursors, page.items, strict=True)
    ]
