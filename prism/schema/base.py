"""The Node interface, PageInfo, and the connection helpers every list uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import strawberry

from prism.execution.context import Context
from prism.models.pagination import MAX_PAGE_SIZE, Page

Info = strawberry.Info[Context, None]

# The arguments of every connection field.
First = Annotated[
    int | None, strawberry.argument(description=f"Page size (0-{MAX_PAGE_SIZE}, default 20).")
]
After = Annotated[str | None, strawberry.argument(description="`endCursor` of the previous page.")]

T = TypeVar("T")
N = TypeVar("N")


@strawberry.interface(description="An object with a globally unique, opaque ID.")
class Node:
    id: strawberry.ID = strawberry.field(description="Opaque global ID.")


@strawberry.type(description="Where a page of a connection sits.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    # The first and last cursors, made only if selected.
    cursors: strawberry.Private[Callable[[], tuple[str | None, str | None]]]

    @classmethod
    def from_page(cls, page: Page[Any]) -> PageInfo:
        def cursors() -> tuple[str | None, str | None]:
            if not page.items:
                return None, None
            return page.cursor(0), page.cursor(len(page.items) - 1)

        return cls(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            cursors=cursors,
        )

    @classmethod
    def of(
        cls, *, has_next_page: bool, has_previous_page: bool, start: str | None, end: str | None
    ) -> PageInfo:
        return cls(
            has_next_page=has_next_page,
            has_previous_page=has_previous_page,
            cursors=lambda: (start, end),
        )

    @strawberry.field
    def start_cursor(self) -> str | None:
        return self.cursors()[0]

    @strawberry.field
    def end_cursor(self) -> str | None:
        return self.cursors()[1]


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
