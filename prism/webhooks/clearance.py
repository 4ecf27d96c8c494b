"""Which events a webhook may carry: nothing about a document above the clearance at which it
was registered (the registering ADMIN's; an ADMIN of lower clearance who changes it lowers
it to theirs).

Such an event is skipped, not redacted: its type, subject and ids already say that a document
of that classification exists and what happened to it, which is what the clearance hides.
An event's level is the highest of its ``classification`` and the ``previous`` one it names
(a reclassification from RESTRICTED says something about a RESTRICTED document). An event
that lists documents without one classification (``documentIds``: the lifecycle's purges)
is sent only to webhooks registered at the highest clearance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prism.models.enums import Classification

HIGHEST = max(Classification, key=lambda c: c.rank)


def _level(value: Any) -> Classification | None:
    try:
        return Classification(value) if isinstance(value, str) else None
    except ValueError:
        return HIGHEST  # an unknown level is treated as the highest


def level_of(event: Mapping[str, Any]) -> Classification | None:
    """The highest classification an event says something about (None: no document's)."""
    data = event.get("data")
    data = data if isinstance(data, Mapping) else {}
    previous = data.get("previous")
    previous = previous if isinstance(previous, Mapping) else {}
    found = [
        level
        for level in (
            _level(event.get("classification")),
            _level(data.get("classification")),
            _level(previous.get("classification")),
        )
        if level is not None
    ]
    if "documentIds" in data:
        found.append(HIGHEST)
    return max(found, key=lambda c: c.rank) if found else None


def may_carry(clearance: Classification, event: Mapping[str, Any]) -> bool:
    level = level_of(event)
    return level is None or level.rank <= clearance.rank
