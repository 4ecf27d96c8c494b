"""An organization's webhook endpoints: registered, listed, changed, disabled and enabled,
deleted, their secret rotated, tested, and their deliveries read and sent again, by its ADMINs
(tokens with ``webhooks:admin``). Each change is audited in its transaction (and so becomes a
``prism.webhook.*`` event). The secret is shown once, when it is made; it is stored sealed
with the organization's data key, bound to its endpoint."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.errors import BadUserInput, Conflict, not_found
from prism.events import catalog
from prism.models import webhooks as models
from prism.models.enums import WebhookDeliveryStatus
from prism.models.pagination import Page, PageRequest
from prism.models.webhooks import WebhookDelivery, WebhookEndpoint
from prism.services import Services
from prism.webhooks import clearance, guard, signing

MAX_WEBHOOKS = 20
MAX_EVENT_TYPES = 50
MAX_DESCRIPTION = 500
# After a rotation, deliveries are signed with the new and the previous secret for this long.
ROTATION_GRACE = timedelta(hours=24)
_PATTERN = re.compile(r"^prism\.[a-z_]{1,40}\.\*$")


@dataclass(frozen=True)
class WithSecret:
    """An endpoint and its new secret (shown this once)."""

    endpoint: WebhookEndpoint
    secret: str


def _secret_context(endpoint_id: uuid.UUID) -> bytes:
    return b"prism-webhook-secret:" + endpoint_id.bytes


async def seal_secret(
    session: AsyncSession, services: Services, endpoint: WebhookEndpoint, secret: str
) -> bytes:
    return await services.envelope.seal(
        session, endpoint.organization_id, secret.encode(), _secret_context(endpoint.id)
    )


async def open_secrets(
    session: AsyncSession, services: Services, endpoint: WebhookEndpoint, now: datetime
) -> list[str]:
    """The secrets a delivery is signed with: the current one, and the previous one during
    a rotation's grace period."""
    context = _secret_context(endpoint.id)
    org = endpoint.organization_id
    found = [(await services.envelope.open(session, org, endpoint.secret_sealed, context)).decode()]
    if (
        endpoint.previous_secret_sealed is not None
        and endpoint.previous_secret_until is not None
        and endpoint.previous_secret_until > now
    ):
        previous = await services.envelope.open(
            session, org, endpoint.previous_secret_sealed, context
        )
        found.append(previous.decode())
    return found


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """The subscribed types, each a type Prism writes, ``prism.<area>.*`` or ``*``."""
    chosen = list(dict.fromkeys(t.strip() for t in event_types))
    if not chosen:
        raise BadUserInput("Name at least one event type (or `*`).", argument="eventTypes")
    if len(chosen) > MAX_EVENT_TYPES:
        raise BadUserInput(
            f"At most {MAX_EVENT_TYPES} event types per webhook.", argument="eventTypes"
        )
    known = catalog.event_types()
    for name in chosen:
        if name != "*" and not _PATTERN.match(name) and name not in known:
            raise BadUserInput(
                f"`{name[:100]}` is not an event type (e.g. prism.document.processed, "
                "prism.document.*, *).",
                argument="eventTypes",
            )
    return chosen


def subscribes(endpoint: WebhookEndpoint, event_type: str) -> bool:
    for pattern in endpoint.event_types:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def _description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise BadUserInput(
            f"A description is at most {MAX_DESCRIPTION} characters.", argument="description"
        )
    return description.strip()


async def check_url(url: str, services: Services) -> str:
    """The URL, once it passes the guard (its host resolved, every address checked)."""
    try:
        await guard.resolve(url, services.settings)
    except guard.Refused as exc:
        raise BadUserInput(str(exc), argument="url") from exc
    return url


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


def _lower_clearance(endpoint: WebhookEndpoint, principal: Principal) -> None:
    """An ADMIN of lower clearance who changes a webhook takes it down to theirs: they may
    point it somewhere else, and it must then carry nothing they may not read."""
    if principal.clearance.rank < endpoint.clearance.rank:
        endpoint.clearance = principal.clearance
    endpoint.scopes = clearance.narrowed(endpoint.scopes, principal.scopes)


async def _read(
    session: AsyncSession, endpoint_id: uuid.UUID, *, lock: bool = False
) -> WebhookEndpoint:
    endpoint = await models.read_endpoint(session, endpoint_id, lock=lock)
    if endpoint is None:
        raise not_found("Webhook")
    return endpoint


async def create_webhook(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    *,
    url: str,
    event_types: Sequence[str],
    description: str = "",
) -> WithSecret:
    require(principal, Action.WEBHOOK_MANAGE)
    types = check_event_types(event_types)
    text = _description(description)
    await check_url(url, services)
    if await models.count_endpoints(session) >= MAX_WEBHOOKS:
        raise BadUserInput(
            f"An organization has at most {MAX_WEBHOOKS} webhooks: delete one first.",
            argument="url",
        )
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        organization_id=principal.organization_id,
        url=url,
        event_types=types,
        description=text,
        clearance=principal.clearance,
        scopes=clearance.narrowed(None, principal.scopes),
        secret_sealed=b"",
        since_sequence=0,
        enabled=True,
        created_by=principal.user_id,
    )
    endpoint.secret_sealed = await seal_secret(session, services, endpoint, secret)
    await audit.record(
        session,
        principal,
        meta,
        event_type="webhook.create",
        category="configuration",
        description=f"Registered a webhook to {_host(url)}",
        resource_type="Webhook",
        resource_id=endpoint.id,
        after={
            "host": _host(url),
            "eventTypes": types,
            "clearance": principal.clearance.value,
            "enabled": True,
        },
    )
    # After the audit event (whose write locked the organization's head): it gets the events
    # numbered after its own creation's, and the dispatcher follows the organization from here.
    endpoint.since_sequence = await models.head_sequence(session, principal.organization_id)
    session.add(endpoint)
    await session.flush()
    await models.follow_stream(session, principal.organization_id, endpoint.since_sequence)
    return WithSecret(endpoint, secret)


async def list_webhooks(session: AsyncSession, principal: Principal) -> list[WebhookEndpoint]:
    require(principal, Action.WEBHOOK_MANAGE)
    return await models.list_endpoints(session)


async def update_webhook(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    endpoint_id: uuid.UUID,
    *,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = None,
) -> WebhookEndpoint:
    require(principal, Action.WEBHOOK_MANAGE)
    endpoint = await _read(session, endpoint_id, lock=True)
    before: dict[str, Any] = {"host": _host(endpoint.url), "eventTypes": endpoint.event_types}
    if url is not None:
        endpoint.url = await check_url(url, services)
    if event_types is not None:
        endpoint.event_types = check_event_types(event_types)
    if description is not None:
        endpoint.description = _description(description)
    _lower_clearance(endpoint, principal)
    await audit.record(
        session,
        principal,
        meta,
        event_type="webhook.update",
        category="configuration",
        description=f"Changed a webhook to {_host(endpoint.url)}",
        resource_type="Webhook",
        resource_id=endpoint.id,
        before=before,
        after={
            "host": _host(endpoint.url),
            "eventTypes": endpoint.event_types,
            "clearance": endpoint.clearance.value,
        },
    )
    await session.flush()
    return endpoint


async def set_webhook_enabled(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    endpoint_id: uuid.UUID,
    *,
    enabled: bool,
) -> WebhookEndpoint:
    """Disable an endpoint (nothing is sent to it; events meanwhile are not kept for it) or
    enable it again (its failure streak starts afresh)."""
    require(principal, Action.WEBHOOK_MANAGE)
    endpoint = await _read(session, endpoint_id, lock=True)
    if endpoint.enabled == enabled:
        return endpoint
    now = datetime.now(UTC)
    endpoint.enabled = enabled
    if enabled:
        _lower_clearance(endpoint, principal)
        endpoint.disabled_at = endpoint.disabled_reason = endpoint.failing_since = None
    else:
        endpoint.disabled_at, endpoint.disabled_reason = now, "Disabled by an administrator."
    await audit.record(
        session,
        principal,
        meta,
        event_type="webhook.enable" if enabled else "webhook.disable",
        category="configuration",
        description=f"{'Enabled' if enabled else 'Disabled'} a webhook to {_host(endpoint.url)}",
        resource_type="Webhook",
        resource_id=endpoint.id,
        after={"enabled": enabled, "automatic": False},
    )
    await session.flush()
    return endpoint


async def delete_webhook(
    session: AsyncSession, principal: Principal, meta: RequestMeta, endpoint_id: uuid.UUID
) -> uuid.UUID:
    """Delete an endpoint and its delivery log."""
    require(principal, Action.WEBHOOK_MANAGE)
    endpoint = await _read(session, endpoint_id, lock=True)
    await audit.record(
        session,
        principal,
        meta,
        event_type="webhook.delete",
        category="configuration",
        description=f"Deleted a webhook to {_host(endpoint.url)}",
        resource_type="Webhook",
        resource_id=endpoint.id,
        before={"host": _host(endpoint.url), "eventTypes": endpoint.event_types},
    )
    await models.delete_endpoint(session, endpoint)
    return endpoint_id


async def rotate_webhook_secret(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    endpoint_id: uuid.UUID,
) -> WithSecret:
    """A new secret (shown this once); for ``ROTATION_GRACE`` deliveries carry a signature
    with the previous one too, so the receiver can switch without losing any."""
    require(principal, Action.WEBHOOK_MANAGE)
    endpoint = await _read(session, endpoint_id, lock=True)
    secret = signing.new_secret()
    until = datetime.now(UTC) + ROTATION_GRACE
    endpoint.previous_secret_sealed = endpoint.secret_sealed
    endpoint.previous_secret_until = until
    endpoint.secret_sealed = await seal_secret(session, services, endpoint, secret)
    _lower_clearance(endpoint, principal)
    await audit.record(
        session,
        principal,
        meta,
        event_type="webhook.rotate_secret",
        category="security",
        description=f"Rotated the secret of a webhook to {_host(endpoint.url)}",
        resource_type="Webhook",
        resource_id=endpoint.id,
        after={"previousSecretUntil": until.isoformat()},
    )
    await session.flush()
    return WithSecret(endpoint, secret)


def delivery(
    endpoint: WebhookEndpoint,
    *,
    event_id: uuid.UUID,
    event_type: str,
    body: str,
    attempt: int,
    due: datetime,
) -> WebhookDelivery:
    return WebhookDelivery(
        id=uuid.uuid4(),
        organization_id=endpoint.organization_id,
        endpoint_id=endpoint.id,
        event_id=event_id,
        event_type=event_type,
        body=body,
        attempt=attempt,
        status=WebhookDeliveryStatus.PENDING,
        next_attempt_at=due,
        window_start=due,
    )


def ping_event(endpoint: WebhookEndpoint, now: datetime) -> tuple[uuid.UUID, str]:
    event_id = uuid.uuid4()
    event = {
        "specversion": catalog.SPEC_VERSION,
        "id": str(event_id),
        "source": catalog.source_of(endpoint.organization_id),
        "type": catalog.WEBHOOK_PING,
        "time": now.isoformat().replace("+00:00", "Z"),
        "datacontenttype": catalog.CONTENT_TYPE,
        "organizationid": str(endpoint.organization_id),
        "data": {"organizationId": str(endpoint.organization_id), "webhookId": str(endpoint.id)},
    }
    return event_id, orjson.dumps(event).decode()


async def ping_webhook(
    session: AsyncSession, principal: Principal, meta: RequestMeta, endpoint_id: uuid.UUID
) -> WebhookDelivery:
    """Queue a ping (``prism.webhook.ping``) to the endpoint, sent at once by a dispatcher;
    its outcome is the delivery's."""
    require(principal, Action.WEBHOOK_MANAGE)
    endpoint = await _read(session, endpoint_id)
    if not endpoint.enabled:
        raise Conflict("The webhook is disabled: enable it first.")
    now = datetime.now(UTC)
    event_id, body = ping_event(endpoint, now)
    row = delivery(
        endpoint, event_id=event_id, event_type=catalog.WEBHOOK_PING, body=body, attempt=1, due=now
    )
    await models.add_deliveries(session, [row])
    await audit.record(
        session,
        principal,
        meta,
        event_type="webhook.test",
        category="configuration",
        description=f"Sent a test ping to a webhook to {_host(endpoint.url)}",
        resource_type="Webhook",
        resource_id=endpoint.id,
        after={"deliveryId": str(row.id)},
    )
    await models.notify_due(session)
    return row


async def webhook_deliveries(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: uuid.UUID,
    page: PageRequest,
    *,
    status: WebhookDeliveryStatus | None = None,
) -> Page[WebhookDelivery]:
    """The endpoint's delivery attempts, newest first."""
    require(principal, Action.WEBHOOK_MANAGE)
    await _read(session, endpoint_id)
    return await models.page_deliveries(session, endpoint_id, page, status=status)


async def redeliver_webhook(
    session: AsyncSession, principal: Principal, meta: RequestMeta, delivery_id: uuid.UUID
) -> WebhookDelivery:
    """Send a delivery's event again (a new attempt, due now, retried like the first)."""
    require(principal, Action.WEBHOOK_MANAGE)
    previous = await models.read_delivery(session, delivery_id)
    if previous is None:
        raise not_found("WebhookDelivery")
    endpoint = await _read(session, previous.endpoint_id)
    if not endpoint.enabled:
        raise Conflict("The webhook is disabled: enable it first.")
    if not clearance.may_send(endpoint.clearance, endpoint.scopes, orjson.loads(previous.body)):
        # Registered again at a lower clearance since: the event is no longer its to carry.
        raise not_found("WebhookDelivery")
    attempt = await models.last_attempt(session, endpoint.id, previous.event_id) + 1
    row = delivery(
        endpoint,
        event_id=previous.event_id,
        event_type=previous.event_type,
        body=previous.body,
        attempt=attempt,
        due=datetime.now(UTC),
    )
    await models.add_deliveries(session, [row])
    await audit.record(
        session,
        principal,
        meta,
        event_type="webhook.redeliver",
        category="configuration",
        description=f"Redelivered an event to a webhook to {_host(endpoint.url)}",
        resource_type="Webhook",
        resource_id=endpoint.id,
        after={"deliveryId": str(row.id), "eventId": str(previous.event_id)},
    )
    await models.notify_due(session)
    return row
