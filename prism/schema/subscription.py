"""The root Subscription: document progress over graphql-transport-ws."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import strawberry

from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.db.faults import answer_deadline, answered_within
from prism.db.notify import RESYNC, RESYNC_FIELD
from prism.errors import NotFound, ServiceUnavailable
from prism.execution.ids import expect_id
from prism.models import documents as document_models
from prism.models.enums import ProcessingStatus
from prism.schema.base import Info
from prism.schema.documents import Document

TERMINAL = {ProcessingStatus.COMPLETED, ProcessingStatus.FAILED}
# A stream with no event for this long reads its document again: a notification lost in a
# way nobody saw (the LISTEN connection's loss unnoticed yet) delays its end by this at most.
RESYNC_SECONDS = 20.0


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

        deadline = answer_deadline(services.settings.request_timeout_seconds)

        async def visible(principal: Principal) -> document_models.Document:
            # Fresh each time, for the caller as they are now: a document reclassified above
            # the viewer's clearance, or deleted, or a viewer demoted, stops its stream.
            require(principal, Action.DOCUMENT_READ)
            # No HTTP request deadline runs here: the re-read has one of its own.
            async with (
                answered_within(deadline, "progress re-read"),
                services.db.transaction(principal.organization_id) as session,
            ):
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
            analyzed, total = done, row.total_sections
            while status not in TERMINAL:
                try:
                    event = await asyncio.wait_for(events.get(), RESYNC_SECONDS)
                except TimeoutError:
                    event = dict(RESYNC)
                resync = RESYNC_FIELD in event
                if not resync and event.get("o") != str(principal.organization_id):
                    continue
                # The credential is checked again and the principal re-read (a revoked
                # token ends the stream UNAUTHENTICATED; a demotion narrows what it shows).
                await info.context.renew()
                principal = info.context.require_principal()
                row = await visible(principal)
                # The row, read now, decides: an event may be stale or one may have been lost.
                status = row.processing_status
                if not resync:
                    analyzed, total = int(event.get("a", 0)), int(event.get("t", 0))
                elif status is ProcessingStatus.COMPLETED:
                    analyzed = total = row.total_sections
                yield DocumentProgress(
                    document=Document.from_row(row),
                    processing_status=status,
                    sections_analyzed=analyzed,
                    total_sections=total,
                )
