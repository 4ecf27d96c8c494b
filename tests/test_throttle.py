"""Sign-in throttling: per (account, source), per account, per source; nobody locked out for
good; unknown and known e-mail addresses indistinguishable; no guesses multiplied."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest

from prism.authn.secrets import Passwords
from prism.errors import Unauthenticated
from prism.identity import sessions, users
from prism.models.audit import RequestMeta
from prism.models.enums import Role
from prism.services import Services
from tests.factories import PASSWORD, Tenant, codes, gql

LOGIN = """mutation($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) { accessToken } }"""
WRONG = "not the password at all"


def _ip() -> str:
    """A source of its own for each test (198.18.0.0/15 is for benchmarks and tests)."""
    n = uuid.uuid4().int
    return f"198.{18 + n % 2}.{(n >> 8) % 256}.{(n >> 16) % 254 + 1}"


@asynccontextmanager
async def _from(app: object, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 5000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as http:
        yield http


async def _login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    return await gql(client, LOGIN, {"email": email, "password": password})


async def test_repeated_failures_lock_the_pair_for_a_while(app: object, tenant: Tenant) -> None:
    email = tenant.email(Role.VIEWER)
    async with _from(app, _ip()) as client:
        for _ in range(5):
            assert codes(await _login(client, email, WRONG)) == ["UNAUTHENTICATED"]
        response = await client.post(
            "/graphql", json={"query": LOGIN, "variables": {"email": email, "password": PASSWORD}}
        )
        body = response.json()
        # even the right password waits: the lock does not say whether a guess was right
        assert codes(body) == ["RATE_LIMITED"]
        retry = body["errors"][0]["extensions"]["retryAfter"]
        assert 1 <= retry <= 2
        assert response.headers["retry-after"] == str(retry)
        await asyncio.sleep(retry + 0.2)
        # the lock ends by itself; a success starts the count over
        assert (await _login(client, email, PASSWORD)).get("errors") is None
        for _ in range(5):
            assert codes(await _login(client, email, WRONG)) == ["UNAUTHENTICATED"]


async def test_unknown_addresses_are_throttled_like_known_ones(app: object, tenant: Tenant) -> None:
    answers = {}
    for email in (tenant.email(Role.REVIEWER), f"nobody-{uuid.uuid4().hex[:6]}@nowhere.test"):
        async with _from(app, _ip()) as client:
            seen = [codes(await _login(client, email, WRONG))[0] for _ in range(8)]
            answers[email] = seen
    known, unknown = answers.values()
    assert known == unknown == ["UNAUTHENTICATED"] * 5 + ["RATE_LIMITED"] * 3


async def test_parallel_guesses_count_like_sequential_ones(app: object, tenant: Tenant) -> None:
    email = tenant.email(Role.APPROVER)
    async with _from(app, _ip()) as client:
        bodies = await asyncio.gather(*(_login(client, email, WRONG) for _ in range(20)))
    seen = [codes(body)[0] for body in bodies]
    assert seen.count("UNAUTHENTICATED") == 5
    assert seen.count("RATE_LIMITED") == 15


async def test_an_attack_on_an_account_does_not_lock_its_owner_out(
    app: object, tenant: Tenant
) -> None:
    email = tenant.email(Role.AUDITOR)
    home = _ip()
    async with _from(app, home) as owner:
        assert (await _login(owner, email, PASSWORD)).get("errors") is None
    # ten sources, one guess each: the account as a whole is now throttled ...
    for _ in range(10):
        async with _from(app, _ip()) as attacker:
            assert codes(await _login(attacker, email, WRONG)) == ["UNAUTHENTICATED"]
    async with _from(app, _ip()) as attacker:
        refused = await _login(attacker, email, PASSWORD)
        assert codes(refused) == ["RATE_LIMITED"]
        assert refused["errors"][0]["extensions"]["retryAfter"] <= 30
    # ... except from where its owner signed in before
    async with _from(app, home) as owner:
        assert (await _login(owner, email, PASSWORD)).get("errors") is None


async def test_one_source_cannot_spray_many_accounts(app: object) -> None:
    async with _from(app, _ip()) as client:
        for n in range(50):
            body = await _login(client, f"spray-{n}-{uuid.uuid4().hex[:4]}@nowhere.test", WRONG)
            assert codes(body) == ["UNAUTHENTICATED"], n
        body = await _login(client, f"spray-last-{uuid.uuid4().hex[:4]}@nowhere.test", WRONG)
        assert codes(body) == ["RATE_LIMITED"]


async def test_aliases_and_batches_cannot_multiply_guesses(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    email = tenant.email(Role.VIEWER)
    aliased = """mutation($e: String!) {
      a: login(input: {email: $e, password: "guess one"}) { accessToken }
      b: login(input: {email: $e, password: "guess two"}) { accessToken } }"""
    body = await gql(client, aliased, {"e": email})
    assert codes(body) == ["BAD_USER_INPUT"]
    assert body.get("data") is None
    via_fragment = """mutation($e: String!) { ...F a: login(input: {email: $e, password: "x"}) {
      accessToken } } fragment F on Mutation { login(input: {email: $e, password: "y"}) {
      accessToken } }"""
    assert codes(await gql(client, via_fragment, {"e": email})) == ["BAD_USER_INPUT"]
    batch = [{"query": LOGIN, "variables": {"email": email, "password": WRONG}}] * 3
    response = await client.post("/graphql", json=batch)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_wrong_password_and_unknown_address_take_similar_time(
    services: Services, tenant: Tenant
) -> None:
    # Production-strength hashing, so that skipping it for unknown addresses would show.
    passwords = Passwords()
    known = f"timing-{uuid.uuid4().hex[:6]}@{tenant.domain}"
    async with services.db.transaction(tenant.org_id) as session:
        await users.create_user(
            session,
            None,
            RequestMeta(),
            organization_id=tenant.org_id,
            email=known,
            password_hash=passwords.hash(PASSWORD),
            role=Role.VIEWER,
        )

    async def timed(email: str) -> float:
        started = time.perf_counter()
        with pytest.raises(Unauthenticated, match="Invalid email or password"):
            await sessions.login(
                replace(services, passwords=passwords),
                RequestMeta(ip_address=_ip()),
                email=email,
                password=WRONG,
                totp=None,
            )
        return time.perf_counter() - started

    wrong = [await timed(known) for _ in range(4)]
    unknown = [await timed(f"ghost-{uuid.uuid4().hex[:6]}@nowhere.test") for _ in range(4)]
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 < ratio < 2, (wrong, unknown)


async def test_spellings_of_one_address_share_its_count(app: object, tenant: Tenant) -> None:
    """Another spelling of the domain (trailing dot, full stops, case) is the same account,
    so it is the same count: spellings do not multiply guesses."""
    email = tenant.email(Role.VIEWER)
    local, _, domain = email.rpartition("@")
    head, _, tld = domain.rpartition(".")
    spellings = [
        f"{local}@{domain}.",
        f"{local}@{head}\u3002{tld}",
        f"{local}@{domain.upper()}",
        f"{local}@{head}\uff0e{tld}",
        f"{local}@{head}\uff61{tld}",
    ]
    async with _from(app, _ip()) as client:
        for spelling in spellings:
            assert codes(await _login(client, spelling, WRONG)) == ["UNAUTHENTICATED"]
        assert codes(await _login(client, email, PASSWORD)) == ["RATE_LIMITED"]
