"""CORS: browser pages on the configured origins may call the API with a bearer token and
read its answers (errors, limits and cache validators included); other origins, and every
origin when none is configured, get nothing that lets a browser through."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from prism.config import Settings
from prism.models.enums import Role
from tests.conftest import app_with, client_of
from tests.factories import Tenant

APP = "https://app.example.com"
QUERY = {"query": "{ viewer { user { email } } }"}


def _preflight(origin: str, headers: str = "authorization,content-type") -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": headers,
    }


def _ip() -> str:
    n = uuid.uuid4().int
    return f"198.51.{(n >> 8) % 256}.{(n >> 16) % 254 + 1}"


async def test_allowed_origin_preflight_and_answers(
    settings: Settings, database_url: str, tenant: Tenant
) -> None:
    configured = settings.model_copy(update={"cors_origins": f"{APP}/, https://bi.example.com"})
    async with app_with(configured, database_url) as app, client_of(app, _ip()) as http:
        pre = await http.options(
            "/graphql",
            headers=_preflight(APP, "authorization,content-type,x-prism-csrf,if-none-match"),
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == APP
        allowed = {h.strip() for h in pre.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "x-prism-csrf", "if-none-match"} <= allowed
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert pre.headers["access-control-max-age"] == str(configured.cors_max_age_seconds)
        assert "access-control-allow-credentials" not in pre.headers

        token = tenant.tokens[Role.REVIEWER]
        answer = await http.post(
            "/graphql", json=QUERY, headers={"origin": APP, "authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["viewer"]["user"]["email"]
        assert answer.headers["access-control-allow-origin"] == APP
        exposed = {
            h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")
        }
        assert {"ratelimit-remaining", "retry-after", "etag", "x-request-id"} <= exposed
        assert "ratelimit-remaining" in answer.headers

        # An error answer reaches the page too, so it can read the code.
        refused = await http.post(
            "/graphql", json=QUERY, headers={"origin": APP, "authorization": "Bearer nope"}
        )
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == APP
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_other_origins_get_nothing(settings: Settings, database_url: str) -> None:
    configured = settings.model_copy(update={"cors_origins": APP})
    async with app_with(configured, database_url) as app, client_of(app, _ip()) as http:
        for origin in ("https://evil.example.com", "http://app.example.com", f"{APP}.evil.io"):
            pre = await http.options("/graphql", headers=_preflight(origin))
            assert pre.status_code == 400
            assert "access-control-allow-origin" not in pre.headers
            answer = await http.post("/graphql", json=QUERY, headers={"origin": origin})
            assert "access-control-allow-origin" not in answer.headers
        # A header the API does not read is not approved.
        pre = await http.options("/graphql", headers=_preflight(APP, "x-forged-admin"))
        assert pre.status_code == 400


async def test_no_origin_configured_is_no_cors(client: Any) -> None:
    pre = await client.options("/graphql", headers=_preflight(APP))
    assert pre.status_code == 405
    assert "access-control-allow-origin" not in pre.headers
    answer = await client.post("/graphql", json=QUERY, headers={"origin": APP})
    assert "access-control-allow-origin" not in answer.headers


async def test_any_origin_never_with_credentials(settings: Settings, database_url: str) -> None:
    configured = settings.model_copy(update={"cors_origins": "*"})
    async with app_with(configured, database_url) as app, client_of(app, _ip()) as http:
        pre = await http.options("/graphql", headers=_preflight("https://anywhere.example"))
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in pre.headers


@pytest.mark.parametrize(
    "value",
    [
        "app.example.com",
        "https://app.example.com/path",
        "ftp://app.example.com",
        "https://user@app.example.com",
        "https://app.example.com:99999",
        "https://app.example.com?x=1",
    ],
)
def test_origins_must_be_origins(value: str) -> None:
    with pytest.raises(ValidationError, match="CORS"):
        Settings(_env_file=None, cors_origins=value)  # type: ignore[call-arg]


def test_origins_are_normalized() -> None:
    settings = Settings(
        _env_file=None, cors_origins=" HTTPS://App.Example.com/ ,https://app.example.com"
    )  # type: ignore[call-arg]
    assert settings.allowed_origins == ["https://app.example.com"]
