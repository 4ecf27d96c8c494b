"""Prism in a real browser: headless Chromium (Debian's, driven by Playwright) with the
network cut to loopback, against real uvicorn servers on free loopback ports.

GraphiQL loads from Prism alone under its Content-Security-Policy (no request leaves the
machine, no violation is reported), signs in with a bearer token and runs a query whose
answer appears in its result pane, and a subscription over the WebSocket; its dialogs, docs,
history, tabs, explorer and completion work under the same policy.

A page on another origin calls the API through CORS with a bearer token and reads the answer
and its rate-limit header; the same page on an origin that is not configured is refused by
the browser."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from prism.config import Settings
from prism.models.enums import Role
from prism.services import Services
from prism.web.app import create_app
from prism.web.graphql import GRAPHIQL
from tests.browser import Profile, serving, watch
from tests.factories import Tenant, add_document, gid

pytestmark = pytest.mark.browser

QUERY = "{ viewer { user { email } organization { name } } }"
PROGRESS = 'subscription { documentProgress(id: "%s") { processingStatus document { filename } } }'


async def test_graphiql_offline_signs_in_and_runs_a_query(
    settings: Settings,
    database_url: str,
    services: Services,
    tenant: Tenant,
    browser_profile: Profile,
) -> None:
    browser, loopback = browser_profile.context, browser_profile.loopback
    document = await add_document(services, tenant)
    async with serving(create_app(settings, database_url=database_url)) as prism:
        page = await browser.new_page()
        watched = watch(page)
        assets: dict[str, str] = {}
        page.on(
            "response",
            lambda r: assets.__setitem__(r.url, r.headers.get("cache-control", "")),
        )
        answer = await page.goto(f"{prism}/graphql")
        assert answer is not None
        assert answer.status == 200
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy
        assert "unsafe" not in policy
        await page.wait_for_selector(".graphiql-container .graphiql-query-editor .CodeMirror")
        assert await page.inner_text("#prism-status") == "Not signed in"

        # A refused token is said so, and not kept.
        await page.fill("#prism-token", "prism_pat_not-a-token")
        await page.click("#prism-sign-in button[type=submit]")
        # (Waits go through Playwright's locators: the page's policy forbids eval.)
        status = page.locator("#prism-status")
        await expect(status).to_have_text(re.compile("^Token refused"))
        assert await page.evaluate("sessionStorage.length") == 0

        token = tenant.tokens[Role.REVIEWER]
        await page.fill("#prism-token", token)
        await page.click("#prism-sign-in button[type=submit]")
        await expect(status).to_have_text(f"Signed in: {tenant.email(Role.REVIEWER)}")
        await expect(page.locator("#prism-sign-in")).to_be_hidden()
        stored = await page.evaluate("Object.values(sessionStorage)")
        assert stored == [token]
        assert await browser.cookies() == []

        editor = "(q) => document.querySelector('.graphiql-query-editor .CodeMirror')"
        await page.evaluate(f"{editor}.CodeMirror.setValue(q)", QUERY)
        await page.click(".graphiql-execute-button")
        response = page.locator(".graphiql-response")
        await expect(response).to_contain_text(tenant.name)
        await expect(response).to_contain_text(tenant.email(Role.REVIEWER))

        # A subscription goes over the WebSocket, signed in through connection_init.
        progress = PROGRESS % gid("Document", document.id)
        await page.evaluate(f"{editor}.CodeMirror.setValue(q)", progress)
        await page.click(".graphiql-execute-button")
        await expect(response).to_contain_text(document.filename)
        await expect(response).to_contain_text("COMPLETED")

        # The rest of the IDE works under the policy too: its dialogs, the schema's docs
        # (from introspection), the history, tabs.
        for opener in ("Open settings dialog", "Open short keys dialog"):
            await page.click(f"button[aria-label='{opener}']")
            dialog = page.get_by_role("dialog")
            await expect(dialog).to_be_visible()
            await page.keyboard.press("Escape")
            await expect(dialog).to_be_hidden()
        await page.click("button[aria-label='Show Documentation Explorer']")
        await expect(page.locator(".graphiql-doc-explorer")).to_contain_text("Query")
        await page.click("button[aria-label='Show History']")
        await expect(page.locator(".graphiql-history")).to_be_visible()
        await page.click(".graphiql-tab-add")
        await expect(page.locator(".graphiql-tab")).to_have_count(2)

        # The explorer plugin is there: a click on a field puts it in the query.
        await page.click("button[aria-label='Show GraphiQL Explorer']")
        await page.click(".graphiql-explorer-root >> text=apiTokens")
        query_editor = page.locator(".graphiql-query-editor")
        await expect(query_editor).to_contain_text("apiTokens")
        # Typing completes from the schema.
        await page.click(".graphiql-query-editor .CodeMirror")
        await page.keyboard.press("Control+End")
        await page.keyboard.type("\nquery Typed { docu")
        await expect(page.locator(".CodeMirror-hints")).to_contain_text("documents")
        await page.keyboard.press("Escape")

        # Reloading keeps the tab signed in (sessionStorage), without asking again; signing
        # out forgets the token.
        await page.reload()
        await expect(status).to_have_text(f"Signed in: {tenant.email(Role.REVIEWER)}")
        await page.click("#prism-sign-out")
        await expect(status).to_have_text("Not signed in")
        await expect(page.locator("#prism-token")).to_be_visible()
        assert await page.evaluate("sessionStorage.length") == 0

        assert loopback.refused == []
        assert browser_profile.violations.all == []
        assert watched.exceptions == []
        served = {u.rsplit("/", 1)[1]: cache for u, cache in assets.items() if "/assets/" in u}
        assert sorted(served) == sorted(GRAPHIQL.files)
        assert all("immutable" in cache for cache in served.values()), served


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>partner app</title>
<script>
async function callPrism(api, token) {
  try {
    const answer = await fetch(api + "/graphql", {
      method: "POST",
      headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
      body: JSON.stringify({query: "{ viewer { organization { name } } }"}),
    });
    return {
      status: answer.status,
      body: await answer.json(),
      remaining: answer.headers.get("RateLimit-Remaining"),
    };
  } catch (error) {
    return {error: String(error)};
  }
}
</script></head><body>partner app</body></html>"""


def _partner_site() -> Starlette:
    async def index(request: object) -> HTMLResponse:
        return HTMLResponse(PAGE)

    return Starlette(routes=[Route("/", index)])


async def test_a_page_on_another_origin_calls_the_api_through_cors(
    settings: Settings,
    database_url: str,
    tenant: Tenant,
    browser_profile: Profile,
) -> None:
    browser, loopback = browser_profile.context, browser_profile.loopback
    token = tenant.tokens[Role.VIEWER]
    async with serving(_partner_site()) as allowed, serving(_partner_site()) as other:
        configured = settings.model_copy(update={"cors_origins": allowed})
        async with serving(create_app(configured, database_url=database_url)) as prism:
            page = await browser.new_page()
            watched = watch(page)
            await page.goto(allowed)
            answer = await page.evaluate("([api, t]) => callPrism(api, t)", [prism, token])
            assert answer.get("error") is None, answer
            assert answer["status"] == 200
            assert answer["body"]["data"]["viewer"]["organization"]["name"] == tenant.name
            assert answer["remaining"] is not None
            assert int(answer["remaining"]) >= 0

            await page.goto(other)
            refused = await page.evaluate("([api, t]) => callPrism(api, t)", [prism, token])
            assert "Failed to fetch" in refused.get("error", ""), refused
            assert any("CORS" in message for message in watched.console_errors), (
                watched.console_errors
            )
    assert loopback.refused == []
