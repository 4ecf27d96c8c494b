"""GraphiQL is served by Prism from its own files: a page with no inline script or style, a
strict Content-Security-Policy, and files named by their digest that may be cached for a
year; only the allow-listed files are served, and a page whose files are not installed says
which. (tests/test_browser.py runs it in Chromium.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from prism.config import Mode, Settings
from prism.models.enums import Role
from prism.web.assets import FILES, STATIC, Assets, Page, page_response, vendor
from prism.web.graphql import GRAPHIQL, GRAPHIQL_DIALOG_STYLE
from tests.conftest import app_with, client_of
from tests.factories import Tenant

HTML = {"accept": "text/html"}
ASSET = re.compile(r'(?:src|href)="(/assets/([0-9a-f]{20})/([\w.-]+))" integrity="([^"]+)"')


async def test_the_page_loads_only_its_own_files_under_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/graphql", headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in page.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    # Styles: files, and the one style element GraphiQL's dialogs add, by its hash.
    assert policy["style-src"] == f"'self' {GRAPHIQL_DIALOG_STYLE}"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["img-src"] == "'self' data:"
    assert policy["font-src"] == "'self' data:"
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"
    # No inline script, handler or style: everything the page runs is a file of its own.
    body = page.text
    assert "unpkg" not in body
    assert re.findall(r"<script(?![^>]* src=)", body) == []
    assert re.search(r"<style|\sstyle=|\son[a-z]+=", body) is None
    found = ASSET.findall(body)
    assert sorted(name for _, _, name, _ in found) == sorted(GRAPHIQL.files)
    for url, digest, _name, integrity in found:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert asset.headers["content-type"].startswith(("text/javascript", "text/css"))
        assert hashlib.sha256(asset.content).hexdigest()[:20] == digest
        sha384 = base64.b64encode(hashlib.sha384(asset.content).digest()).decode()
        assert integrity == f"sha384-{sha384}"


async def test_assets_are_compressed_and_revalidated(client: httpx.AsyncClient) -> None:
    url = Assets().url("graphiql.js")
    plain = await client.get(url, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    raw = await client.get(url, headers={"accept-encoding": "gzip, br"})
    # httpx decodes gzip itself; the header and the size on the wire say it was compressed.
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.content == plain.content
    assert int(raw.headers["content-length"]) < len(plain.content) / 3
    again = await client.get(url, headers={"if-none-match": plain.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/assets/{digest}/nope.js",  # not in the allow-list
        "/assets/{digest}/..%2Fapp.py",  # a path, not a name
        "/assets/{digest}/..%2F..%2Fconfig.py",
        "/assets/{digest}/assets.py",  # a file beside the static files, not one of them
        "/assets/0000000000000000000/graphiql.js",  # another digest: not these bytes
        "/assets/graphiql.js",
    ],
)
async def test_only_allow_listed_files_at_their_digest(
    client: httpx.AsyncClient, path: str
) -> None:
    digest = Assets().url("graphiql.js").split("/")[2]
    answer = await client.get(path.format(digest=digest))
    assert answer.status_code == 404
    assert "immutable" not in answer.headers.get("cache-control", "")


async def test_non_browser_gets_are_answered_as_before(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = {"authorization": f"Bearer {tenant.tokens[Role.VIEWER]}"}
    query = await client.get(
        "/graphql", params={"query": "{ viewer { scopes } }"}, headers={**HTML, **token}
    )
    assert query.headers["content-type"] == "application/json"
    assert query.json()["data"]["viewer"]["scopes"]
    bare = await client.get("/graphql", headers={"accept": "application/json", **token})
    assert bare.status_code == 400
    assert bare.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    persisted = await client.get(
        "/graphql",
        params={"extensions": json.dumps({"persistedQuery": {"version": 1, "sha256Hash": "0"}})},
        headers=HTML,
    )
    assert persisted.headers["content-type"] == "application/json"


async def test_production_serves_it_only_when_asked(settings: Settings, database_url: str) -> None:
    production = settings.model_copy(
        update={"mode": Mode.PRODUCTION, "jwt_secret": SecretStr("p" * 48)}
    )
    async with app_with(production, database_url) as app, client_of(app) as http:
        page = await http.get("/graphql", headers=HTML)
        assert page.status_code == 404
        assert "content-security-policy" not in page.headers
    asked = production.model_copy(update={"graphiql": True})
    async with app_with(asked, database_url) as app, client_of(app) as http:
        page = await http.get("/graphql", headers=HTML)
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_a_page_whose_files_are_missing_says_which(tmp_path: Path) -> None:
    # An installation without the vendored files (a wheel built before `make install`).
    for entry in FILES:
        if entry.source is None:
            (tmp_path / entry.path).write_bytes((STATIC / entry.path).read_bytes())
    assets = Assets(tmp_path)
    answer = await page_response(assets, GRAPHIQL)
    assert answer.status_code == 503
    text = bytes(answer.body).decode()
    assert "GraphiQL cannot start" in text
    # (The vendored files of GraphiQL's page: the dashboard's are named on its own.)
    vendored = [e for e in FILES if e.source is not None and e.name in GRAPHIQL.files]
    assert vendored
    for entry in vendored:
        assert entry.path in text
        assert entry.source is not None
        assert entry.source in text
    assert "make install" in text
    assert "<script" not in text
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    # Installed later (`make install` while the server runs): the page works without a restart.
    for entry in vendored:
        (tmp_path / entry.path).parent.mkdir(exist_ok=True)
        (tmp_path / entry.path).write_bytes((STATIC / entry.path).read_bytes())
    assert (await page_response(assets, GRAPHIQL)).status_code == 200


async def test_another_page_uses_the_same_files_and_policy() -> None:
    assets = Assets()
    page = Page(title="<b>x</b>", styles=("prism-graphiql.css",), scripts=(), body="<p>hi</p>")
    answer = await page_response(assets, page)
    text = bytes(answer.body).decode()
    assert "<title>&lt;b&gt;x&lt;/b&gt;</title>" in text
    assert assets.url("prism-graphiql.css") in text
    assert "script-src 'self'" in answer.headers["content-security-policy"]


def test_this_checkout_has_every_file_installed() -> None:
    """`make install` vendors every file of the allow-list (npm ci, then the copy)."""
    missing = Assets().missing(entry.name for entry in FILES)
    assert missing == [], "run `make install` (scripts/web-assets.sh)"


def test_vendoring_copies_exactly_the_allow_listed_files(tmp_path: Path, repo_root: Path) -> None:
    copied = vendor(repo_root / "web" / "node_modules", tmp_path)
    vendored = [entry for entry in FILES if entry.source is not None]
    assert sorted(p.name for p in copied) == sorted(Path(e.path).name for e in vendored)
    assert sorted(p.name for p in (tmp_path / "vendor").iterdir()) == sorted(p.name for p in copied)
    with pytest.raises(FileNotFoundError, match="npm ci"):
        vendor(tmp_path / "no-node-modules", tmp_path / "elsewhere")


def test_the_browser_packages_are_pinned(repo_root: Path) -> None:
    """Exact versions in web/package.json, and a lock whose every package has its hash."""
    manifest = json.loads((repo_root / "web" / "package.json").read_text())
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in manifest["dependencies"].values())
    lock = json.loads((repo_root / "web" / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"] == manifest["dependencies"]
    packages = {path: p for path, p in lock["packages"].items() if path}
    assert packages
    assert all(p.get("integrity", "").startswith("sha512-") for p in packages.values())
