"""Look-ahead: when a list of documents is resolved, load the levels its selection asks for
(sections, analyses, feedback, uploaders; the sections' analyses; the feedback's authors)
for all of its documents at once, before GraphQL walks the rows.

Each level is loaded through the same DataLoader (and so the same SQL, scope and key) that
its field would use; the field then finds the value ready and resolves synchronously
(``now_or_later``). Whatever is not prefetched still works, one batch per level, as before:
this only removes the per-row asynchronous round trips through the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from typing import Any

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from prism.errors import PrismError
from prism.execution.context import Context
from prism.models.documents import Document as DocumentRow
from prism.models.pagination import PageRequest


def _fields(selections: Iterable[Selection]) -> Iterator[SelectedField]:
    for selection in selections:
        if isinstance(selection, SelectedField):
            yield selection
        elif isinstance(selection, FragmentSpread | InlineFragment):
            yield from _fields(selection.selections)


def under(selections: Iterable[Selection], *path: str) -> list[SelectedField]:
    """The fields selected at ``path`` below ``selections`` (through fragments, all aliases)."""
    current = list(_fields(selections))
    for name in path:
        current = [child for f in current if f.name == name for child in _fields(f.selections)]
    return current


def _page_request(field: SelectedField, ordering: str) -> PageRequest | None:
    first = field.arguments.get("first")
    if isinstance(first, str):  # an Int literal arrives as its text
        first = int(first)
    try:
        return PageRequest.parse(first, field.arguments.get("after"), ordering=ordering)
    except PrismError:
        return None  # the field itself reports the bad argument, where the client sees it


async def prefetch_documents(
    context: Context, rows: Sequence[DocumentRow], node_fields: list[SelectedField]
) -> None:
    if not rows or not node_fields:
        return
    loaders = context.loaders
    ids = [row.id for row in rows]
    work: list[Awaitable[Any]] = []
    for field in node_fields:
        if field.name == "sections" and (request := _page_request(field, "sections")):
            work.append(_sections(context, ids, request, field))
        elif field.name == "analyses" and (request := _page_request(field, "analyses")):
            work.append(loaders.analysis_page.load_many([(i, request) for i in ids]))
        elif field.name == "feedback" and (request := _page_request(field, "feedback")):
            work.append(_feedback(context, ids, request, field))
        elif field.name == "uploadedBy":
            uploaders = {row.uploaded_by for row in rows if row.uploaded_by is not None}
            work.append(loaders.user.load_many(list(uploaders)))
    await asyncio.gather(*work)


async def _sections(
    context: Context, ids: list[Any], request: PageRequest, field: SelectedField
) -> None:
    pages = await context.loaders.section_page.load_many([(i, request) for i in ids])
    if under(field.selections, "edges", "node", "analyses"):
        section_ids = [section.id for page in pages for section in page.items]
        await context.loaders.analyses_by_section.load_many(section_ids)


async def _feedback(
    context: Context, ids: list[Any], request: PageRequest, field: SelectedField
) -> None:
    pages = await context.loaders.feedback_page.load_many([(i, request) for i in ids])
    if under(field.selections, "edges", "node", "author"):
        authors = {f.user_id for page in pages for f in page.items if f.user_id is not None}
        await context.loaders.user.load_many(list(authors))
