"""The HTTP edge in production: who the client is (X-Forwarded-For believed only from
configured proxies, one derivation for throttling, rate limits and audit events), who may read
/metrics, and sign-in throttling engaging at exactly the numbers docs/api.md gives."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr, ValidationError

from prism.config import Mode, Settings
from prism.models.audit import AuditEvent
from prism.models.enums import Role
from prism.services import Services
from prism.web.edge import TrustedProxies
from tests.conftest import app_with
from tests.factories import PASSWORD, Tenant, codes

LOGIN = """mutation($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) { accessToken } }"""
WRONG = "not the password at all"
METRICS_TOKEN = "scrape-" + "s" * 30


def _ip(prefix: str = "198.18") -> str:
    n = uuid.uuid4().int
    return f"{prefix}.{(n >> 8) % 256}.{(n >> 16) % 254 + 1}"


@asynccontextmanager
async def _peer(app: Any, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as http:
        yield http


async def _login(
    client: httpx.AsyncClient, email: str, password: str, forwarded: str | None = None
) -> dict[str, Any]:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    response = await client.post(
        "/graphql",
        json={"query": LOGIN, "variables": {"email": email, "password": password}},
        headers=headers,
    )
    body: dict[str, Any] = response.json()
    return body


async def _last_login_ip(services: Services, tenant: Tenant, role: Role) -> str | None:
    async with services.db.transaction(tenant.org_id) as session:
        ip = await session.scalar(
            sa.select(sa.cast(AuditEvent.ip_address, sa.Text))
            .where(
                AuditEvent.event_type == "auth.login",
                AuditEvent.actor_id == tenant.users[role].id,
            )
            .order_by(AuditEvent.created_at.desc())
            .limit(1)
        )
    return None if ip is None else str(ip).split("/")[0]


# --- the client address ------------------------------------------------------------------------


def test_the_client_is_the_rightmost_hop_that_is_not_a_trusted_proxy() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8, 2001:db8::/32")
    # an untrusted peer: its header is the client's own writing, ignored
    assert proxies.client_address("203.0.113.9", ["198.51.100.1"]) == "203.0.113.9"
    # a trusted peer: walk from the right over trusted hops
    assert proxies.client_address("10.0.0.1", ["198.51.100.1"]) == "198.51.100.1"
    assert proxies.client_address("10.0.0.1", ["1.1.1.1, 198.51.100.1, 10.2.3.4"]) == (
        "198.51.100.1"
    )
    # several headers are one list, in order
    assert proxies.client_address("10.0.0.1", ["1.1.1.1", "198.51.100.2, 10.2.3.4"]) == (
        "198.51.100.2"
    )
    # garbage stops the walk at the last trusted hop; no header: the proxy itself
    assert proxies.client_address("10.0.0.1", ["198.51.100.1, bogus, 10.2.3.4"]) == "10.2.3.4"
    assert proxies.client_address("10.0.0.1", []) == "10.0.0.1"
    assert proxies.client_address("2001:db8::1", ["2001:db9::5"]) == "2001:db9::5"
    # nothing trusted by default
    assert TrustedProxies.parse("").client_address("127.0.0.1", ["198.51.100.1"]) == "127.0.0.1"
    with pytest.raises(ValidationError):
        Settings(trusted_proxies="10.0.0.0/8, not-a-network")


async def test_forwarded_for_from_an_untrusted_peer_is_ignored_everywhere(
    app: object, services: Services, tenant: Tenant
) -> None:
    """Default settings: even a loopback peer's X-Forwarded-For is ignored, by the audit
    trail and by the sign-in throttle alike."""
    email = tenant.email(Role.VIEWER)
    async with _peer(app, "127.0.0.1") as client:
        ok = await _login(client, email, PASSWORD, forwarded="198.51.100.77")
        assert ok.get("errors") is None
        assert await _last_login_ip(services, tenant, Role.VIEWER) == "127.0.0.1"
    peer = _ip()
    async with _peer(app, peer) as client:
        # five failures "from" five forwarded addresses are five from one source
        for _ in range(5):
            body = await _login(client, email, WRONG, forwarded=_ip("203.0"))
            assert codes(body) == ["UNAUTHENTICATED"]
        body = await _login(client, email, PASSWORD, forwarded=_ip("203.0"))
        assert codes(body) == ["RATE_LIMITED"]


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    settings: Settings, database_url: str, services: Services, tenant: Tenant
) -> None:
    trusted = settings.model_copy(update={"trusted_proxies": "10.0.0.0/8"})
    email = tenant.email(Role.REVIEWER)
    async with app_with(trusted, database_url) as app, _peer(app, "10.1.2.3") as proxy:
        body = await _login(proxy, email, PASSWORD, forwarded="6.6.6.6, 198.51.100.8, 10.7.7.7")
        assert body.get("errors") is None
        assert await _last_login_ip(services, tenant, Role.REVIEWER) == "198.51.100.8"
        # each forwarded client is a source of its own: six failures through one proxy from
        # six clients lock nobody's pair
        for _ in range(6):
            body = await _login(proxy, email, WRONG, forwarded=_ip("198.19"))
            assert codes(body) == ["UNAUTHENTICATED"]
        # while one client behind it is throttled like a direct one (5, then wait)
        email = tenant.email(Role.APPROVER)
        client_ip = _ip("198.19")
        for _ in range(5):
            assert codes(await _login(proxy, email, WRONG, forwarded=client_ip)) == [
                "UNAUTHENTICATED"
            ]
        assert codes(await _login(proxy, email, WRONG, forwarded=client_ip)) == ["RATE_LIMITED"]


# --- /metrics ----------------------------------------------------------------------------------


async def test_production_serves_no_metrics_on_the_public_port_by_default(
    settings: Settings, database_url: str
) -> None:
    production = settings.model_copy(update={"mode": Mode.PRODUCTION})
    async with app_with(production, database_url) as app, _peer(app, "10.0.0.9") as client:
        response = await client.get("/metrics")
        assert response.status_code == 404
        assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert "prism_" not in response.text
        assert "python_" not in response.text


@pytest.mark.parametrize(
    "configured",
    [METRICS_TOKEN, "sha256:" + hashlib.sha256(METRICS_TOKEN.encode()).hexdigest()],
    ids=["token", "digest"],
)
async def test_metrics_behind_a_bearer_token(
    settings: Settings, database_url: str, configured: str
) -> None:
    production = settings.model_copy(
        update={"mode": Mode.PRODUCTION, "metrics_token": SecretStr(configured)}
    )
    async with app_with(production, database_url) as app, _peer(app, "10.0.0.9") as client:
        for header in ({}, {"authorization": "Bearer wrong"}, {"authorization": METRICS_TOKEN}):
            refused = await client.get("/metrics", headers=header)
            assert refused.status_code == 401
            assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert "prism_" not in refused.text
        served = await client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
        assert served.status_code == 200
        assert "prism_http_requests_total" in served.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_metrics_on_a_listener_of_their_own(settings: Settings, database_url: str) -> None:
    port = _free_port()
    separate = settings.model_copy(update={"metrics_address": f"127.0.0.1:{port}"})
    async with app_with(separate, database_url) as app, _peer(app, "127.0.0.1") as client:
        # even in development, the public port no longer serves them
        assert (await client.get("/metrics")).status_code == 404
        async with httpx.AsyncClient() as http:
            served = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert served.status_code == 200
            assert "prism_db_pool" in served.text
            other = await http.post(f"http://127.0.0.1:{port}/graphql", json={"query": "{x}"})
            assert other.status_code == 404
    # the listener goes away with the app
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/metrics")


def test_metrics_settings_are_checked_at_start() -> None:
    for bad in ({"metrics_token": SecretStr("short")}, {"metrics_address": "9100"}):
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]


# --- sign-in throttle: docs/api.md's numbers, counted --------------------------------------------


def _documented_numbers(repo_root: Path) -> tuple[int, int, int]:
    text = " ".join((repo_root / "docs" / "api.md").read_text().split())
    found = re.search(
        r"after (\d+) failures for one address from one source, (\d+) for one address from "
        r"anywhere, or (\d+) from one source, further attempts wait",
        text,
    )
    assert found, "docs/api.md states the sign-in throttle's numbers"
    pair, account, source = (int(n) for n in found.groups())
    return pair, account, source


async def test_sign_in_waits_after_exactly_the_documented_number_of_failures(
    app: object, tenant: Tenant, repo_root: Path
) -> None:
    pair, account, source = _documented_numbers(repo_root)
    assert (pair, account, source) == (5, 10, 50)
    # one address from one source: N failures answered, the next attempt waits (even with
    # the right password)
    email = tenant.email(Role.APPROVER)
    async with _peer(app, _ip()) as client:
        seen = [codes(await _login(client, email, WRONG))[0] for _ in range(pair)]
        seen.append(codes(await _login(client, email, PASSWORD))[0])
    assert seen == ["UNAUTHENTICATED"] * pair + ["RATE_LIMITED"]
    # one address from anywhere
    email = tenant.email(Role.AUDITOR)
    seen = []
    for _ in range(account + 1):
        async with _peer(app, _ip()) as client:
            seen.append(codes(await _login(client, email, WRONG))[0])
    assert seen == ["UNAUTHENTICATED"] * account + ["RATE_LIMITED"]
    # one source, many addresses
    seen = []
    async with _peer(app, _ip()) as client:
        for n in range(source + 1):
            ghost = f"ghost-{n}-{uuid.uuid4().hex[:6]}@nowhere.test"
            seen.append(codes(await _login(client, ghost, WRONG))[0])
    assert seen == ["UNAUTHENTICATED"] * source + ["RATE_LIMITED"]


# --- `prism serve`, as deployed ----------------------------------------------------------------


async def test_prism_serve_believes_no_forwarded_header_and_binds_the_metrics_listener(
    database_url: str, services: Services, tenant: Tenant, tmp_path: Path
) -> None:
    """The real server process: uvicorn must not rewrite the client from X-Forwarded-For (it
    trusts loopback peers by default), and PRISM_METRICS_ADDRESS is a listener of its own."""
    port, metrics_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env.update(
        PRISM_DATABASE_URL=database_url,
        PRISM_DATA_DIR=str(tmp_path / "var"),
        PRISM_JWT_SECRET="j" * 40,
        PRISM_MODE="production",
        PRISM_PORT=str(port),
        PRISM_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
        PRISM_PASSWORD_HASH_TIME_COST="1",
        PRISM_PASSWORD_HASH_MEMORY_KIB="1024",
        PRISM_PASSWORD_HASH_PARALLELISM="1",
        PRISM_LOG_LEVEL="WARNING",
    )
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "prism.cli", "serve", env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
            email = tenant.email(Role.ADMIN)
            body = await _login(http, email, PASSWORD, forwarded="198.51.100.99")
            assert body.get("errors") is None, body
            assert await _last_login_ip(services, tenant, Role.ADMIN) == "127.0.0.1"
            assert (await http.get("/metrics")).status_code == 404
            served = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert served.status_code == 200
            assert "prism_http_requests_total" in served.text
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


async def test_the_anonymous_rate_limit_bucket_is_the_derived_client(
    settings: Settings, database_url: str
) -> None:
    """Behind a trusted proxy each client has its own bucket; from an untrusted peer, a new
    X-Forwarded-For per request does not buy a new bucket."""
    tight = settings.model_copy(
        update={
            "trusted_proxies": "10.0.0.0/8",
            "rate_limit_capacity": 3,
            "rate_limit_refill_per_second": 0.001,
        }
    )
    query = {"query": "{ __typename }"}

    async def seen(client: httpx.AsyncClient, forwarded: str) -> list[str]:
        body = await client.post("/graphql", json=query, headers={"x-forwarded-for": forwarded})
        return codes(body.json()) or ["OK"]

    async with app_with(tight, database_url) as app:
        async with _peer(app, "10.3.3.3") as proxy:
            first, second = _ip("198.19"), _ip("198.19")
            assert [(await seen(proxy, first))[0] for _ in range(4)] == ["OK"] * 3 + [
                "RATE_LIMITED"
            ]
            assert (await seen(proxy, second)) == ["OK"]
        async with _peer(app, _ip("203.0")) as direct:
            answers = [(await seen(direct, _ip("198.19")))[0] for _ in range(4)]
            assert answers == ["OK"] * 3 + ["RATE_LIMITED"]
