"""Sign-in, sessions and API tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import sqlalchemy as sa

from prism.authn.secrets import Passwords, new_api_token
from prism.models.enums import Role
from prism.models.users import ApiToken, RefreshSession, User
from prism.services import Services
from tests.factories import PASSWORD, Tenant, codes, gql

LOGIN = """mutation($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) {
    accessToken refreshToken expiresAt user { email role }
  }
}"""
REFRESH = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken } }"
LOGOUT = "mutation($t: String!) { logout(refreshToken: $t) }"
VIEWER = "{ viewer { user { email } apiToken { name } scopes } }"
CREATE_TOKEN = """mutation($input: CreateApiTokenInput!) {
  createApiToken(input: $input) { token apiToken { id name prefix scopes } }
}"""
REVOKE = "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }"


async def _login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict:  # type: ignore[type-arg]
    return await gql(client, LOGIN, {"email": email, "password": password})


async def test_login_returns_a_working_access_token(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = await _login(client, tenant.email(Role.REVIEWER))
    assert body.get("errors") is None, body
    session = body["data"]["login"]
    assert session["user"] == {"email": tenant.email(Role.REVIEWER), "role": "REVIEWER"}
    assert session["refreshToken"].startswith("prism_rt_")
    me = await gql(client, VIEWER, token=session["accessToken"])
    assert me["data"]["viewer"]["user"]["email"] == tenant.email(Role.REVIEWER)
    assert me["data"]["viewer"]["apiToken"] is None


async def test_login_failures_look_the_same(client: httpx.AsyncClient, tenant: Tenant) -> None:
    wrong_password = await _login(client, tenant.email(Role.VIEWER), "not the password at all")
    unknown_email = await _login(client, "nobody@nowhere.test", "not the password at all")
    for body in (wrong_password, unknown_email):
        assert codes(body) == ["UNAUTHENTICATED"]
        assert body["errors"][0]["message"] == "Invalid email or password."


async def test_login_is_case_insensitive_on_email(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = await _login(client, tenant.email(Role.VIEWER).upper())
    assert body.get("errors") is None, body


async def test_refresh_rotates_and_a_replay_revokes_the_family(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    first = (await _login(client, tenant.email(Role.VIEWER)))["data"]["login"]["refreshToken"]
    rotated = await gql(client, REFRESH, {"t": first})
    second = rotated["data"]["refreshSession"]["refreshToken"]
    assert second != first
    # replaying the rotated token is refused and ends the whole chain, the new token included
    replay = await gql(client, REFRESH, {"t": first})
    assert codes(replay) == ["UNAUTHENTICATED"]
    after = await gql(client, REFRESH, {"t": second})
    assert codes(after) == ["UNAUTHENTICATED"]


async def test_logout_ends_the_session(client: httpx.AsyncClient, tenant: Tenant) -> None:
    refresh = (await _login(client, tenant.email(Role.VIEWER)))["data"]["login"]["refreshToken"]
    assert (await gql(client, LOGOUT, {"t": refresh}))["data"]["logout"] is True
    assert (await gql(client, LOGOUT, {"t": refresh}))["data"]["logout"] is False
    assert codes(await gql(client, REFRESH, {"t": refresh})) == ["UNAUTHENTICATED"]


async def test_refresh_tokens_are_stored_as_hashes(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    refresh = (await _login(client, tenant.email(Role.VIEWER)))["data"]["login"]["refreshToken"]
    async with services.db.transaction(tenant.org_id) as session:
        hashes = list(await session.scalars(sa.select(RefreshSession.token_hash)))
    assert all(refresh.encode() not in h for h in hashes)
    assert all(len(h) == 32 for h in hashes)


async def test_bad_credentials_are_401_with_a_code(client: httpx.AsyncClient) -> None:
    for header in (
        "Bearer nonsense.jwt.value",
        "Basic dXNlcjpwYXNz",
        f"Bearer {new_api_token()}",
        "Bearer prism_pat_malformed",
    ):
        response = await client.post(
            "/graphql", json={"query": "{ viewer { scopes } }"}, headers={"authorization": header}
        )
        assert response.status_code == 401, header
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_anonymous_calls_are_unauthenticated(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ viewer { scopes } documents { totalCount } }")
    assert codes(body) == ["UNAUTHENTICATED"]


async def test_api_token_lifecycle(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    # given a token made by a signed-in reviewer
    access = (await _login(client, tenant.email(Role.REVIEWER)))["data"]["login"]["accessToken"]
    created = await gql(
        client, CREATE_TOKEN, {"input": {"name": "ci", "scopes": ["documents:read"]}}, token=access
    )
    assert created.get("errors") is None, created
    secret = created["data"]["createApiToken"]["token"]
    token = created["data"]["createApiToken"]["apiToken"]
    assert secret.startswith(token["prefix"])
    assert len(token["prefix"]) < len(secret) / 2
    # then it works, narrowed to its scopes, and only its hash is stored
    me = await gql(client, VIEWER, token=secret)
    assert me["data"]["viewer"] == {
        "user": {"email": tenant.email(Role.REVIEWER)},
        "apiToken": {"name": "ci"},
        "scopes": ["documents:read"],
    }
    async with services.db.transaction(tenant.org_id) as session:
        row = await session.scalar(sa.select(ApiToken).where(ApiToken.name == "ci"))
    assert row is not None
    assert row.last_used_at is not None
    assert secret.encode() not in row.token_hash
    # when it is revoked, the next request is refused
    revoked = await gql(client, REVOKE, {"id": token["id"]}, token=access)
    assert revoked["data"]["revokeApiToken"]["revokedAt"] is not None
    response = await client.post(
        "/graphql", json={"query": VIEWER}, headers={"authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 401


async def test_token_scopes_cannot_widen(client: httpx.AsyncClient, tenant: Tenant) -> None:
    narrow = await gql(
        client,
        CREATE_TOKEN,
        {"input": {"name": "narrow", "scopes": ["documents:read", "tokens:admin"]}},
        token=tenant.tokens[Role.ADMIN],
    )
    secret = narrow["data"]["createApiToken"]["token"]
    wider = await gql(
        client, CREATE_TOKEN, {"input": {"name": "wider", "scopes": ["audit:read"]}}, token=secret
    )
    assert codes(wider) == ["BAD_USER_INPUT"]
    unknown = await gql(
        client,
        CREATE_TOKEN,
        {"input": {"name": "x", "scopes": ["root"]}},
        token=tenant.tokens[Role.ADMIN],
    )
    assert codes(unknown) == ["BAD_USER_INPUT"]


async def test_expired_token_and_expired_access_are_refused(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.update(ApiToken)
            .where(ApiToken.user_id == tenant.users[Role.VIEWER].id)
            .values(expires_at=past)
        )
        await session.execute(
            sa.update(User)
            .where(User.id == tenant.users[Role.AUDITOR].id)
            .values(access_expires_at=past)
        )
    for role in (Role.VIEWER, Role.AUDITOR):
        response = await client.post(
            "/graphql",
            json={"query": VIEWER},
            headers={"authorization": f"Bearer {tenant.tokens[role]}"},
        )
        assert response.status_code == 401, role
    assert codes(await _login(client, tenant.email(Role.AUDITOR))) == ["UNAUTHENTICATED"]


async def test_signing_out_ends_the_access_tokens_of_the_session(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    session = (await _login(client, tenant.email(Role.REVIEWER)))["data"]["login"]
    other = (await _login(client, tenant.email(Role.REVIEWER)))["data"]["login"]
    assert codes(await gql(client, VIEWER, token=session["accessToken"])) == []
    await gql(client, LOGOUT, {"t": session["refreshToken"]})
    # the next request, not the token's expiry, is when it stops working
    assert codes(await gql(client, VIEWER, token=session["accessToken"])) == ["UNAUTHENTICATED"]
    # another session of the same user is not affected
    assert codes(await gql(client, VIEWER, token=other["accessToken"])) == []


async def test_jwts_pin_algorithm_audience_issuer_and_session(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    good = (await _login(client, tenant.email(Role.VIEWER)))["data"]["login"]["accessToken"]
    claims = jwt.decode(good, options={"verify_signature": False})
    assert jwt.get_unverified_header(good)["kid"] == services.settings.jwt_key_id
    assert services.settings.jwt_secret is not None
    key = services.settings.jwt_secret.get_secret_value().encode()
    assert jwt.decode(good, key, algorithms=["HS256"], audience="prism-api")["sid"]
    forged = [
        jwt.encode(claims, "", algorithm="none"),
        jwt.encode({**claims, "aud": "another-api"}, key, "HS256"),
        jwt.encode({**claims, "iss": "someone"}, key, "HS256"),
        jwt.encode({k: v for k, v in claims.items() if k != "sid"}, key, "HS256"),
        jwt.encode({**claims, "sid": str(uuid.uuid4())}, key, "HS256"),
        jwt.encode({**claims, "exp": claims["iat"] - 1}, key, "HS256"),
        jwt.encode(claims, b"x" * 32, "HS256"),
    ]
    for token in forged:
        response = await client.post(
            "/graphql", json={"query": VIEWER}, headers={"authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401, jwt.decode(token, options={"verify_signature": False})


async def test_sign_in_upgrades_a_hash_made_with_older_parameters(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    user = tenant.users[Role.APPROVER]
    older = Passwords(time_cost=2, memory_kib=2048, parallelism=1).hash(PASSWORD)
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(sa.update(User).where(User.id == user.id).values(password_hash=older))
    assert (await _login(client, user.email)).get("errors") is None
    async with services.db.transaction(tenant.org_id) as session:
        stored = await session.scalar(sa.select(User.password_hash).where(User.id == user.id))
    assert stored != older
    assert stored is not None
    assert not services.passwords.needs_rehash(stored)
    assert (await _login(client, user.email)).get("errors") is None
