"""An organization learns nothing about another's users: every path an ADMIN of organization A
can take with an e-mail address or a user id answers the same (same code, same message, same
statements) whether or not that address or user exists in organization B, and nobody creates
users in a domain another organization owns (docs/decisions/0014)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from prism import migrations, operators
from prism.errors import BadUserInput, Conflict
from prism.models.enums import Classification, Role
from prism.models.users import User
from prism.resolvers.context import Services
from prism.resolvers.ids import to_global_id
from tests.conftest import NewDatabase
from tests.factories import PASSWORD, Tenant, codes, gql
from tests.test_cli import _env, _prism
from tests.test_statement_count import count_statements

CREATE_USER = """mutation($email: String!) {
  createUser(input: {email: $email, password: "a long enough password", role: VIEWER}) {
    email } }"""
LOGIN = """mutation($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) { accessToken } }"""
BY_ID = {
    "updateUser": """mutation($id: ID!) { updateUser(input: {id: $id, department: "x"}) {
      id } }""",
    "resetUserMfa": "mutation($id: ID!) { resetUserMfa(userId: $id) { id } }",
    "exportUserData": "mutation($id: ID!) { exportUserData(userId: $id) { id } }",
    "eraseUser": "mutation($id: ID!) { eraseUser(userId: $id) { erasedAt } }",
    "node": "query($id: ID!) { node(id: $id) { id ... on User { email } } }",
}


def _answer(body: dict[str, Any]) -> tuple[Any, list[tuple[Any, Any, Any]]]:
    """What a caller sees, minus what differs by request anyway (nothing, here)."""
    errors = [
        (e.get("message"), e.get("path"), e.get("extensions", {}).get("code"))
        for e in body.get("errors") or []
    ]
    return body.get("data"), errors


async def _contractor(services: Services, tenant: Tenant) -> str:
    """A user of ``tenant`` whose address is in a domain nobody owns (created by an operator)."""
    email = f"contractor-{uuid.uuid4().hex[:6]}@free-{uuid.uuid4().hex[:6]}.test"
    await operators.create_user(
        services, tenant.org_id, email=email, password=PASSWORD, role=Role.VIEWER
    )
    return email


async def _signed_in(client: httpx.AsyncClient, email: str) -> str:
    body = await gql(client, LOGIN, {"email": email, "password": PASSWORD})
    token: str = body["data"]["login"]["accessToken"]
    return token


async def _users_of(services: Services, tenant: Tenant) -> set[str]:
    async with services.db.transaction(tenant.org_id) as session:
        return {e.lower() for e in await session.scalars(sa.select(User.email))}


async def test_create_user_tells_an_admin_nothing_about_other_organizations(
    app: Any,
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    admin = tenant.tokens[Role.ADMIN]
    contractor = await _contractor(services, other_tenant)
    free_domain = contractor.split("@")[1]
    theirs = other_tenant.email(Role.VIEWER)
    # (exists in B, does not exist anywhere), in B's domain and in a domain nobody owns
    pairs = [
        (theirs, f"nobody-{uuid.uuid4().hex[:6]}@{other_tenant.domain}"),
        (theirs.upper(), f"NOBODY-{uuid.uuid4().hex[:6]}@{other_tenant.domain.upper()}"),
        (contractor, f"nobody-{uuid.uuid4().hex[:6]}@{free_domain}"),
    ]
    before = await _users_of(services, other_tenant)
    for existing, missing in pairs:
        with count_statements(app) as seen_existing:
            on_existing = await gql(client, CREATE_USER, {"email": existing}, token=admin)
        with count_statements(app) as seen_missing:
            on_missing = await gql(client, CREATE_USER, {"email": missing}, token=admin)
        assert _answer(on_existing) == _answer(on_missing), (existing, missing)
        assert codes(on_existing) == ["BAD_USER_INPUT"]
        assert tenant.domain in on_existing["errors"][0]["message"]
        # the same work: the answer comes before any look-up of the address
        assert seen_existing == seen_missing
        assert not any("email" in s or "users" in s for s in seen_existing), seen_existing
    # and nothing was created anywhere
    assert await _users_of(services, other_tenant) == before
    assert not {a.lower() for pair in pairs for a in pair} & await _users_of(services, tenant)


async def test_an_admin_creates_users_in_its_own_domain_only(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    admin = tenant.tokens[Role.ADMIN]
    mine = f"new-{uuid.uuid4().hex[:6]}@{tenant.domain.upper()}"
    created = await gql(client, CREATE_USER, {"email": mine}, token=admin)
    assert created.get("errors") is None
    # its own users it may know about
    again = await gql(client, CREATE_USER, {"email": mine.lower()}, token=admin)
    assert codes(again) == ["CONFLICT"]
    # a domain that is nobody's is not its own either
    stray = await gql(client, CREATE_USER, {"email": "someone@unclaimed.test"}, token=admin)
    assert codes(stray) == ["BAD_USER_INPUT"]
    assert stray["errors"][0]["extensions"]["argument"] == "email"


async def test_an_organization_without_a_domain_has_its_users_made_by_operators(
    client: httpx.AsyncClient, services: Services
) -> None:
    org = await operators.create_organization(services, f"No domain {uuid.uuid4().hex[:8]}")
    email = f"admin-{uuid.uuid4().hex[:6]}@nodomain-{uuid.uuid4().hex[:6]}.test"
    await operators.create_user(
        services,
        org.id,
        email=email,
        password=PASSWORD,
        role=Role.ADMIN,
        clearance=Classification.RESTRICTED,
    )
    created = await operators.create_token(
        services, org.id, name="admin", scopes=["users:admin"], user_email=email
    )
    same_domain = f"colleague@{email.split('@')[1]}"
    body = await gql(client, CREATE_USER, {"email": same_domain}, token=created.secret)
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "prism org domain" in body["errors"][0]["message"]


async def test_paths_by_user_id_answer_for_another_organization_as_for_nobody(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    # resetUserMfa and eraseUser need a signed-in session: use one for every path
    session = await _signed_in(client, tenant.email(Role.ADMIN))
    theirs = other_tenant.user_gid(Role.VIEWER)
    nobody = to_global_id("User", uuid.uuid4())
    for name, document in BY_ID.items():
        on_theirs = await gql(client, document, {"id": theirs}, token=session)
        on_nobody = await gql(client, document, {"id": nobody}, token=session)
        assert _answer(on_theirs) == _answer(on_nobody), name
        assert codes(on_theirs) in (["NOT_FOUND"], []), name
    # and the user in B is untouched
    bodies = await gql(client, "{ viewer { user { id } } }", token=other_tenant.tokens[Role.VIEWER])
    assert bodies["data"]["viewer"]["user"]["id"] == theirs


async def test_sign_in_with_another_organizations_address_is_an_ordinary_failure(
    app: Any, other_tenant: Tenant
) -> None:
    answers = []
    for n, email in enumerate(
        (other_tenant.email(Role.AUDITOR), f"nobody-{uuid.uuid4().hex[:6]}@{other_tenant.domain}")
    ):
        transport = httpx.ASGITransport(app=app, client=(f"198.18.77.{n + 10}", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as http:
            answers.append(_answer(await gql(http, LOGIN, {"email": email, "password": "wrong"})))
    assert answers[0] == answers[1]
    assert answers[0][1][0][2] == "UNAUTHENTICATED"


# --- operators keep every domain to one organization ----------------------------------------


async def test_operators_cannot_put_users_or_claims_in_another_organizations_domain(
    services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    with pytest.raises(Conflict, match="another organization"):
        await operators.create_user(
            services,
            tenant.org_id,
            email=f"plant-{uuid.uuid4().hex[:6]}@{other_tenant.domain}",
            password=PASSWORD,
            role=Role.VIEWER,
        )
    with pytest.raises(Conflict, match="another organization"):
        await operators.create_organization(
            services, f"Copycat {uuid.uuid4().hex[:8]}", domain=other_tenant.domain.upper()
        )
    with pytest.raises(Conflict, match="another organization"):
        await operators.set_domain(services, tenant.org_id, other_tenant.domain)
    # a domain where another organization already has users cannot be claimed either
    contractor = await _contractor(services, other_tenant)
    with pytest.raises(Conflict, match="other organizations have addresses"):
        await operators.set_domain(services, tenant.org_id, contractor.split("@")[1])
    with pytest.raises(BadUserInput):
        await operators.set_domain(services, tenant.org_id, "not a domain")


async def test_a_claimed_domain_moves_user_creation_to_its_organization(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    fresh = f"fresh-{uuid.uuid4().hex[:6]}.test"
    org = await operators.set_domain(services, tenant.org_id, fresh)
    assert org.domain == fresh
    created = await gql(
        client, CREATE_USER, {"email": f"x@{fresh}"}, token=tenant.tokens[Role.ADMIN]
    )
    assert created.get("errors") is None
    refused = await gql(
        client, CREATE_USER, {"email": f"y@{fresh}"}, token=other_tenant.tokens[Role.ADMIN]
    )
    assert codes(refused) == ["BAD_USER_INPUT"]
    with pytest.raises(Conflict):
        await operators.create_user(
            services, other_tenant.org_id, email=f"z@{fresh}", password=PASSWORD, role=Role.VIEWER
        )


async def test_the_domain_command(database_url: str, tenant: Tenant, other_tenant: Tenant) -> None:
    env = _env(PRISM_DATABASE_URL=database_url, PRISM_JWT_SECRET="j" * 40)
    fresh = f"cli-{uuid.uuid4().hex[:6]}.test"
    done = _prism("org", "domain", tenant.name, fresh.upper(), "--json", env=env)
    assert '"domain": "' + fresh + '"' in done.stdout
    refused = _prism("org", "domain", other_tenant.name, fresh, env=env, check=False)
    assert refused.returncode == 1
    assert "another organization" in refused.stderr


async def test_the_migration_refuses_a_domain_shared_by_two_organizations(
    new_database: NewDatabase,
) -> None:
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url, "0013")
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute(
            "INSERT INTO organizations (name, domain) VALUES ('a', 'same.test'), ('b', 'SAME.test')"
        )
    finally:
        await conn.close()
    with pytest.raises(RuntimeError, match=r"same\.test"):
        await asyncio.to_thread(migrations.upgrade, url)
