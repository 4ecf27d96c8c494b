"""The dashboard page (/dashboard): a client of the API that Prism serves.

Over HTTP: the page loads only its own files under a strict policy, in every mode; its
operations are registered as global operations when Prism starts (again and again without
harm), and the page names them by hash only; a BI token, held to registered operations, runs
them; a role that may not read BI aggregates is refused by the API, not by the page.

In headless Chromium with the network cut to loopback, on the demo's data: signing in draws
every panel at desktop (1280×800) and phone (375×812) widths, and every number shown is the
API's answer for the same range and token; nothing is requested from elsewhere, no policy is
violated, the keyboard reaches the range picker and sign-out, and the phone width has no
sideways scrolling. With PRISM_SCREENSHOTS=1 the browser tests also write
docs/screenshots/dashboard-desktop.png and dashboard-phone.png:

    PRISM_SCREENSHOTS=1 .venv/bin/pytest tests/test_dashboard.py -m browser
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from pydantic import SecretStr
from starlette.requests import Request

from prism import bootstrap, demo
from prism.audit import OPERATOR
from prism.config import Mode, Settings
from prism.db import migrations
from prism.models.enums import Classification, Role
from prism.models.registered_operations import list_operations, operation_hash
from prism.operations.persisted import split_operations
from prism.schema import build_schema
from prism.services import Services
from prism.tokens import api_tokens
from prism.web.app import create_app
from prism.web.assets import Assets
from prism.web.dashboard import PANELS, VIEWER, Dashboard, source
from tests.browser import loopback_profile, serving, watch
from tests.conftest import NewDatabase, app_with, client_of
from tests.factories import Tenant, codes

SCREENSHOTS_ENV = "PRISM_SCREENSHOTS"
ASSET = re.compile(r'(?:src|href)="(/assets/[0-9a-f]{20}/([\w.-]+))" integrity="sha384-[^"]+"')
OPERATIONS = re.compile(r'data-operations="([^"]*)"')


def _hashes() -> dict[str, str]:
    return {
        name: operation_hash(text)
        for name, text in split_operations(source(), build_schema()._schema)
    }


def _persisted(name: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "operationName": name,
        "variables": variables or {},
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": _hashes()[name]}},
    }


async def _run(
    http: httpx.AsyncClient, token: str, name: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    answer = await http.post(
        "/graphql", json=_persisted(name, variables), headers={"authorization": f"Bearer {token}"}
    )
    body: dict[str, Any] = answer.json()
    return body


async def _bi_token(
    services: Services, organization_id: Any, clearance: Classification = Classification.INTERNAL
) -> str:
    created = await api_tokens.create_token(
        services,
        OPERATOR,
        organization_id,
        name="dashboard",
        scopes=["bi:read"],
        role=Role.AUDITOR,
        clearance=clearance,
    )
    return created.secret


# --- over HTTP ---------------------------------------------------------------------------


async def test_the_page_loads_only_its_own_files_under_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in page.headers["content-security-policy"].split(";")
    )
    assert policy == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "connect-src": "'self'",
        "img-src": "'self'",
        "font-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    body = page.text
    # No inline script, handler or style, and nothing from another origin.
    assert re.findall(r"<script(?![^>]* src=)", body) == []
    assert re.search(r"<style|\sstyle=|\son[a-z]+=|https?://", body) is None
    found = ASSET.findall(body)
    assert [name for _, name in found] == ["prism-dashboard.css", "chart.js", "prism-dashboard.js"]
    for url, _ in found:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    # Its operations by hash only: the hashes of dashboard.graphql's operations, no text.
    operations = json.loads(OPERATIONS.search(body).group(1).replace("&quot;", '"'))  # type: ignore[union-attr]
    assert operations == _hashes()
    assert set(operations) == {VIEWER, PANELS}
    assert "executiveSummary" not in body


async def test_the_page_is_served_in_production_and_holds_no_data(
    settings: Settings, database_url: str
) -> None:
    production = settings.model_copy(
        update={"mode": Mode.PRODUCTION, "jwt_secret": SecretStr("p" * 48)}
    )
    async with app_with(production, database_url) as app, client_of(app) as http:
        page = await http.get("/dashboard")
        # GraphiQL is not served there; the dashboard is (it shows nothing without a token).
        ide = await http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert ide.status_code != 200 or "graphiql" not in ide.text.lower()
    assert 'data-tile="documents" data-value=""' in page.text


async def test_a_page_whose_files_are_missing_says_which(tmp_path: Path) -> None:
    dashboard = Dashboard(build_schema()._schema, Assets(tmp_path))
    answer = await dashboard.serve(Request({"type": "http", "method": "GET", "headers": []}))
    assert answer.status_code == 503
    text = bytes(answer.body).decode()
    assert "The dashboard cannot start" in text
    assert "vendor/chart.umd.min.js" in text
    assert "chart.js/dist/chart.umd.min.js" in text


async def test_its_operations_are_registered_at_start_and_again_without_harm(
    app: Any, services: Services
) -> None:
    expected = _hashes()
    async with services.db.transaction(None) as session:
        stored = {row.name: row.sha256 for row in await list_operations(session)}
    assert {name: stored.get(name) for name in expected} == expected
    # A second start (another process, a restart) registers nothing new and fails nothing.
    dashboard = Dashboard(build_schema()._schema, Assets())
    await dashboard.register(services)
    await dashboard.register(services)
    async with services.db.transaction(None) as session:
        again = [row for row in await list_operations(session) if row.name in expected]
    assert sorted((row.name, row.sha256) for row in again) == sorted(expected.items())


async def test_a_bi_token_runs_them_by_hash_and_a_viewer_is_refused(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    bi = await _bi_token(services, tenant.org_id)
    who = await _run(client, bi, VIEWER)
    assert who.get("errors") is None, who
    assert who["data"]["viewer"]["organization"]["name"] == tenant.name
    variables = {"from": "2026-01-01", "to": "2026-01-31", "periodDays": 31}
    panels = await _run(client, bi, PANELS, variables)
    assert panels.get("errors") is None, panels
    assert len(panels["data"]["dailySummary"]) == 31
    # The same token may not send any other text: the page has nothing else to send.
    other = await client.post(
        "/graphql",
        json={"query": "{ executiveSummary { totalActiveUsers } }"},
        headers={"authorization": f"Bearer {bi}"},
    )
    assert codes(other.json()) == ["PERSISTED_QUERY_REQUIRED"]
    # A role that may not read BI aggregates is refused by the API.
    refused = await _run(client, tenant.tokens[Role.VIEWER], PANELS, variables)
    assert "FORBIDDEN" in codes(refused)


# --- in Chromium, on the demo's data ---------------------------------------------------


@dataclass(frozen=True)
class DemoWorld:
    settings: Settings
    database_url: str
    admin_token: str  # the demo's own token: Acme's ADMIN, every scope
    bi_token: str  # a BI token of Acme: AUDITOR, CONFIDENTIAL, `bi:read` only


@pytest.fixture(scope="module")
async def demo_world(
    new_database: NewDatabase, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> DemoWorld:
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(
        update={"database_url": SecretStr(url), "data_dir": tmp_path_factory.mktemp("demo")}
    )
    services = bootstrap.build_services(own, url)
    try:
        seeded = await demo.seed(services)
        bi = await _bi_token(services, seeded.organization_id, Classification.CONFIDENTIAL)
    finally:
        await services.close()
    return DemoWorld(own, url, seeded.token, bi)


def _count(value: int) -> str:
    return f"{value:,}"


def _usd(value: str) -> str:
    """As the page writes it (Intl, en-US): 2 to 4 decimals."""
    text = f"{Decimal(value).quantize(Decimal('0.0001'), ROUND_HALF_UP):,.4f}"
    while text.endswith("0") and len(text.split(".")[1]) > 2:
        text = text[:-1]
    return "$" + text


async def _tile(page: Page, key: str) -> tuple[str, str]:
    cell = page.locator(f'[data-tile="{key}"]')
    return (await cell.get_attribute("data-value") or "", await cell.inner_text())


async def _rows(page: Page, panel: str) -> list[list[tuple[str, str]]]:
    """(data-value, text) of each cell of a panel's table, row by row."""
    rows: list[list[tuple[str, str]]] = await page.evaluate(
        """(id) => [...document.querySelectorAll(`#${id}-table tbody tr`)].map((row) =>
             [...row.children].map((cell) =>
               [cell.getAttribute("data-value"), cell.textContent]))""",
        panel,
    )
    return rows


async def _check_numbers(page: Page, api: dict[str, Any]) -> None:
    """Every tile and every table cell the page shows is the API's answer."""
    summary = api["executiveSummary"]
    usage = (api["usageTotal"] or [{"analyses": 0, "tokensUsed": 0, "costUsd": "0"}])[0]
    feedback = api["feedbackAcceptance"][0]
    documents = sum(row["documents"] for row in api["riskDistribution"])
    assert await _tile(page, "documents") == (str(documents), _count(documents))
    assert await _tile(page, "analyses") == (str(usage["analyses"]), _count(usage["analyses"]))
    assert await _tile(page, "cost") == (usage["costUsd"], _usd(usage["costUsd"]))
    value, text = await _tile(page, "acceptance")
    assert float(value) == feedback["acceptanceRate"]
    assert text == f"{feedback['acceptanceRate'] * 100:.1f}% of {_count(feedback['feedback'])}"
    for key, field in (
        ("processed", "totalDocumentsProcessed"),
        ("activeUsers", "totalActiveUsers"),
    ):
        assert await _tile(page, key) == (str(summary[field]), _count(summary[field]))
    value, text = await _tile(page, "highRisk")
    assert int(value) == summary["highRiskDocumentsCount"]
    assert text == f"{_count(int(value))} ({summary['highRiskPercentage']:.1f}%)"
    assert await _tile(page, "costPerDocument") == (
        summary["costPerDocument"],
        _usd(summary["costPerDocument"]),
    )
    value, text = await _tile(page, "processingTime")
    assert float(value) == summary["averageProcessingTimeSeconds"]
    assert text == f"{summary['averageProcessingTimeSeconds']:.2f} s"
    value, text = await _tile(page, "satisfaction")
    rating = summary["averageUserSatisfaction"]
    assert (value, text) == (("", "none rated") if rating is None else (value, f"{rating:.2f} / 5"))
    if rating is not None:
        assert float(value) == rating

    trend = await _rows(page, "trend")
    assert [row[0][0] for row in trend] == [day["date"] for day in api["dailySummary"]]
    for row, day in zip(trend, api["dailySummary"], strict=True):
        assert int(row[1][0]) == day["totalAnalyses"]
        assert row[1][1] == _count(day["totalAnalyses"])
        assert tuple(row[2]) == (day["totalCostUsd"], _usd(day["totalCostUsd"]))
        assert int(row[3][0]) == day["totalFeedbackItems"]
        assert float(row[4][0]) == day["avgProcessingTimeSeconds"]

    risk = {row[0][0]: int(row[1][0]) for row in await _rows(page, "risk")}
    expected_risk = {"HIGH": 0, "MEDIUM": 0, "LOW": 0, "": 0}
    for row in api["riskDistribution"]:
        expected_risk[row["riskLevel"] or ""] += row["documents"]
    assert risk == expected_risk

    actions = {row[0][0]: int(row[1][0]) for row in await _rows(page, "feedback")}
    assert actions == {key: feedback[key] for key in ("accepted", "modified", "custom", "rejected")}

    models = {
        (row[0][0], int(row[1][0]), int(row[2][0]), row[3][0])
        for row in await _rows(page, "models")
    }
    assert models == {
        (row["model"], row["analyses"], row["tokensUsed"], row["costUsd"])
        for row in api["usageByModel"]
    }


# The focused element: its id (or tag and type), and whether its focus is drawn.
_FOCUSED = """() => {
  const e = document.activeElement;
  const style = getComputedStyle(e);
  const drawn = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
  return [e.id || e.tagName.toLowerCase() + (e.type ? ":" + e.type : ""), drawn];
}"""


async def _tab_order(page: Page) -> list[str]:
    """What the Tab key reaches from the top of the page to its end, in order (ids, or tag
    names); each stop must show its focus."""
    # A click on the title moves the starting point of sequential navigation there.
    await page.click("h1")
    reached: list[str] = []
    while len(reached) < 30:
        await page.keyboard.press("Tab")
        name, drawn = await page.evaluate(_FOCUSED)
        if name == "body":  # past the last stop
            break
        assert drawn, f"{name} shows no focus"
        reached.append(name)
    return reached


# Text whose colour does not stand out from its background as WCAG AA asks (4.5:1; 3:1 for
# large text), measured on what the page computes: "tag#id text ratio" for each, and how many
# elements with text were measured.
_LOW_CONTRAST = """() => {
  const channels = (text) => {
    const found = text.match(/rgba?\\(([^)]+)\\)/);
    if (!found) return null;
    const p = found[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { rgb: p.slice(0, 3), alpha: p.length > 3 ? p[3] : 1 };
  };
  const luminance = ({ rgb }) => {
    const [r, g, b] = rgb.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const background = (element) => {
    for (let e = element; e; e = e.parentElement) {
      const colour = channels(getComputedStyle(e).backgroundColor);
      if (colour && colour.alpha > 0) return colour;
    }
    return { rgb: [255, 255, 255], alpha: 1 };
  };
  const low = [];
  let measured = 0;
  for (const element of document.querySelectorAll("body *")) {
    const texts = [...element.childNodes].filter((n) => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(element);
    if (!texts.length || style.visibility === "hidden" || !element.getClientRects().length) {
      continue;
    }
    measured += 1;
    const [a, b] = [luminance(channels(style.color)), luminance(background(element))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (Number(style.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      low.push(`${element.tagName}#${element.id} ${texts[0].textContent.trim()} ${ratio}`);
    }
  }
  return [low, measured];
}"""


@pytest.mark.browser
@pytest.mark.parametrize(
    ("width", "height", "who"),
    [(1280, 800, "admin"), (375, 812, "bi")],
    ids=["desktop", "phone"],
)
async def test_the_dashboard_draws_the_demo_as_the_api_answers(
    chromium: Browser, demo_world: DemoWorld, repo_root: Path, width: int, height: int, who: str
) -> None:
    token = demo_world.admin_token if who == "admin" else demo_world.bi_token
    app = create_app(demo_world.settings, database_url=demo_world.database_url)
    async with (
        serving(app) as prism,
        loopback_profile(chromium, viewport={"width": width, "height": height}) as profile,
    ):
        page = await profile.context.new_page()
        watched = watch(page)
        answer = await page.goto(f"{prism}/dashboard")
        assert answer is not None
        assert answer.status == 200
        assert "unsafe" not in answer.headers["content-security-policy"]
        status = page.locator("#who")
        await expect(status).to_have_text("Not signed in")
        await expect(page.locator("#panels")).to_be_hidden()
        # The first stop of the keyboard is the link that skips to the dashboard.
        await page.keyboard.press("Tab")
        assert await page.evaluate(_FOCUSED) == ["a", True]

        # A refused token is said so, and not kept.
        await page.fill("#token", "prism_pat_not-a-token")
        await page.click("#sign-in button[type=submit]")
        await expect(status).to_have_text(re.compile("^Token refused"))
        assert await page.evaluate("sessionStorage.length") == 0

        await page.fill("#token", token)
        await page.click("#sign-in button[type=submit]")
        signed = "admin@acme.example (ADMIN)" if who == "admin" else "a service token (bi:read)"
        await expect(status).to_have_text(f"Signed in: {signed}, {demo.DEMO_ORGANIZATION}")
        main = page.locator("#dashboard")
        await expect(main).to_have_attribute("data-range", re.compile(r"^\d{4}-\d\d-\d\d/"))
        await expect(page.locator("#panels")).to_be_visible()
        assert await page.evaluate("Object.values(sessionStorage)") == [token]
        assert await profile.context.cookies() == []

        # The numbers are the API's for the same range and token.
        first, last = (await main.get_attribute("data-range") or "").split("/")
        assert (first, last) == (await page.input_value("#from"), await page.input_value("#to"))
        days = (date.fromisoformat(last) - date.fromisoformat(first)).days + 1
        assert days == 30
        async with httpx.AsyncClient(base_url=prism) as http:
            api = await _run(http, token, PANELS, {"from": first, "to": last, "periodDays": days})
        assert api.get("errors") is None, api
        data = api["data"]
        await _check_numbers(page, data)
        # The demo's numbers, not zeros: the test would notice a panel left empty.
        assert data["usageTotal"][0]["analyses"] > 0
        assert data["feedbackAcceptance"][0]["accepted"] > 0
        assert sum(r["documents"] for r in data["riskDistribution"]) == (5 if who == "admin" else 4)

        # Every chart is drawn, on a canvas with a text alternative that says what it shows.
        for panel in ("trend", "risk", "feedback", "models"):
            canvas = page.locator(f"#{panel}-chart")
            drawn = await page.evaluate(
                "(id) => { const c = Chart.getChart(id); return c ? c.data.labels.length : -1 }",
                f"{panel}-chart",
            )
            assert drawn > 0, panel
            box = await canvas.bounding_box()
            assert box is not None
            assert box["width"] > 200, (panel, box)
            assert box["height"] > 150, (panel, box)
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= width
            label = await canvas.get_attribute("aria-label") or ""
            assert first in label, label
            assert await canvas.get_attribute("role") == "img"
        low, measured = await page.evaluate(_LOW_CONTRAST)
        assert low == []
        assert measured > 60  # tiles, notes, tables: the whole page was measured
        # Nothing sideways: the page fits the width, the phone's included.
        assert await page.evaluate("document.documentElement.scrollWidth") <= width

        if os.environ.get(SCREENSHOTS_ENV):
            await page.locator("#from").blur()
            name = "desktop" if width > 600 else "phone"
            target = repo_root / "docs" / "screenshots" / f"dashboard-{name}.png"
            target.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(target), full_page=True)

        # Another range: a shorter one draws again; a reversed one is said so.
        await page.fill("#from", last)
        await page.click("#range button[type=submit]")
        await expect(main).to_have_attribute("data-range", f"{last}/{last}")
        assert len(await _rows(page, "trend")) == 1
        await page.fill("#from", "2099-01-01")
        await page.click("#range button[type=submit]")
        await expect(page.locator("#problem")).to_contain_text("starts after it ends")

        # The keyboard reaches the range picker and sign-out, in reading order.
        reached = await _tab_order(page)
        for stop in ("sign-out", "from", "to"):
            assert stop in reached, reached
        assert reached.index("sign-out") < reached.index("from") < reached.index("to")
        await page.focus("#sign-out")
        await page.keyboard.press("Enter")
        await expect(status).to_have_text("Not signed in")
        await expect(page.locator("#panels")).to_be_hidden()
        assert await page.evaluate("sessionStorage.length") == 0

        assert profile.loopback.refused == []
        assert profile.violations.all == []
        assert watched.exceptions == []
