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

from prism.audit import OPERATOR
from prism.db import migrations
from prism.errors import BadUserInput, Conflict
from prism.execution.ids import to_global_id
from prism.identity import organizations as identity_organizations
from prism.identity import users as identity_users
from prism.models.enums import Classification, Role
from prism.models.users import User
from prism.services import Services
from prism.tokens import api_tokens
from tests.conftest import NewDatabase, client_of
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
    await identity_users.add_user(
        services, OPERATOR, tenant.org_id, email=email, password=PASSWORD, role=Role.VIEWER
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
    # the token is verified (and remembered) by a first request, counted by neither
    await gql(client, "{ viewer { scopes } }", token=admin)
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
    org = await identity_organizations.create_organization(
        services, OPERATOR, f"No domain {uuid.uuid4().hex[:8]}"
    )
    email = f"admin-{uuid.uuid4().hex[:6]}@nodomain-{uuid.uuid4().hex[:6]}.test"
    await identity_users.add_user(
        services,
        OPERATOR,
        org.id,
        email=email,
        password=PASSWORD,
        role=Role.ADMIN,
        clearance=Classification.RESTRICTED,
    )
    created = await api_tokens.create_token(
        services, OPERATOR, org.id, name="admin", scopes=["users:admin"], user_email=email
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


async def _operators_refused_in(services: Services, tenant: Tenant, domain: str) -> None:
    """Operators can neither plant a user of ``tenant`` in another organization's ``domain``
    nor claim it, for ``tenant`` or for a new organization."""
    with pytest.raises(Conflict, match="another organization"):
        await identity_users.add_user(
            services,
            OPERATOR,
            tenant.org_id,
            email=f"plant-{uuid.uuid4().hex[:6]}@{domain}",
            password=PASSWORD,
            role=Role.VIEWER,
        )
    with pytest.raises(Conflict, match="another organization"):
        await identity_organizations.set_domain(services, OPERATOR, tenant.org_id, domain)
    with pytest.raises(Conflict, match="another organization"):
        await identity_organizations.create_organization(
            services, OPERATOR, f"Copycat {uuid.uuid4().hex[:8]}", domain=domain
        )


async def test_operators_cannot_put_users_or_claims_in_another_organizations_domain(
    services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    await _operators_refused_in(services, tenant, other_tenant.domain)
    with pytest.raises(Conflict, match="another organization"):
        await identity_organizations.create_organization(
            services,
            OPERATOR,
            f"Copycat {uuid.uuid4().hex[:8]}",
            domain=other_tenant.domain.upper(),
        )
    # a domain where another organization already has users cannot be claimed either
    contractor = await _contractor(services, other_tenant)
    with pytest.raises(Conflict, match="other organizations have addresses"):
        await identity_organizations.set_domain(
            services, OPERATOR, tenant.org_id, contractor.split("@")[1]
        )
    with pytest.raises(BadUserInput):
        await identity_organizations.set_domain(services, OPERATOR, tenant.org_id, "not a domain")


async def test_a_claimed_domain_moves_user_creation_to_its_organization(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    fresh = f"fresh-{uuid.uuid4().hex[:6]}.test"
    org = await identity_organizations.set_domain(services, OPERATOR, tenant.org_id, fresh)
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
        await identity_users.add_user(
            services,
            OPERATOR,
            other_tenant.org_id,
            email=f"z@{fresh}",
            password=PASSWORD,
            role=Role.VIEWER,
        )


async def test_the_domain_command(database_url: str, tenant: Tenant, other_tenant: Tenant) -> None:
    env = _env(PRISM_DATABASE_URL=database_url, PRISM_JWT_SECRET="j" * 40)
    fresh = f"cli-{uuid.uuid4().hex[:6]}.test"
    done = _prism("org", "domain", tenant.name, fresh.upper(), "--json", env=env)
    assert '"domain": "' + fresh + '"' in done.stdout
    refused = _prism("org", "domain", other_tenant.name, fresh, env=env, check=False)
    assert refused.returncode == 1
    assert "another organization" in refused.stderr


async def _database_at(new_database: NewDatabase, revision: str) -> tuple[str, str]:
    """A new database migrated up to ``revision``: (its URL, the plain one asyncpg takes)."""
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url, revision)
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return url, plain


async def test_the_migration_refuses_a_domain_shared_by_two_organizations(
    new_database: NewDatabase,
) -> None:
    url, plain = await _database_at(new_database, "0013")
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute(
            "INSERT INTO organizations (name, domain) VALUES ('a', 'same.test'), ('b', 'SAME.test')"
        )
    finally:
        await conn.close()
    with pytest.raises(RuntimeError, match=r"same\.test"):
        await asyncio.to_thread(migrations.upgrade, url)


# --- one spelling per domain ------------------------------------------------------------------


def _spellings(domain: str) -> dict[str, str]:
    """Spellings a mail system delivers to ``domain``'s host (``domain`` is lowercase ASCII)."""
    head, _, tld = domain.rpartition(".")
    return {
        "as claimed": domain,
        "trailing dot": f"{domain}.",
        "uppercase": domain.upper(),
        "ideographic full stop": f"{head}\u3002{tld}",
        "fullwidth full stop": f"{head}\uff0e{tld}",
        "halfwidth ideographic full stop": f"{head}\uff61{tld}",
        "trailing ideographic full stop": f"{domain}\u3002",
        "fullwidth letters": "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in head)
        + f".{tld}",
    }


@pytest.mark.parametrize(
    "spelling",
    [
        "as claimed",
        "trailing dot",
        "uppercase",
        "ideographic full stop",
        "fullwidth full stop",
        "halfwidth ideographic full stop",
        "trailing ideographic full stop",
        "fullwidth letters",
    ],
)
async def test_every_spelling_of_a_domain_is_that_domain(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    other_tenant: Tenant,
    spelling: str,
) -> None:
    """Operators cannot plant another organization's user, nor claim its domain, under
    another spelling; its own ADMIN creates users under any spelling, stored as the one form;
    sign-in under any spelling finds that same account."""
    theirs = _spellings(other_tenant.domain)[spelling]
    await _operators_refused_in(services, tenant, theirs)
    # B's ADMIN may use any spelling of B's domain; the address is stored in the one form
    local = f"new-{uuid.uuid4().hex[:6]}"
    created = await gql(
        client, CREATE_USER, {"email": f"{local}@{theirs}"}, token=other_tenant.tokens[Role.ADMIN]
    )
    assert created.get("errors") is None, created
    assert created["data"]["createUser"]["email"] == f"{local}@{other_tenant.domain}"
    again = await gql(
        client,
        CREATE_USER,
        {"email": f"{local}@{other_tenant.domain}"},
        token=other_tenant.tokens[Role.ADMIN],
    )
    assert codes(again) == ["CONFLICT"]
    # A's ADMIN is refused it as any other address outside A's domain
    refused = await gql(
        client, CREATE_USER, {"email": f"x-{local}@{theirs}"}, token=tenant.tokens[Role.ADMIN]
    )
    assert codes(refused) == ["BAD_USER_INPUT"]
    assert refused["errors"][0]["extensions"]["argument"] == "email"
    # sign-in under this spelling is the account's sign-in
    signed_in = await gql(
        client, LOGIN, {"email": f"{local}@{theirs}", "password": "a long enough password"}
    )
    assert signed_in.get("errors") is None, signed_in
    token = signed_in["data"]["login"]["accessToken"]
    me = await gql(client, "{ viewer { user { email } } }", token=token)
    assert me["data"]["viewer"]["user"]["email"] == f"{local}@{other_tenant.domain}"


async def test_an_internationalized_domain_is_one_domain_in_unicode_and_in_punycode(
    services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    label = f"bücher-{uuid.uuid4().hex[:6]}"
    unicode_name = f"{label}.test"
    org = await identity_organizations.set_domain(
        services, OPERATOR, other_tenant.org_id, unicode_name.upper()
    )
    punycode = unicode_name.encode("idna").decode()
    assert punycode.startswith("xn--")
    assert org.domain == punycode
    for spelling in (unicode_name, punycode, punycode.upper(), f"{unicode_name}\u3002"):
        with pytest.raises(Conflict, match="another organization"):
            await identity_users.add_user(
                services,
                OPERATOR,
                tenant.org_id,
                email=f"plant@{spelling}",
                password=PASSWORD,
                role=Role.VIEWER,
            )
    user = await identity_users.add_user(
        services,
        OPERATOR,
        other_tenant.org_id,
        email=f"Someone@{unicode_name}",
        password=PASSWORD,
        role=Role.VIEWER,
    )
    assert user.email == f"Someone@{punycode}"


@pytest.mark.parametrize(
    "domain",
    [
        "ex\u0430mple.test",  # Cyrillic a among Latin letters
        "\u0440aypal.test",  # Cyrillic er for p
        "g\u03bfogle.test",  # Greek omicron
        "xn--exmple-4nf.test",  # the first one, already in punycode
        "xn--zz.test",  # not punycode at all
        "exa mple.test",
        "example..test",
        "example.test..",
        "-example.test",
        "example.t",
        "exam\u200bple.test",  # a zero-width space
    ],
)
async def test_lookalike_and_malformed_domains_are_refused(
    app: object, services: Services, tenant: Tenant, domain: str
) -> None:
    with pytest.raises(BadUserInput):
        await identity_organizations.set_domain(services, OPERATOR, tenant.org_id, domain)
    with pytest.raises(BadUserInput):
        await identity_users.add_user(
            services,
            OPERATOR,
            tenant.org_id,
            email=f"x@{domain}",
            password=PASSWORD,
            role=Role.VIEWER,
        )
    # and signing in with one is the failure of an unknown address (from an address of its
    # own: the failures would count against the shared test client's source)
    async with client_of(app, "198.18.78.1") as http:
        body = await gql(http, LOGIN, {"email": f"x@{domain}", "password": PASSWORD})
    assert codes(body) == ["UNAUTHENTICATED"]


async def test_an_address_with_invisible_characters_is_refused(
    services: Services, tenant: Tenant
) -> None:
    for email in (f"admin\u200b@{tenant.domain}", f"ad\u00admin@{tenant.domain}"):
        with pytest.raises(BadUserInput):
            await identity_users.add_user(
                services, OPERATOR, tenant.org_id, email=email, password=PASSWORD, role=Role.VIEWER
            )


async def _insert_user(conn: asyncpg.Connection, org: uuid.UUID, email: str) -> None:
    """A user row as an earlier version stored it, address as written."""
    await conn.execute(
        "INSERT INTO users (organization_id, email, password_hash, role, clearance,"
        " is_active, mfa_enabled) VALUES ($1, $2, 'x', 'VIEWER', 'INTERNAL', true, false)",
        org,
        email,
    )


async def test_the_migration_stores_every_address_in_its_canonical_spelling(
    new_database: NewDatabase,
) -> None:
    url, plain = await _database_at(new_database, "0015")
    conn = await asyncpg.connect(plain)
    try:
        org = await conn.fetchval(
            "INSERT INTO organizations (name, domain) VALUES ('a', 'acme.test') RETURNING id"
        )
        for email in ("one@acme.test.", "two@acme\u3002test", "Three@Bücher.test", "odd@x..y"):
            await _insert_user(conn, org, email)
    finally:
        await conn.close()
    await asyncio.to_thread(migrations.upgrade, url)
    conn = await asyncpg.connect(plain)
    try:
        stored = {r["email"] for r in await conn.fetch("SELECT email FROM users")}
    finally:
        await conn.close()
    assert stored == {"one@acme.test", "two@acme.test", "Three@xn--bcher-kva.test", "odd@x..y"}


async def test_the_migration_refuses_an_address_held_under_two_spellings(
    new_database: NewDatabase,
) -> None:
    url, plain = await _database_at(new_database, "0015")
    conn = await asyncpg.connect(plain)
    try:
        org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('a') RETURNING id")
        for email in ("one@acme.test", "ONE@acme.test."):
            await _insert_user(conn, org, email)
    finally:
        await conn.close()
    with pytest.raises(RuntimeError, match=r"one@acme\.test"):
        await asyncio.to_thread(migrations.upgrade, url)
