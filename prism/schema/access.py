"""Explanations of the access policy: the access field of the root Query."""

from __future__ import annotations

from typing import Annotated

import strawberry

from prism.resolvers import access
from prism.schema.base import Info


@strawberry.type(description="A decision of the access policy.")
class AccessExplanation:
    allowed: bool
    code: str = strawberry.field(description="OK, or the error code a refusal gets.")
    reason: str


@strawberry.type
class AccessQuery:
    """``explainAccess`` of the root Query."""

    @strawberry.field(
        description="Why a user or API token may or may not do an action, optionally on a "
        "document: the answer of the same policy function every request goes through (ADMIN)."
    )
    async def explain_access(
        self,
        info: Info,
        principal_id: Annotated[
            strawberry.ID, strawberry.argument(description="A User or ApiToken ID.")
        ],
        action: Annotated[
            str, strawberry.argument(description="e.g. document:read, feedback:review.")
        ],
        resource_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="A Document ID.")
        ] = None,
    ) -> AccessExplanation:
        _, decision = await access.explain(info.context, principal_id, action, resource_id)
        return AccessExplanation(
            allowed=decision.allowed, code=decision.code, reason=decision.reason
        )
