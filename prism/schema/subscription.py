"""The root Subscription over graphql-transport-ws: one document's progress, and the
organization's events as they are committed (the outbox, filtered for the caller)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated, Any, cast

import orjson
import strawberry
from strawberry.scalars import JSON

from prism.authz.policy import Action, may_receive_event, may_subscribe_to, require
from prism.authz.principal import Principal
from prism.db.faults import answer_deadline, answered_within
from prism.db.notify import RESYNC, RESYNC_FIELD
from prism.errors import BadUserInput, Forbidden, NotFound, ServiceUnavailable
from prism.events.catalog import TYPES
from prism.execution.ids import expect_id
from prism.models import documents as document_models
from prism.models.enums import Classification, ProcessingStatus
from prism.models.outbox import Row
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


MAX_TYPES = 100
# An `events` stream that fell behind and has not ended after this (stuck sending to a client
# that does not read) has its socket closed with this code (graphql-ws clients reconnect on
# it, and resume with `after`).
STUCK_SECONDS = 2.0
TOO_SLOW_CLOSE = 4008


@strawberry.type(
    description="One of the organization's events: a CloudEvents 1.0 event, as the outbox "
    "holds it and Kafka carries it. `data` holds ids, classifications and figures only."
)
class CloudEvent:
    id: strawberry.ID = strawberry.field(
        description="The event's id (unique; what consumers deduplicate on, and what `after` "
        "resumes from)."
    )
    type: str = strawberry.field(description="Like `prism.document.processed`.")
    source: str
    subject: str | None = strawberry.field(description="What it concerns: `Document/<uuid>`.")
    time: datetime
    sequence: str = strawberry.field(
        description="Its place in the organization's stream: 1, 2, 3, … (a decimal string)."
    )
    classification: Classification | None
    department: str | None
    data: JSON

    @classmethod
    def from_row(cls, row: Row) -> CloudEvent:
        event: dict[str, Any] = orjson.loads(row.event)
        return cls(
            id=strawberry.ID(str(row.id)),
            type=row.type,
            source=str(event.get("source", "")),
            subject=event.get("subject"),
            time=datetime.fromisoformat(str(event["time"])),
            sequence=str(row.sequence),
            classification=row.classification,
            department=row.department,
            data=cast(JSON, event.get("data") or {}),
        )


def _event_types(types: list[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    if not 1 <= len(types) <= MAX_TYPES:
        raise BadUserInput(f"`types` names 1 to {MAX_TYPES} event types.", argument="types")
    unknown = sorted(set(types) - TYPES)
    if unknown:
        raise BadUserInput(
            f"Unknown event types: {', '.join(t[:100] for t in unknown[:5])}.", argument="types"
        )
    return frozenset(types)


def _resume_id(after: str | None) -> uuid.UUID | None:
    if after is None:
        return None
    try:
        return uuid.UUID(after)
    except ValueError:
        raise BadUserInput("`after` is the `id` of an event.", argument="after") from None


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

    @strawberry.subscription(
        description="The organization's events as they are committed, in the organization's "
        "order, those the caller may see only: each type needs its own right (document "
        "events: reading documents, within the caller's clearance and department; sign-ins, "
        "users and tokens: the audit log; lifecycle and metrics: ADMIN cleared for "
        "RESTRICTED). An API token needs `events:read` and the scope of each type. `after` "
        "(an event's `id`) first replays what followed it; RESUME_POINT_LOST when the outbox "
        "no longer holds it. A client further behind than the server buffers is ended with "
        "SUBSCRIBER_TOO_SLOW (resume with `after`)."
    )
    async def events(
        self,
        info: Info,
        types: Annotated[
            list[str] | None,
            strawberry.argument(description="Only these CloudEvents types (default: all)."),
        ] = None,
        after: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Resume after this event `id`."),
        ] = None,
    ) -> AsyncGenerator[CloudEvent, None]:
        principal = info.context.require_principal()
        require(principal, Action.EVENT_READ)
        wanted = _event_types(types)
        if wanted is not None and not any(may_subscribe_to(principal, t) for t in wanted):
            raise Forbidden("None of these event types may be read by the caller.")
        resume = _resume_id(after)
        services = info.context.services
        live = services.live_events
        if live is None:
            raise ServiceUnavailable("Live events are not available on this server.")
        organization_id = principal.organization_id
        deadline = answer_deadline(services.settings.request_timeout_seconds)
        async with answered_within(deadline, "events start"):
            if resume is None:
                start = await live.head(organization_id)
            else:
                start = await live.resume_point(organization_id, resume)
        # A client that stops reading leaves this stream stuck sending, where it cannot see
        # that it fell behind: once it has, the socket is closed unless the stream ends first.
        closing: list[asyncio.Task[None]] = []

        async def close_when_stuck() -> None:
            await asyncio.sleep(STUCK_SECONDS)
            if info.context.disconnect is not None:
                # shielded: the socket's end cancels this stream, and so this task
                await asyncio.shield(info.context.disconnect(TOO_SLOW_CLOSE, "SUBSCRIBER_TOO_SLOW"))

        def overflowed() -> None:
            if not closing:
                closing.append(asyncio.create_task(close_when_stuck()))

        stream = live.stream(organization_id, start, on_overflow=overflowed)
        try:
            async for rows in stream:
                if wanted is not None:
                    rows = [r for r in rows if r.type in wanted]
                    if not rows:
                        continue
                # The credential is checked again and the principal re-read before each
                # batch: a revoked token ends the stream UNAUTHENTICATED; a demotion or a lower
                # clearance narrows what follows.
                await info.context.renew()
                principal = info.context.require_principal()
                for row in rows:
                    if may_receive_event(
                        principal,
                        organization_id=row.organization_id,
                        event_type=row.type,
                        classification=row.classification,
                        department=row.department,
                    ):
                        yield CloudEvent.from_row(row)
        finally:
            for task in closing:
                task.cancel()
            await stream.aclose()
