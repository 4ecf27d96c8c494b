"""Partners' webhooks against a real HTTP receiver on loopback (PRISM_WEBHOOK_ALLOW_PRIVATE):
delivered signed (checked with the `standardwebhooks` library, as a partner would), retried,
redelivered, disabled after failing for the window; the SSRF guard; the secret shown once
and stored sealed; ADMINs only; clearance."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from prism.audit import OPERATOR
from prism.authz.principal import SCOPES
from prism.config import Settings
from prism.models import outbox
from prism.models.enums import Classification, Role
from prism.models.webhooks import WebhookEndpoint
from prism.observability import WEBHOOK_DELIVERIES
from prism.services import Services
from prism.tokens import api_tokens
from prism.web.app import create_app
from prism.webhooks import guard
from prism.webhooks.dispatcher import Dispatcher
from tests.conftest import client_of
from tests.factories import Tenant, add_document, add_user, codes, gid, gql, make_tenant
from tests.webhook_receiver import Receiver, start_receiver, victim_webhook

CREATE = """mutation($u: String!, $t: [String!]!) {
  createWebhook(url: $u, eventTypes: $t, description: "partner") {
    secret webhook { id url clearance enabled eventTypes } } }"""
UPDATE_USER = "mutation($id: ID!, $r: Role) { updateUser(input: {id: $id, role: $r}) { id } }"
DELIVERIES = """query($id: ID!) { webhookDeliveries(webhookId: $id, first: 50) { edges { node {
  id eventId eventType attempt status responseCode latencyMs error nextAttemptAt } } } }"""
WEBHOOKS = "{ webhooks { id enabled disabledReason failingSince clearance } }"


@pytest.fixture(scope="module")
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_allow_private": True,
            "webhook_allow_http": True,
            "webhook_retry_first_seconds": 0.05,
            "webhook_timeout_seconds": 1.5,
            "webhook_max_response_bytes": 1024,
        }
    )


@pytest.fixture(scope="module")
async def hook_app(hook_settings: Settings, database_url: str) -> AsyncIterator[Any]:
    # An app of its own (private targets allowed); a loaded machine may take its time to
    # close the app's connections at the end of the module.
    application = create_app(hook_settings, database_url=database_url)
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60):
        yield application


@pytest.fixture
async def hook_client(hook_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(hook_app) as http:
        yield http


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = start_receiver()
    yield made
    made.close()


def dispatcher(services: Services, settings: Settings, **update: Any) -> Dispatcher:
    chosen = settings.model_copy(update=update) if update else settings
    return Dispatcher(dataclasses.replace(services, settings=chosen))


async def until(
    check: Callable[[], Awaitable[bool]], runner: Dispatcher, seconds: float = 15
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await runner.drain()
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not reached in time")


async def create(
    client: httpx.AsyncClient, token: str, url: str, types: list[str] | None = None
) -> dict[str, Any]:
    body = await gql(client, CREATE, {"u": url, "t": types or ["prism.user.*"]}, token=token)
    assert body.get("errors") is None, body
    made: dict[str, Any] = body["data"]["createWebhook"]
    return made


async def change_a_user(client: httpx.AsyncClient, tenant: Tenant, role: str = "APPROVER") -> None:
    body = await gql(
        client,
        UPDATE_USER,
        {"id": tenant.user_gid(Role.VIEWER), "r": role},
        token=tenant.tokens[Role.ADMIN],
    )
    assert body.get("errors") is None, body


async def deliveries(client: httpx.AsyncClient, token: str, webhook_id: str) -> list[Any]:
    body = await gql(client, DELIVERIES, {"id": webhook_id}, token=token)
    assert body.get("errors") is None, body
    return [e["node"] for e in body["data"]["webhookDeliveries"]["edges"]]


def _signed_by(secret: str, received: Any) -> bool:
    try:
        verified(secret, received)
    except WebhookVerificationError:
        return False
    return True


def verified(secret: str, received: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


async def test_a_change_is_delivered_signed_as_standard_webhooks_says(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    admin = tenant.tokens[Role.ADMIN]
    made = await create(hook_client, admin, receiver.to())
    assert made["secret"].startswith("whsec_")
    assert made["webhook"]["clearance"] == "RESTRICTED"
    await change_a_user(hook_client, tenant)
    runner = dispatcher(services, hook_settings)

    async def arrived() -> bool:
        return len(receiver.received) >= 1

    await until(arrived, runner)
    (got,) = receiver.received
    event = verified(made["secret"], got)
    assert event["type"] == "prism.user.updated"
    assert event["organizationid"] == str(tenant.org_id)
    assert got.headers["webhook-id"] == event["id"]
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    assert got.headers["content-type"] == guard.CONTENT_TYPE
    # another secret does not verify it
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)
    (logged,) = await deliveries(hook_client, admin, made["webhook"]["id"])
    assert logged["status"] == "SUCCEEDED"
    assert logged["responseCode"] == 200
    assert logged["eventId"] == event["id"]
    assert logged["latencyMs"] is not None
    assert logged["attempt"] == 1
    # the webhook's own creation (before it) and events of other types are not sent
    await gql(hook_client, "mutation { logout { ok } }", token=admin)
    await runner.drain()
    assert len(receiver.received) == 1


async def test_failed_attempts_are_retried_with_backoff_until_one_succeeds(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    admin = tenant.tokens[Role.ADMIN]
    made = await create(hook_client, admin, receiver.to())
    receiver.script.extend([500, 503])
    counted = {r: WEBHOOK_DELIVERIES.labels(r)._value.get() for r in ("delivered", "failed")}
    await change_a_user(hook_client, tenant)
    runner = dispatcher(services, hook_settings)

    async def succeeded() -> bool:
        found = await deliveries(hook_client, admin, made["webhook"]["id"])
        return any(d["status"] == "SUCCEEDED" for d in found)

    await until(succeeded, runner)
    found = sorted(
        await deliveries(hook_client, admin, made["webhook"]["id"]), key=lambda d: d["attempt"]
    )
    assert [(d["attempt"], d["status"], d["responseCode"]) for d in found] == [
        (1, "FAILED", 500),
        (2, "FAILED", 503),
        (3, "SUCCEEDED", 200),
    ]
    assert all(d["nextAttemptAt"] for d in found[:2])
    assert found[0]["error"] == "HTTP 500"
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    for got in receiver.received:
        verified(made["secret"], got)
    (hook,) = (await gql(hook_client, WEBHOOKS, token=admin))["data"]["webhooks"]
    assert hook["failingSince"] is None
    # counted for /metrics (other tests' deliveries may run in this process too)
    assert WEBHOOK_DELIVERIES.labels("failed")._value.get() >= counted["failed"] + 2
    assert WEBHOOK_DELIVERIES.labels("delivered")._value.get() >= counted["delivered"] + 1


async def test_a_delivery_is_sent_again_on_request(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    admin = tenant.tokens[Role.ADMIN]
    made = await create(hook_client, admin, receiver.to())
    await change_a_user(hook_client, tenant)
    runner = dispatcher(services, hook_settings)
    await runner.drain()
    (first,) = await deliveries(hook_client, admin, made["webhook"]["id"])
    again = await gql(
        hook_client,
        "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { attempt status eventId } }",
        {"id": first["id"]},
        token=admin,
    )
    assert again["data"]["redeliverWebhook"] == {
        "attempt": 2,
        "status": "PENDING",
        "eventId": first["eventId"],
    }
    await runner.drain()
    assert len(receiver.received) == 2
    assert receiver.received[0].body == receiver.received[1].body
    assert verified(made["secret"], receiver.received[1])["id"] == first["eventId"]
    # a test ping is a delivery too
    ping = await gql(
        hook_client,
        "mutation($id: ID!) { testWebhook(id: $id) { eventType status } }",
        {"id": made["webhook"]["id"]},
        token=admin,
    )
    assert ping["data"]["testWebhook"] == {"eventType": "prism.webhook.ping", "status": "PENDING"}
    await runner.drain()
    assert verified(made["secret"], receiver.received[2])["type"] == "prism.webhook.ping"


async def test_an_endpoint_failing_for_the_window_is_disabled_and_the_organization_told(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    admin = tenant.tokens[Role.ADMIN]
    made = await create(hook_client, admin, receiver.to())
    receiver.default = 500
    await change_a_user(hook_client, tenant)
    runner = dispatcher(services, hook_settings, webhook_disable_after_hours=0.4 / 3600)

    async def disabled() -> bool:
        (hook,) = (await gql(hook_client, WEBHOOKS, token=admin))["data"]["webhooks"]
        return not hook["enabled"]

    await until(disabled, runner)
    (hook,) = (await gql(hook_client, WEBHOOKS, token=admin))["data"]["webhooks"]
    assert "failed" in hook["disabledReason"]
    assert len(receiver.received) >= 2
    async with services.db.transaction(tenant.org_id) as session:
        events = await outbox.read_after(session, tenant.org_id, 0, 1000)
    told = [orjson.loads(e.event) for e in events if e.type == "prism.webhook.disabled"]
    assert len(told) == 1
    assert told[0]["data"]["automatic"] is True
    assert told[0]["data"]["resourceType"] == "Webhook"
    # nothing more is sent to it, though an attempt is still pending
    sent = len(receiver.received)
    await change_a_user(hook_client, tenant, "REVIEWER")
    await runner.drain()
    assert len(receiver.received) == sent
    # enabling it again sends what is pending
    receiver.default = 200
    enabled = await gql(
        hook_client,
        "mutation($id: ID!) { enableWebhook(id: $id) { enabled failingSince } }",
        {"id": made["webhook"]["id"]},
        token=admin,
    )
    assert enabled["data"]["enableWebhook"] == {"enabled": True, "failingSince": None}


ADDRESSES = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "127.1.2.3",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",  # noqa: S104 - an address refused, not bound
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "[::1]",
    "[::]",
    "[fe80::1]",
    "[fc00::1]",
    "[ff02::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]",
    "[2002:7f00:1::1]",
    "[64:ff9b::a00:1]",
    "[fec0::1]",  # deprecated site-local
    "192.88.99.1",  # the retired 6to4 relay anycast
    "localhost",
    "localhost.",
    "2130706433",  # 127.0.0.1 in the forms inet_aton reads
    "127.1",
    "0x7f.0.0.1",
]


@pytest.mark.parametrize("host", ADDRESSES)
async def test_private_and_special_addresses_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, host: str
) -> None:
    body = await gql(
        client,
        CREATE,
        {"u": f"https://{host}:8443/hook", "t": ["*"]},
        token=tenant.tokens[Role.ADMIN],
    )
    assert codes(body) == ["BAD_USER_INPUT"], body
    # refused for its address, not for failing to resolve
    assert body["errors"][0]["message"].endswith("address: refused."), body


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",
        "https://user:pw@93.184.215.14/hook",
        "ftp://93.184.215.14/hook",
        "https://93.184.215.14/hook#x",
        "https:///hook",
        "https://93.184.215.14:0/hook",
        "https://host.invalid/hook",
        "https://93.184.215.14/ho ok",
    ],
)
async def test_urls_that_are_not_plain_https_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, url: str
) -> None:
    body = await gql(client, CREATE, {"u": url, "t": ["*"]}, token=tenant.tokens[Role.ADMIN])
    assert codes(body) == ["BAD_USER_INPUT"], body


def test_with_private_allowed_multicast_broadcast_and_unspecified_stay_refused() -> None:
    import ipaddress

    refused = ("224.0.0.1", "255.255.255.255", "0.0.0.0", "ff02::1", "::", "::ffff:0.0.0.0")  # noqa: S104
    for address in refused:
        assert guard.refusal(ipaddress.ip_address(address), allow_private=True), address
    for address in ("127.0.0.1", "10.1.2.3", "::1", "fe80::1"):
        assert guard.refusal(ipaddress.ip_address(address), allow_private=True) is None
        assert guard.refusal(ipaddress.ip_address(address), allow_private=False)
    assert guard.refusal(ipaddress.ip_address("93.184.215.14"), allow_private=False) is None


async def test_the_address_is_checked_again_at_send(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    admin = tenant.tokens[Role.ADMIN]
    made = await create(hook_client, admin, receiver.to())
    await change_a_user(hook_client, tenant)
    strict = dispatcher(services, hook_settings, webhook_allow_private=False)
    await strict.drain()
    assert receiver.received == []
    found = await deliveries(hook_client, admin, made["webhook"]["id"])
    logged = next(d for d in found if d["attempt"] == 1)
    assert logged["status"] == "FAILED"
    assert "loopback" in logged["error"]
    assert logged["responseCode"] is None


async def test_redirects_are_not_followed(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    admin = tenant.tokens[Role.ADMIN]
    made = await create(hook_client, admin, receiver.to())
    receiver.script.append("redirect")
    await change_a_user(hook_client, tenant)
    await dispatcher(services, hook_settings, webhook_retry_first_seconds=3600).drain()
    assert [r.path for r in receiver.received] == ["/hook"]
    found = await deliveries(hook_client, admin, made["webhook"]["id"])
    logged = next(d for d in found if d["attempt"] == 1)
    assert logged["status"] == "FAILED"
    assert logged["responseCode"] == 302
    assert "redirects are not followed" in logged["error"]


async def test_the_answer_is_read_up_to_the_cap_and_within_the_deadline(
    hook_settings: Settings, receiver: Receiver
) -> None:
    target = await guard.resolve(receiver.to(), hook_settings)
    receiver.script.append("big")
    started = time.monotonic()
    outcome = await guard.send(target, {"webhook-id": "x"}, b"{}", hook_settings)
    assert outcome.ok
    assert 0 < outcome.read_bytes <= hook_settings.webhook_max_response_bytes
    assert time.monotonic() - started < 1.5
    receiver.script.append("slow")
    started = time.monotonic()
    outcome = await guard.send(target, {"webhook-id": "y"}, b"{}", hook_settings)
    assert not outcome.ok
    assert outcome.error is not None
    assert "no answer within" in outcome.error
    assert time.monotonic() - started < hook_settings.webhook_timeout_seconds + 1


async def test_the_secret_is_shown_once_and_stored_sealed(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    admin = tenant.tokens[Role.ADMIN]
    made = await create(hook_client, admin, receiver.to())
    secret = made["secret"]
    listed = await gql(hook_client, "{ webhooks { id url } }", token=admin)
    assert secret not in orjson.dumps(listed).decode()
    async with services.db.transaction(tenant.org_id) as session:
        sealed = (await session.execute(sa.select(WebhookEndpoint.secret_sealed))).scalar_one()
    from prism.webhooks.signing import key_of

    assert secret.encode() not in sealed
    assert key_of(secret) not in sealed
    # rotation: a new secret, shown once; deliveries carry signatures with both for a while
    rotated = await gql(
        hook_client,
        "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret webhook { "
        "previousSecretUntil } } }",
        {"id": made["webhook"]["id"]},
        token=admin,
    )
    new_secret = rotated["data"]["rotateWebhookSecret"]["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != secret
    assert rotated["data"]["rotateWebhookSecret"]["webhook"]["previousSecretUntil"]
    await change_a_user(hook_client, tenant)
    await dispatcher(services, hook_settings).drain()
    (got,) = receiver.received
    assert verified(new_secret, got)["type"] == "prism.user.updated"
    assert verified(secret, got)["type"] == "prism.user.updated"


async def test_only_admins_and_webhook_admin_tokens_manage_webhooks(
    services: Services, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    for role in (Role.VIEWER, Role.REVIEWER, Role.APPROVER, Role.AUDITOR):
        body = await gql(
            hook_client, CREATE, {"u": receiver.to(), "t": ["*"]}, token=tenant.tokens[role]
        )
        assert codes(body) == ["FORBIDDEN"], (role, body)
        body = await gql(hook_client, "{ webhooks { id } }", token=tenant.tokens[role])
        assert codes(body) == ["FORBIDDEN"], (role, body)
    narrow = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="no webhooks",
        scopes=sorted(SCOPES - {"webhooks:admin"}),
        user_email=tenant.email(Role.ADMIN),
    )
    body = await gql(hook_client, CREATE, {"u": receiver.to(), "t": ["*"]}, token=narrow.secret)
    assert codes(body) == ["FORBIDDEN"], body
    scoped = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="webhooks only",
        scopes=["webhooks:admin"],
        user_email=tenant.email(Role.ADMIN),
    )
    await create(hook_client, scoped.secret, receiver.to())
    # every change is audited
    log = await gql(
        hook_client,
        "{ auditLog(first: 100) { edges { node { eventType } } } }",
        token=tenant.tokens[Role.ADMIN],
    )
    assert "webhook.create" in {e["node"]["eventType"] for e in log["data"]["auditLog"]["edges"]}


async def test_a_webhook_never_carries_events_about_documents_above_its_clearance(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    _, internal_admin = await add_user(
        services, tenant, role=Role.ADMIN, clearance=Classification.INTERNAL
    )
    made = await create(hook_client, internal_admin, receiver.to(), ["prism.document.*"])
    assert made["webhook"]["clearance"] == "INTERNAL"
    public = await add_document(services, tenant, classification=Classification.PUBLIC)
    secret_doc = await add_document(services, tenant, classification=Classification.RESTRICTED)
    for document in (secret_doc, public):
        body = await gql(
            hook_client,
            "mutation($id: ID!) { updateDocument(input: {id: $id, documentType: REPORT}) { id } }",
            {"id": gid("Document", document.id)},
            token=tenant.tokens[Role.ADMIN],
        )
        assert body.get("errors") is None, body
    # a reclassification down from RESTRICTED speaks of a RESTRICTED document too
    body = await gql(
        hook_client,
        "mutation($id: ID!) { updateDocument(input: {id: $id, classification: PUBLIC}) { id } }",
        {"id": gid("Document", secret_doc.id)},
        token=tenant.tokens[Role.ADMIN],
    )
    assert body.get("errors") is None, body
    await dispatcher(services, hook_settings).drain()
    sent = [verified(made["secret"], r) for r in receiver.received]
    assert [e["subject"] for e in sent] == [f"Document/{public.id}"]
    assert str(secret_doc.id) not in b"".join(r.body for r in receiver.received).decode()


async def test_a_webhook_never_carries_events_its_registrant_s_token_may_not_read(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """Registered with a token scoped to webhooks alone (refused on the audit log), a
    webhook for every event gets none of the audit log's (users, sign-ins, tokens) nor the
    documents': the scopes its registrant's token had are what it may carry."""
    tenant = await make_tenant(services)
    admin, _ = await add_user(
        services, tenant, role=Role.ADMIN, clearance=Classification.RESTRICTED
    )
    narrow = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="hooks only",
        scopes=["webhooks:admin"],
        user_email=admin.email,
    )
    refused = await gql(
        hook_client, "{ auditLog(first: 1) { edges { node { id } } } }", token=narrow.secret
    )
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    made = await create(hook_client, narrow.secret, receiver.to(), ["*"])
    wide = await create(hook_client, tenant.tokens[Role.ADMIN], receiver.to(), ["*"])
    await change_a_user(hook_client, tenant)
    await add_document(services, tenant, classification=Classification.PUBLIC)
    await dispatcher(services, hook_settings).drain()
    by_secret = {made["secret"]: "narrow", wide["secret"]: "wide"}
    types: dict[str, set[str]] = {"narrow": set(), "wide": set()}
    for got in receiver.received:
        (name,) = [name for secret, name in by_secret.items() if _signed_by(secret, got)]
        types[name].add(orjson.loads(got.body)["type"])
    assert "prism.user.updated" in types["wide"]
    assert not {t for t in types["narrow"] if t.startswith(("prism.user.", "prism.document."))}


async def test_deliveries_of_another_organization_s_webhook_are_not_found(
    services: Services, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    webhook_id, _ = await victim_webhook(services, other_tenant)
    body = await gql(client, DELIVERIES, {"id": webhook_id}, token=tenant.tokens[Role.ADMIN])
    assert codes(body) == ["NOT_FOUND"], body
    listed = await gql(client, "{ webhooks { id } }", token=tenant.tokens[Role.ADMIN])
    assert webhook_id not in {w["id"] for w in listed["data"]["webhooks"]}


async def test_several_dispatchers_make_each_attempt_once(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    made = await create(hook_client, tenant.tokens[Role.ADMIN], receiver.to())
    roles = ["APPROVER", "REVIEWER", "AUDITOR", "VIEWER"] * 5
    for role in roles:
        await change_a_user(hook_client, tenant, role)
    runners = [dispatcher(services, hook_settings) for _ in range(3)]
    await asyncio.gather(*(runner.drain() for runner in runners))
    await asyncio.gather(*(runner.drain() for runner in runners))
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(roles)
    assert len(set(ids)) == len(roles)
    for got in receiver.received:
        verified(made["secret"], got)


async def test_the_connection_goes_to_the_address_that_was_checked(
    hook_settings: Settings, receiver: Receiver
) -> None:
    # A name that resolves nowhere now: the request still reaches the checked address, so a DNS
    # answer that changed after the check (rebinding) is never asked for.
    checked = await guard.resolve(receiver.to(), hook_settings)
    pinned = dataclasses.replace(checked, host="partner.invalid")
    outcome = await guard.send(pinned, {"webhook-id": "x"}, b"{}", hook_settings)
    assert outcome.ok, outcome
    (got,) = receiver.received
    assert got.headers["host"] == f"partner.invalid:{checked.port}"


async def test_the_dispatcher_wakes_on_notify(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    await create(hook_client, tenant.tokens[Role.ADMIN], receiver.to())
    runner = dispatcher(services, hook_settings, events_poll_seconds=60)
    await runner.drain()
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.sleep(0.5)  # listening, idle until the next NOTIFY
        started = time.time()
        await change_a_user(hook_client, tenant)
        deadline = time.monotonic() + 10
        while not receiver.received and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert receiver.received
        assert receiver.received[0].at - started < 5
    finally:
        stop.set()
        await task


async def test_finished_attempts_are_pruned_and_pending_ones_kept(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    admin = tenant.tokens[Role.ADMIN]
    made = await create(hook_client, admin, receiver.to())
    receiver.default = 500
    await change_a_user(hook_client, tenant)
    runner = dispatcher(services, hook_settings, webhook_retry_first_seconds=3600)
    await runner.drain()
    found = await deliveries(hook_client, admin, made["webhook"]["id"])
    assert sorted(d["status"] for d in found) == ["FAILED", "PENDING"]
    await dispatcher(services, hook_settings, webhook_delivery_retention_days=-1).prune()
    found = await deliveries(hook_client, admin, made["webhook"]["id"])
    assert [d["status"] for d in found] == ["PENDING"]


async def test_the_outbox_keeps_what_the_webhooks_cursor_has_not_passed(
    services: Services, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    await create(hook_client, tenant.tokens[Role.ADMIN], receiver.to())
    await change_a_user(hook_client, tenant)
    async with services.db.transaction(tenant.org_id) as session:
        before = await outbox.read_after(session, tenant.org_id, 0, 1000)
        cursor = await outbox.read_cursor(session, "webhooks", tenant.org_id)
    future = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
    async with services.db.transaction(None) as session:
        await outbox.prune(session, future, 100_000)
    async with services.db.transaction(tenant.org_id) as session:
        after = await outbox.read_after(session, tenant.org_id, 0, 1000)
    kept = [e.sequence for e in before if e.sequence > cursor]
    assert kept
    assert [e.sequence for e in after] == kept


def test_retries_span_the_whole_window_of_at_least_a_day(settings: Settings) -> None:
    from datetime import timedelta

    from prism.webhooks.dispatcher import next_attempt

    assert settings.webhook_retry_hours >= 24
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(20):  # the jitter differs each time
        now, attempt, times = start, 1, [start]
        while (due := next_attempt(settings, now, start, attempt)) is not None:
            assert due > now
            now, attempt = due, attempt + 1
            times.append(now)
        assert now - start == timedelta(hours=settings.webhook_retry_hours)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] <= timedelta(seconds=settings.webhook_retry_first_seconds)
        assert max(gaps) <= timedelta(seconds=settings.webhook_retry_max_interval_seconds)
        assert 10 <= attempt <= 40


async def test_the_command_delivers_what_is_due(
    services: Services, database_url: str, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    import os
    import subprocess
    import sys

    tenant = await make_tenant(services)
    made = await create(hook_client, tenant.tokens[Role.ADMIN], receiver.to())
    await change_a_user(hook_client, tenant)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env.update(
        PRISM_DATABASE_URL=database_url,
        PRISM_JWT_SECRET="j" * 40,
        PRISM_DATA_DIR=str(services.settings.data_dir),
        PRISM_WEBHOOK_ALLOW_PRIVATE="true",
        PRISM_WEBHOOK_ALLOW_HTTP="true",
        PRISM_LOG_LEVEL="WARNING",
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "prism.cli", "events", "webhooks", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "delivery attempts" in done.stderr + done.stdout
    sent = [verified(made["secret"], r)["type"] for r in receiver.received]
    assert sent == ["prism.user.updated"]


async def test_every_change_is_audited_and_a_lower_clearance_takes_the_webhook_down(
    services: Services, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = await make_tenant(services)
    admin = tenant.tokens[Role.ADMIN]
    made = await create(hook_client, admin, receiver.to(), ["prism.document.processed"])
    hook_id = made["webhook"]["id"]
    _, internal_admin = await add_user(
        services, tenant, role=Role.ADMIN, clearance=Classification.INTERNAL
    )
    changed = await gql(
        hook_client,
        "mutation($id: ID!, $u: String!) { updateWebhook(id: $id, url: $u, "
        'eventTypes: ["prism.document.*", "*"], description: "moved") { url eventTypes '
        "description clearance } }",
        {"id": hook_id, "u": receiver.to("/moved")},
        token=internal_admin,
    )
    assert changed["data"]["updateWebhook"] == {
        "url": receiver.to("/moved"),
        "eventTypes": ["prism.document.*", "*"],
        "description": "moved",
        "clearance": "INTERNAL",
    }
    for mutation in ("disableWebhook", "enableWebhook", "rotateWebhookSecret", "testWebhook"):
        body = await gql(
            hook_client,
            f"mutation($id: ID!) {{ {mutation}(id: $id) {{ __typename }} }}",
            {"id": hook_id},
            token=admin,
        )
        assert body.get("errors") is None, (mutation, body)
    deleted = await gql(
        hook_client,
        "mutation($id: ID!) { deleteWebhook(id: $id) { deletedId } }",
        {"id": hook_id},
        token=admin,
    )
    assert deleted["data"]["deleteWebhook"] == {"deletedId": hook_id}
    assert (await gql(hook_client, WEBHOOKS, token=admin))["data"]["webhooks"] == []
    log = await gql(
        hook_client, "{ auditLog(first: 100) { edges { node { eventType } } } }", token=admin
    )
    audited = [e["node"]["eventType"] for e in log["data"]["auditLog"]["edges"]]
    expected = [
        "webhook.create",
        "webhook.update",
        "webhook.disable",
        "webhook.enable",
        "webhook.rotate_secret",
        "webhook.test",
        "webhook.delete",
    ]
    assert [t for t in audited if t.startswith("webhook.")] == expected
    async with services.db.transaction(tenant.org_id) as session:
        events = await outbox.read_after(session, tenant.org_id, 0, 1000)
    assert [e.type for e in events if e.type.startswith("prism.webhook.")] == [
        "prism.webhook.created",
        "prism.webhook.updated",
        "prism.webhook.disabled",
        "prism.webhook.enabled",
        "prism.webhook.secret_rotated",
        "prism.webhook.tested",
        "prism.webhook.deleted",
    ]
    # the URL (which may hold a partner's token) is in no event
    assert not any(receiver.url.encode() in e.event for e in events)


@pytest.mark.parametrize(
    "types",
    [[], ["prism.document.nonsense"], ["document.processed"], ["prism.*"], ["x" * 200]],
)
async def test_unknown_event_types_are_refused(
    hook_client: httpx.AsyncClient, tenant: Tenant, receiver: Receiver, types: list[str]
) -> None:
    body = await gql(
        hook_client, CREATE, {"u": receiver.to(), "t": types}, token=tenant.tokens[Role.ADMIN]
    )
    assert codes(body) == ["BAD_USER_INPUT"], body


async def test_tls_names_the_host_and_checks_its_certificate_on_the_pinned_address(
    hook_settings: Settings, tmp_path: Any
) -> None:
    from tests.webhook_receiver import start_tls_receiver

    server, names = start_tls_receiver(tmp_path, "partner.test")
    try:
        port = server.server_address[1]
        pinned = guard.Target("https", "partner.test", port, "/hook", "127.0.0.1")
        outcome = await guard.send(pinned, {"webhook-id": "x"}, b"{}", hook_settings)
    finally:
        server.shutdown()
        server.server_close()
    # the handshake asked for the host's name, on the checked address, and the self-signed
    # certificate was refused: nothing was sent
    assert names == ["partner.test"]
    assert not outcome.ok
    assert outcome.status is None
    assert outcome.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error


async def test_prism_worker_runs_the_dispatcher(
    services: Services, hook_settings: Settings, hook_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    from prism.jobs.worker import Worker

    tenant = await make_tenant(services)
    made = await create(hook_client, tenant.tokens[Role.ADMIN], receiver.to())
    worker = Worker(dataclasses.replace(services, settings=hook_settings), concurrency=1)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_seconds=1))
    try:
        await change_a_user(hook_client, tenant)
        deadline = time.monotonic() + 15
        while not receiver.received and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    assert verified(made["secret"], receiver.received[0])["type"] == "prism.user.updated"


def test_a_partner_never_receives_prism_s_trace_context() -> None:
    """An event traced inside Prism carries its trace context for Prism's own consumers
    (Kafka); what a webhook delivers leaves it out, and the rest as it was."""
    from prism.webhooks.dispatcher import external

    event = {"id": "e1", "type": "prism.user.updated", "data": {"a": 1}}
    traced = {**event, "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "x"}
    assert orjson.loads(external(orjson.dumps(traced))) == event
    assert external(orjson.dumps(event)) == orjson.dumps(event).decode()
