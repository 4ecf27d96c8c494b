"""Webhook fields: GraphQL arguments in, one ``prism.webhooks.endpoints`` use case called."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from prism.execution.context import Context
from prism.execution.ids import expect_id
from prism.models.enums import WebhookDeliveryStatus
from prism.models.pagination import Page, PageRequest
from prism.models.webhooks import WebhookDelivery, WebhookEndpoint
from prism.webhooks import endpoints
from prism.webhooks.endpoints import WithSecret


async def webhooks(ctx: Context) -> list[WebhookEndpoint]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await endpoints.list_webhooks(session, principal)


async def create_webhook(
    ctx: Context, url: str, event_types: Sequence[str], description: str
) -> WithSecret:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await endpoints.create_webhook(
            session,
            ctx.services,
            principal,
            ctx.meta,
            url=url,
            event_types=event_types,
            description=description,
        )


async def update_webhook(
    ctx: Context,
    webhook_id: str,
    url: str | None,
    event_types: Sequence[str] | None,
    description: str | None,
) -> WebhookEndpoint:
    principal = ctx.require_principal()
    row_id = expect_id(webhook_id, "Webhook")
    async with ctx.transaction.write() as session:
        return await endpoints.update_webhook(
            session,
            ctx.services,
            principal,
            ctx.meta,
            row_id,
            url=url,
            event_types=event_types,
            description=description,
        )


async def set_enabled(ctx: Context, webhook_id: str, enabled: bool) -> WebhookEndpoint:
    principal = ctx.require_principal()
    row_id = expect_id(webhook_id, "Webhook")
    async with ctx.transaction.write() as session:
        return await endpoints.set_webhook_enabled(
            session, principal, ctx.meta, row_id, enabled=enabled
        )


async def delete_webhook(ctx: Context, webhook_id: str) -> uuid.UUID:
    principal = ctx.require_principal()
    row_id = expect_id(webhook_id, "Webhook")
    async with ctx.transaction.write() as session:
        return await endpoints.delete_webhook(session, principal, ctx.meta, row_id)


async def rotate_secret(ctx: Context, webhook_id: str) -> WithSecret:
    principal = ctx.require_principal()
    row_id = expect_id(webhook_id, "Webhook")
    async with ctx.transaction.write() as session:
        return await endpoints.rotate_webhook_secret(
            session, ctx.services, principal, ctx.meta, row_id
        )


async def ping(ctx: Context, webhook_id: str) -> WebhookDelivery:
    principal = ctx.require_principal()
    row_id = expect_id(webhook_id, "Webhook")
    async with ctx.transaction.write() as session:
        return await endpoints.ping_webhook(session, principal, ctx.meta, row_id)


async def deliveries(
    ctx: Context,
    webhook_id: str,
    status: WebhookDeliveryStatus | None,
    first: int | None,
    after: str | None,
) -> Page[WebhookDelivery]:
    principal = ctx.require_principal()
    row_id = expect_id(webhook_id, "Webhook")
    page = PageRequest.parse(first, after, ordering="webhookDeliveries", descending=True)
    async with ctx.transaction.read() as session:
        return await endpoints.webhook_deliveries(session, principal, row_id, page, status=status)


async def redeliver(ctx: Context, delivery_id: str) -> WebhookDelivery:
    principal = ctx.require_principal()
    row_id = expect_id(delivery_id, "WebhookDelivery")
    async with ctx.transaction.write() as session:
        return await endpoints.redeliver_webhook(session, principal, ctx.meta, row_id)
