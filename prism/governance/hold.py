"""Legal hold: a held document is never deleted, erased or purged, by anyone or anything.

The one check every path that removes documents calls (document deletion goes through the
policy, whose CONFLICT is the same; retention purges filter in SQL and re-check on delete)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from prism.errors import Conflict
from prism.models import governance as models
from prism.models.documents import Document

HELD_MESSAGE = "The document is under legal hold."


def require_not_held(document: Document) -> None:
    """CONFLICT when ``document`` is under legal hold."""
    if document.legal_hold:
        raise Conflict(HELD_MESSAGE)


async def split_held(
    session: AsyncSession, organization_id: uuid.UUID, document_ids: Iterable[uuid.UUID]
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """(held, free) among ``document_ids`` of the organization, read under a share lock so a
    hold cannot be lifted (nor the free ones held) before the caller's transaction ends;
    ids that are not the organization's documents are in neither set."""
    ids = list(set(document_ids))
    if not ids:
        return set(), set()
    rows = await models.read_legal_holds(session, organization_id, ids)
    held: set[uuid.UUID] = set()
    free: set[uuid.UUID] = set()
    for document_id, legal_hold in rows:
        (held if legal_hold else free).add(document_id)
    return held, free
