"""Which events a webhook may carry: nothing about a document above the clearance at which it
was registered (the registering ADMIN's; an ADMIN of lower clearance who changes it lowers
it to theirs).

Such an event is skipped, not redacted: its type, subject and ids already say that a document
of that classification exists and what happened to it, which is what the clearance hides.
An event's level is the highest of its ``classification`` and the ``previous`` one it names
(a reclassification from RESTRICTED says something about a RESTRICTED document). An event
that lists documents without one classification (``documentIds``: the lifecycle's purges)
is sent only to webhooks registered at the highest clearance.

Nor does a webhook carry an event its registrant's token could not read: registered (or last
changed) with an API token, it keeps that token's scopes (``narrowed``: every change by
another token narrows them further), and an event whose read needs a scope not among them
(``EVENT_RULES``: the audit log's, the documents', BI's, ...) is not sent (``may_send``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prism.authz.policy import ACTION_SCOPE, EVENT_RULES
from prism.events.catalog import WEBHOOK_PING
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


def narrowed(kept: Sequence[str] | None, scopes: frozenset[str] | None) -> list[str] | None:
    """The scopes a webhook keeps after a change by a caller with ``scopes`` (None: a
    signed-in user, every scope): what both allow."""
    if scopes is None:
        return list(kept) if kept is not None else None
    if kept is None:
        return sorted(scopes)
    return sorted(set(kept) & scopes)


def may_send(
    clearance: Classification, scopes: Sequence[str] | None, event: Mapping[str, Any]
) -> bool:
    """The webhook may carry the event: its clearance (``may_carry``) and the scope its type's
    read needs. A type without a rule is sent to nobody but the test ping."""
    if not may_carry(clearance, event):
        return False
    kind = event.get("type")
    if kind == WEBHOOK_PING:
        return True
    rule = EVENT_RULES.get(kind) if isinstance(kind, str) else None
    if rule is None:
        return False
    needed = ACTION_SCOPE[rule.action]
    return scopes is None or needed is None or needed in scopes
