"""Remembered credentials (``prism.authn.cache``): a revocation, sign-out, refresh replay,
deactivation or change of rights holds on the very next request, in every process, even when
the credential was remembered; with the LISTEN connection down nothing is remembered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from prism.authn.bearer import authenticate_bearer
from prism.authn.cache import CredentialCache
from prism.authn.secrets import token_digest
from prism.config import Settings
from prism.errors import Unauthenticated
from prism.models.enums import Classification, Role
from prism.observability import LEAN_PATH
from prism.services import Services
from tests.conftest import app_with, client_of
from tests.factories import PASSWORD, Tenant, add_document, codes, gql

LOGIN = """mutation($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) { accessToken refreshToken }
}"""
REFRESH = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken } }"
LOGOUT = "mutation($t: String!) { logout(refreshToken: $t) }"
VIEWER = "{ viewer { scopes } }"
CREATE_TOKEN = """mutation($input: CreateApiTokenInput!) {
  createApiToken(input: $input) { token apiToken { id } }
}"""
REVOKE = "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }"
UPDATE_USER = "mutation($input: UpdateUserInput!) { updateUser(input: $input) { role } }"


def cache_of(app: Any) -> CredentialCache:
    cache = app.state.services.credentials
    assert isinstance(cache, CredentialCache)
    assert cache.trusted
    return cache


@pytest.fixture
async def second(settings: Settings, database_url: str) -> AsyncIterator[Any]:
    """Another API process on the same database."""
    async with app_with(settings, database_url) as application:
        yield application


async def _works(client: httpx.AsyncClient, token: str) -> bool:
    body = await gql(client, VIEWER, token=token)
    return body.get("errors") is None


async def _remembered(apps: list[Any], token: str) -> None:
    """The token works in every app, and the second request of each was remembered."""
    for application in apps:
        async with client_of(application) as client:
            assert await _works(client, token)
            hits = cache_of(application).hits
            assert await _works(client, token)
            assert cache_of(application).hits == hits + 1


async def _refused_everywhere(apps: list[Any], token: str) -> None:
    for application in apps:
        async with client_of(application) as client:
            response = await client.post(
                "/graphql", json={"query": VIEWER}, headers={"authorization": f"Bearer {token}"}
            )
            assert response.status_code == 401, response.text


async def _login(client: httpx.AsyncClient, tenant: Tenant, role: Role) -> dict[str, str]:
    body = await gql(client, LOGIN, {"email": tenant.email(role), "password": PASSWORD})
    assert body.get("errors") is None, body
    login: dict[str, str] = body["data"]["login"]
    return login


async def test_a_revoked_token_is_refused_at_once_in_every_process(
    app: Any, second: Any, tenant: Tenant
) -> None:
    async with client_of(app) as client:
        created = await gql(
            client,
            CREATE_TOKEN,
            {"input": {"name": "remembered", "scopes": ["documents:read"]}},
            token=tenant.tokens[Role.ADMIN],
        )
        secret = created["data"]["createApiToken"]["token"]
        await _remembered([app, second], secret)
        revoked = await gql(
            client,
            REVOKE,
            {"id": created["data"]["createApiToken"]["apiToken"]["id"]},
            token=tenant.tokens[Role.ADMIN],
        )
        assert revoked.get("errors") is None, revoked
    await _refused_everywhere([second, app], secret)


async def test_sign_out_ends_a_remembered_access_token_at_once(
    app: Any, second: Any, tenant: Tenant
) -> None:
    async with client_of(app) as client:
        session = await _login(client, tenant, Role.VIEWER)
        await _remembered([app, second], session["accessToken"])
        assert (await gql(client, LOGOUT, {"t": session["refreshToken"]}))["data"]["logout"]
    await _refused_everywhere([second, app], session["accessToken"])


async def test_a_replayed_refresh_token_ends_remembered_access_tokens(
    app: Any, second: Any, tenant: Tenant
) -> None:
    async with client_of(app) as client:
        session = await _login(client, tenant, Role.VIEWER)
        rotated = await gql(client, REFRESH, {"t": session["refreshToken"]})
        access = rotated["data"]["refreshSession"]["accessToken"]
        await _remembered([app, second], access)
        replay = await gql(client, REFRESH, {"t": session["refreshToken"]})
        assert codes(replay) == ["UNAUTHENTICATED"]
    await _refused_everywhere([second, app], access)


async def test_deactivation_by_any_writer_ends_remembered_credentials(
    app: Any, second: Any, services: Services, tenant: Tenant
) -> None:
    async with client_of(app) as client:
        session = await _login(client, tenant, Role.REVIEWER)
    token = tenant.tokens[Role.REVIEWER]
    await _remembered([app, second], token)
    await _remembered([app, second], session["accessToken"])
    # an operator's SQL, not a use case: the trigger notifies all the same
    async with services.db.transaction(tenant.org_id) as tx:
        await tx.execute(
            sa.text("UPDATE users SET is_active = false WHERE id = :id"),
            {"id": tenant.users[Role.REVIEWER].id},
        )
    await _refused_everywhere([second, app], token)
    await _refused_everywhere([second, app], session["accessToken"])


async def test_a_change_of_rights_is_seen_at_once(app: Any, second: Any, tenant: Tenant) -> None:
    token = tenant.tokens[Role.APPROVER]
    await _remembered([app, second], token)
    async with client_of(app) as client:
        changed = await gql(
            client,
            UPDATE_USER,
            {"input": {"id": tenant.user_gid(Role.APPROVER), "role": "VIEWER"}},
            token=tenant.tokens[Role.ADMIN],
        )
        assert changed.get("errors") is None, changed
    for application in (second, app):
        services: Services = application.state.services
        principal = await authenticate_bearer(
            services.db, services.access_tokens, token, services.credentials
        )
        assert principal.role is Role.VIEWER


async def test_without_the_listen_connection_nothing_is_remembered(
    second: Any, services: Services, tenant: Tenant
) -> None:
    app = second  # an app of this test's own: its LISTEN connection is stopped
    token = tenant.tokens[Role.VIEWER]
    await _remembered([app], token)
    cache = cache_of(app)
    await cache.listener.stop()
    assert not cache.trusted
    hits = cache.hits
    async with client_of(app) as client:
        assert await _works(client, token)
        assert cache.hits == hits
        # a revocation nobody in this process hears is still refused on the next request
        async with services.db.transaction(tenant.org_id) as tx:
            await tx.execute(
                sa.text("UPDATE api_tokens SET revoked_at = now() WHERE user_id = :id"),
                {"id": tenant.users[Role.VIEWER].id},
            )
        response = await client.post(
            "/graphql", json={"query": VIEWER}, headers={"authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401


async def test_a_failed_round_trip_is_not_trusted(second: Any, tenant: Tenant) -> None:
    app = second  # an app of this test's own: its round trips fail
    token = tenant.tokens[Role.VIEWER]
    await _remembered([app], token)
    cache = cache_of(app)

    async def fails(_seconds: float = 0) -> bool:
        return False

    cache.listener.round_trip = fails  # type: ignore[method-assign]
    services: Services = app.state.services
    hits = cache.hits
    principal = await authenticate_bearer(
        services.db, services.access_tokens, token, services.credentials
    )
    assert principal.user_id == tenant.users[Role.VIEWER].id
    assert cache.hits == hits


async def test_requests_that_share_a_round_trip_all_use_the_remembered_answer(
    second: Any, tenant: Tenant
) -> None:
    """Five requests with one remembered credential at once, outside a planned read: they
    wait on one round trip, and every one of them is answered from memory (the round trip
    finding the entry still held must not make it a different entry for the others)."""
    app = second
    token = tenant.tokens[Role.VIEWER]
    await _remembered([app], token)
    cache = cache_of(app)
    trips = _counting_round_trips(cache)
    services: Services = app.state.services
    hits, before = cache.hits, trips()
    principals = await asyncio.gather(
        *(
            authenticate_bearer(services.db, services.access_tokens, token, services.credentials)
            for _ in range(5)
        )
    )
    assert {p.user_id for p in principals} == {tenant.users[Role.VIEWER].id}
    assert cache.hits == hits + 5
    assert trips() <= before + 2


async def test_a_refused_credential_is_not_remembered(app: Any, tenant: Tenant) -> None:
    services: Services = app.state.services
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await authenticate_bearer(
                services.db,
                services.access_tokens,
                tenant.tokens[Role.VIEWER][:-4] + "AAAA",
                services.credentials,
            )


async def _refused_once_revoked_by_sql(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, token: str
) -> None:
    """``token`` revoked by an operator's SQL on a connection of its own (the trigger
    notifies): the very next request with it is refused."""
    async with services.db.transaction(tenant.org_id) as tx:
        await tx.execute(
            sa.text("UPDATE api_tokens SET revoked_at = now() WHERE token_hash = :h"),
            {"h": token_digest(token)},
        )
    response = await client.post(
        "/graphql", json={"query": VIEWER}, headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.text


def _counting_round_trips(cache: CredentialCache) -> Callable[[], int]:
    """From now on, ``cache``'s round trips on its LISTEN connection are counted: how many so
    far, when called."""
    trips = 0
    round_trip = cache.listener.round_trip

    async def counted(seconds: float = 1.0) -> bool:
        nonlocal trips
        trips += 1
        return await round_trip(seconds)

    cache.listener.round_trip = counted  # type: ignore[method-assign]
    return lambda: trips


def _lean_answers() -> float:
    return LEAN_PATH.labels("answered")._value.get()


async def test_the_lean_path_confirms_a_remembered_credential_after_its_statement(
    second: Any, services: Services, tenant: Tenant
) -> None:
    """A planned read uses a remembered credential at once and confirms it by its own
    statement's connection (listening since before the credential was verified): no round
    trip on the LISTEN connection, and a revocation by any writer still holds on the next
    request, every time."""
    app = second  # an app of this test's own: its round trips are counted
    cache = cache_of(app)
    trips = _counting_round_trips(cache)
    async with client_of(app) as client:
        for _ in range(2):  # the document validated, a statement connection listening
            assert await _works(client, tenant.tokens[Role.ADMIN])
        for attempt in range(8):
            created = await gql(
                client,
                CREATE_TOKEN,
                {"input": {"name": f"lean {attempt}", "scopes": ["documents:read"]}},
                token=tenant.tokens[Role.ADMIN],
            )
            secret = created["data"]["createApiToken"]["token"]
            assert await _works(client, secret)  # verified in the database, remembered
            hits, answered, before = cache.hits, _lean_answers(), trips()
            assert await _works(client, secret)
            assert (cache.hits, _lean_answers(), trips()) == (hits + 1, answered + 1, before)
            await _refused_once_revoked_by_sql(client, services, tenant, secret)


async def test_a_connection_opened_after_the_credential_was_verified_costs_one_round_trip(
    app: Any, second: Any, services: Services, tenant: Tenant
) -> None:
    """A fresh process: the credential is verified by the first request, whose statement then
    opens the connection (listening since after the verification). The next request confirms
    it by one round trip on the LISTEN connection; the ones after it need none (the round
    trip found the credential still held, as good as verified again), and a revocation still
    holds on the very next request."""
    fresh = second  # a process of this test's own: nothing verified, no connection open
    cache = cache_of(fresh)
    trips = _counting_round_trips(cache)
    async with client_of(app) as client:  # the token is made by another process
        made = await gql(
            client,
            CREATE_TOKEN,
            {"input": {"name": "fresh", "scopes": ["documents:read"]}},
            token=tenant.tokens[Role.ADMIN],
        )
    created = made["data"]["createApiToken"]["token"]
    async with client_of(fresh) as client:
        assert await _works(client, created)  # verified, remembered; the connection opens
        hits, answered, before = cache.hits, _lean_answers(), trips()
        for _ in range(6):
            assert await _works(client, created)
        assert (cache.hits, _lean_answers(), trips()) == (hits + 6, answered + 6, before + 1)
        await _refused_once_revoked_by_sql(client, services, tenant, created)


async def test_a_change_committed_while_a_planned_read_runs_is_heard_before_it_answers(
    second: Any, services: Services, tenant: Tenant
) -> None:
    """The remembered principal's statement runs with the old rights while the clearance is
    lowered: the change is heard on the statement's own connection before its result, so
    that answer is not sent and the full path answers with the new rights."""
    app = second
    token = tenant.tokens[Role.APPROVER]
    await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    query = "{ documents(first: 5) { totalCount } }"
    async with client_of(app) as client:
        for _ in range(2):
            body = await gql(client, query, token=token)
            assert body["data"]["documents"]["totalCount"] == 1, body
        statements = app.state.services.db.statements
        fetch_row = statements.fetch_row
        lowered = False

        async def lowering_first(*args: Any) -> Any:
            nonlocal lowered
            if not lowered:
                lowered = True
                async with services.db.transaction(tenant.org_id) as tx:
                    await tx.execute(
                        sa.text("UPDATE users SET clearance = 'PUBLIC' WHERE id = :id"),
                        {"id": tenant.users[Role.APPROVER].id},
                    )
            return await fetch_row(*args)

        statements.fetch_row = lowering_first
        changed = LEAN_PATH.labels("credential changed")._value.get()
        body = await gql(client, query, token=token)
        assert lowered
        assert body["data"]["documents"]["totalCount"] == 0, body
        assert LEAN_PATH.labels("credential changed")._value.get() == changed + 1
