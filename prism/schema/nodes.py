"""The entry fields of the root Query: any object by global ID (``node``, ``nodes``) and the
caller (``viewer``)."""

from __future__ import annotations

import strawberry

from prism.models.pagination import MAX_PAGE_SIZE
from prism.resolvers.nodes import load_node, load_nodes
from prism.schema.audit import AuditEvent, Job
from prism.schema.base import Info, Node
from prism.schema.documents import Analysis, Document, Feedback, Section
from prism.schema.identity import ApiToken, Organization, User, Viewer
from prism.schema.privacy import DataExport

# Type name of a global ID -> the GraphQL type its row is answered as.
NODE_TYPES = {
    "Organization": Organization,
    "User": User,
    "ApiToken": ApiToken,
    "Document": Document,
    "Section": Section,
    "Analysis": Analysis,
    "Feedback": Feedback,
    "AuditEvent": AuditEvent,
    "Job": Job,
    "DataExport": DataExport,
}


@strawberry.type
class NodeQuery:
    """``node``, ``nodes`` and ``viewer`` of the root Query."""

    @strawberry.field(description="Any object by its global ID.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        type_name, row = await load_node(info.context, id)
        return NODE_TYPES[type_name].from_row(row)  # type: ignore[attr-defined, no-any-return]

    @strawberry.field(
        description=f"Several objects by global ID (at most {MAX_PAGE_SIZE}); "
        "a missing one is null with a NOT_FOUND error at its index."
    )
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        result: list[Node | None] = []
        for item in await load_nodes(info.context, list(ids)):
            if isinstance(item, tuple):
                type_name, row = item
                result.append(NODE_TYPES[type_name].from_row(row))  # type: ignore[attr-defined]
            else:
                # graphql-core reports an Exception in a list as that item's error.
                result.append(item)  # type: ignore[arg-type]
        return result

    @strawberry.field(description="The caller.")
    def viewer(self, info: Info) -> Viewer:
        principal = info.context.require_principal()
        return Viewer(scopes=sorted(principal.granted_scopes))
