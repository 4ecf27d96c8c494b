"""The root Subscription: document progress over graphql-transport-ws."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.errors import NotFound, ServiceUnavailable
from prism.models import documents as document_models
from prism.models.enums import ProcessingStatus
from prism.resolvers.ids import expect_id
from prism.schema.base import Info
from prism.schema.documents import Document

TERMINAL = {ProcessingStatus.COMPLETED, ProcessingStatus.FAILED}


@strawberry.type(description="Where a document is in the pipeline.")
class DocumentProgress:
    document: Document
    processing_status: ProcessingStatus
    sections_analyzed: int
    total_sections: int


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Progress of one document until it is COMPLETED or FAILED (the current "
        "state first). Authenticate in connection_init: {'authorization': 'Bearer …'}."
    )
    async def document_progress(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[DocumentProgress, None]:
        principal = info.context.require_principal()
        require(principal, Action.DOCUMENT_READ)
        document_id = expect_id(id, "Document")
        services = info.context.services
        if services.progress is None:
            raise ServiceUnavailable("Progress events are not available on this server.")

        async def visible(principal: Principal) -> document_models.Document:
            # Fresh each time, for the caller as they are now: a document reclassified above
            # the viewer's clearance, or deleted, or a viewer demoted, stops its stream.
            require(principal, Action.DOCUMENT_READ)
            async with services.db.transaction(principal.organization_id) as session:
                rows = await document_models.read_documents_by_ids(
                    session, principal.scope(), [document_id]
                )
            if not rows:
                raise NotFound("Document not found.")
            return rows[0]

        async with services.progress.subscribe(str(document_id)) as events:
            row = await visible(principal)
            status = row.processing_status
            done = row.total_sections if status is ProcessingStatus.COMPLETED else 0
            yield DocumentProgress(
                document=Document.from_row(row),
                processing_status=status,
                sections_analyzed=done,
                total_sections=row.total_sections,
            )
            while status not in TERMINAL:
                event = await events.get()
                if event.get("o") != str(principal.organization_id):
                    continue
                # The credential is checked again and the principal re-read (a revoked
                # token ends the stream UNAUTHENTICATED; a demotion narrows what it shows).
                await info.context.renew()
                principal = info.context.require_principal()
                row = await visible(principal)
                # The row, read now, decides: an event may be stale or one may have been lost.
                status = row.processing_status
                yield DocumentProgress(
                    document=Document.from_row(row),
                    processing_status=status,
                    sections_analyzed=int(event.get("a", 0)),
                    total_sections=int(event.get("t", 0)),
                )
