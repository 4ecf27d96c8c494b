"""Every error a client sees has a code, and no internals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import strawberry
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from prism.config import Mode, Settings
from prism.errors import NotFound
from prism.execution.extensions import ErrorCodes
from prism.models.enums import Role
from prism.web.app import create_app
from tests.factories import Tenant, codes, gql

INTERNALS = ("Traceback", "SELECT", "/work", ".py", "asyncpg", "sqlalchemy")


def _clean(body: dict) -> None:  # type: ignore[type-arg]
    text = str(body.get("errors"))
    for leak in INTERNALS:
        assert leak not in text, (leak, text)


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        ("{ documents { ", None, "BAD_USER_INPUT"),
        ("{ documentz { totalCount } }", None, "BAD_USER_INPUT"),
        ("query($f: Int) { documents(first: $f) { totalCount } }", {"f": "ten"}, "BAD_USER_INPUT"),
        ('{ document(id: "not-an-id") { id } }', None, "BAD_USER_INPUT"),
        ('{ node(id: "VXNlcjpub3QtYS11dWlk") { id } }', None, "BAD_USER_INPUT"),
        (
            "{ " + " ".join(f"a{i}: viewer {{ scopes }}" for i in range(40)) + " }",
            None,
            "QUERY_TOO_COMPLEX",
        ),
        (
            "{ documents { edges { node { sections { edges { node { document { sections { edges {"
            " node { document { sections { edges { node { name } } } } } } } } } } } } } } }",
            None,
            "QUERY_TOO_COMPLEX",
        ),
    ],
)
async def test_bad_requests_get_a_code_and_no_internals(
    client: httpx.AsyncClient,
    tenant: Tenant,
    query: str,
    variables: dict | None,
    code: str,  # type: ignore[type-arg]
) -> None:
    body = await gql(client, query, variables, token=tenant.tokens[Role.VIEWER])
    assert codes(body), body
    assert set(codes(body)) == {code}, body
    _clean(body)


async def test_unexpected_errors_are_masked() -> None:
    @strawberry.type
    class Query:
        @strawberry.field
        def broken(self) -> str:
            raise RuntimeError("SELECT password FROM users -- /srv/prism/secret.py")

        @strawberry.field
        def missing(self) -> str:
            raise NotFound("Thing not found.")

    schema = strawberry.Schema(query=Query, extensions=[ErrorCodes])
    result = await schema.execute("{ broken }")
    assert result.errors is not None
    error = result.errors[0]
    assert error.message == "Unexpected error."
    assert error.extensions is not None
    assert error.extensions["code"] == "INTERNAL"
    result = await schema.execute("{ missing }")
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "NOT_FOUND"}
    assert result.errors[0].message == "Thing not found."


@pytest.fixture
async def production_client(
    settings: Settings, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    prod = settings.model_copy(update={"mode": Mode.PRODUCTION, "jwt_secret": SecretStr("p" * 48)})
    app = create_app(prod, database_url=database_url)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as http:
            yield http


async def test_production_hides_introspection_suggestions_and_graphiql(
    production_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.VIEWER]
    introspection = await gql(production_client, "{ __schema { types { name } } }", token=token)
    assert set(codes(introspection)) == {"BAD_USER_INPUT"}
    assert introspection["data"] is None
    typo = await gql(production_client, "{ documentz { totalCount } }", token=token)
    assert "Did you mean" not in typo["errors"][0]["message"]
    page = await production_client.get("/graphql", headers={"accept": "text/html"})
    assert "graphiql" not in page.text.lower()


async def test_mutations_are_refused_over_get(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get(
        "/graphql",
        params={"query": 'mutation { logout(refreshToken: "x") }'},
        headers={"authorization": f"Bearer {tenant.tokens[Role.ADMIN]}"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "not allowed" in response.json()["errors"][0]["message"]


async def test_malformed_http_requests_get_typed_errors(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
