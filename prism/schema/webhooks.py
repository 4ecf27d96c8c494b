"""Partners' webhooks over GraphQL: an organization's ADMIN (tokens with `webhooks:admin`)
registers, lists, changes, disables, enables, deletes and tests endpoints, rotates their
secrets (shown once), and reads and redelivers their deliveries."""

from __future__ import annotations

from datetime import datetime

import strawberry

from prism.execution.ids import to_global_id
from prism.models import webhooks as models
from prism.models.enums import Classification, WebhookDeliveryStatus
from prism.models.pagination import Page
from prism.resolvers import webhooks as webhook_resolvers
from prism.schema.base import After, Edge, First, Info, PageInfo, edges_of
from prism.webhooks.endpoints import WithSecret

strawberry.enum(
    WebhookDeliveryStatus,
    description="A delivery attempt: PENDING (due, or being sent), SUCCEEDED (answered 2xx) or "
    "FAILED.",
)


@strawberry.type(
    description="An endpoint the organization's events are sent to (Standard Webhooks "
    "signatures; the body is the CloudEvent)."
)
class Webhook:
    id: strawberry.ID = strawberry.field(description="Opaque global ID.")
    url: str
    event_types: list[str] = strawberry.field(
        description="The CloudEvents types it is sent (`prism.document.processed`, "
        "`prism.document.*`, `*`)."
    )
    description: str
    clearance: Classification = strawberry.field(
        description="It is never sent an event about a document above this (the clearance of "
        "the ADMIN who registered or last changed it)."
    )
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None = strawberry.field(
        description="Since when every attempt has failed (null: the last one succeeded)."
    )
    previous_secret_until: datetime | None = strawberry.field(
        description="After a rotation: until when deliveries are also signed with the "
        "previous secret."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: models.WebhookEndpoint) -> Webhook:
        return cls(
            id=strawberry.ID(to_global_id("Webhook", row.id)),
            url=row.url,
            event_types=list(row.event_types),
            description=row.description,
            clearance=row.clearance,
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            disabled_at=row.disabled_at,
            failing_since=row.failing_since,
            previous_secret_until=row.previous_secret_until,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type(description="A webhook and its signing secret, shown this once.")
class WebhookWithSecret:
    webhook: Webhook
    secret: str = strawberry.field(
        description="`whsec_` + base64: the key of the `webhook-signature` HMAC. Prism never "
        "shows it again."
    )

    @classmethod
    def of(cls, made: WithSecret) -> WebhookWithSecret:
        return cls(webhook=Webhook.of(made.endpoint), secret=made.secret)


@strawberry.type(description="One attempt to send one event to a webhook.")
class WebhookDelivery:
    id: strawberry.ID = strawberry.field(description="Opaque global ID.")
    webhook_id: strawberry.ID
    event_id: str = strawberry.field(description="The CloudEvent's id (`webhook-id`).")
    event_type: str
    attempt: int = strawberry.field(description="1 for the first attempt of the event.")
    status: WebhookDeliveryStatus
    response_code: int | None
    latency_ms: int | None
    error: str | None
    next_attempt_at: datetime | None = strawberry.field(
        description="PENDING: when it is due; FAILED: when it is retried (null: it is not)."
    )
    attempted_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, row: models.WebhookDelivery) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(to_global_id("WebhookDelivery", row.id)),
            webhook_id=strawberry.ID(to_global_id("Webhook", row.endpoint_id)),
            event_id=str(row.event_id),
            event_type=row.event_type,
            attempt=row.attempt,
            status=row.status,
            response_code=row.response_code,
            latency_ms=row.latency_ms,
            error=row.error,
            next_attempt_at=row.next_attempt_at,
            attempted_at=row.attempted_at,
            created_at=row.created_at,
        )


@strawberry.type
class WebhookDeliveryEdge(Edge):
    node: WebhookDelivery


@strawberry.type(description="A page of a webhook's delivery attempts, newest first.")
class WebhookDeliveryConnection:
    edges: list[WebhookDeliveryEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[models.WebhookDelivery]) -> WebhookDeliveryConnection:
        return cls(
            edges=edges_of(page, WebhookDelivery.of, WebhookDeliveryEdge),
            page_info=PageInfo.from_page(page),
        )


@strawberry.type(description="What `deleteWebhook` removed.")
class DeleteWebhookPayload:
    deleted_id: strawberry.ID


@strawberry.type
class WebhookQuery:
    @strawberry.field(
        description="The organization's webhooks (ADMIN; tokens with `webhooks:admin`)."
    )
    async def webhooks(self, info: Info) -> list[Webhook]:
        return [Webhook.of(row) for row in await webhook_resolvers.webhooks(info.context)]

    @strawberry.field(
        description="A webhook's delivery attempts, newest first (ADMIN; tokens with "
        "`webhooks:admin`)."
    )
    async def webhook_deliveries(
        self,
        info: Info,
        webhook_id: strawberry.ID,
        status: WebhookDeliveryStatus | None = None,
        first: First = None,
        after: After = None,
    ) -> WebhookDeliveryConnection:
        page = await webhook_resolvers.deliveries(info.context, webhook_id, status, first, after)
        return WebhookDeliveryConnection.from_page(page)


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(
        description="Register a webhook (ADMIN; tokens with `webhooks:admin`): an https URL "
        "whose host resolves to public addresses only. Its secret is in the answer, and "
        "only there."
    )
    async def create_webhook(
        self, info: Info, url: str, event_types: list[str], description: str = ""
    ) -> WebhookWithSecret:
        made = await webhook_resolvers.create_webhook(info.context, url, event_types, description)
        return WebhookWithSecret.of(made)

    @strawberry.mutation(description="Change a webhook's URL, event types or description.")
    async def update_webhook(
        self,
        info: Info,
        id: strawberry.ID,
        url: str | None = None,
        event_types: list[str] | None = None,
        description: str | None = None,
    ) -> Webhook:
        row = await webhook_resolvers.update_webhook(
            info.context, id, url, event_types, description
        )
        return Webhook.of(row)

    @strawberry.mutation(description="Stop sending to a webhook (until it is enabled).")
    async def disable_webhook(self, info: Info, id: strawberry.ID) -> Webhook:
        return Webhook.of(await webhook_resolvers.set_enabled(info.context, id, False))

    @strawberry.mutation(
        description="Send to a webhook again (a disabled one's failure streak starts afresh)."
    )
    async def enable_webhook(self, info: Info, id: strawberry.ID) -> Webhook:
        return Webhook.of(await webhook_resolvers.set_enabled(info.context, id, True))

    @strawberry.mutation(description="Delete a webhook and its delivery log.")
    async def delete_webhook(self, info: Info, id: strawberry.ID) -> DeleteWebhookPayload:
        await webhook_resolvers.delete_webhook(info.context, id)
        return DeleteWebhookPayload(deleted_id=id)

    @strawberry.mutation(
        description="A new secret, shown this once; for 24 hours deliveries are signed with "
        "the previous one too."
    )
    async def rotate_webhook_secret(self, info: Info, id: strawberry.ID) -> WebhookWithSecret:
        return WebhookWithSecret.of(await webhook_resolvers.rotate_secret(info.context, id))

    @strawberry.mutation(
        description="Send the webhook a ping (`prism.webhook.ping`) now; the delivery shows "
        "how it went."
    )
    async def test_webhook(self, info: Info, id: strawberry.ID) -> WebhookDelivery:
        return WebhookDelivery.of(await webhook_resolvers.ping(info.context, id))

    @strawberry.mutation(
        description="Send a delivery's event again, now (a new attempt, retried like any)."
    )
    async def redeliver_webhook(self, info: Info, delivery_id: strawberry.ID) -> WebhookDelivery:
        return WebhookDelivery.of(await webhook_resolvers.redeliver(info.context, delivery_id))
