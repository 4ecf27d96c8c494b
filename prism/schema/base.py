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
    page: strawberry.Private[Page[Any]]

    @classmethod
    def from_page(cls, page: Page[Any]) -> PageInfo:
        return cls(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            page=page,
        )

    @strawberry.field
    def start_cursor(self) -> str | None:
        return self.page.cursor(0) if self.page.items else None

    @strawberry.field
    def end_cursor(self) -> str | None:
        return self.page.cursor(len(self.page.items) - 1) if self.page.items else None


@strawberry.type
class Edge:
    """What every edge has: its cursor, encoded only when selected."""

    page: strawberry.Private[Page[Any]]
    index: strawberry.Private[int]

    @strawberry.field(description="Pass as `after` to continue after this edge.")
    def cursor(self) -> str:
        return self.page.cursor(self.index)


def edges_of(page: Page[T], to_node: Callable[[T], N], edge: Callable[..., Any]) -> list[Any]:
    return [edge(page=page, index=i, node=to_node(item)) for i, item in enumerate(page.items)]
