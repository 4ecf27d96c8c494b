"""The dashboard page (``GET /dashboard``): BI aggregates drawn in the browser, a client of
the API and nothing more.

The page is static: Prism's own script and style (``static/prism-dashboard.*``) and Chart.js
(pinned by ``web/package-lock.json``), under a policy that lets it load nothing else and
connect to this origin only. It asks for a bearer token, as GraphiQL does, and calls
``/graphql`` with it, sending only the sha256 hashes of the operations of
``dashboard.graphql``: they are registered as global operations when Prism starts
(:func:`register`, idempotent), so any caller allowed to read BI aggregates runs them (a BI
token, held to registered operations, included), each for its own organization and within
its clearance. The hashes are computed here, once, and given to the page in a data
attribute. Without a token the page shows no number: it is served in every mode."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from importlib import resources

import structlog
from graphql import GraphQLSchema
from starlette.requests import Request
from starlette.responses import Response

from prism.models.registered_operations import operation_hash, register_operations
from prism.operations.persisted import split_operations
from prism.services import Services
from prism.web.assets import Assets, Page, Policy, page_response

log = structlog.get_logger("prism.dashboard")

ROUTE = "/dashboard"
# The operations the page runs, by name: the sign-in check, and every panel of a range.
VIEWER, PANELS = "DashboardViewer", "Dashboard"


def source() -> str:
    """The text of ``dashboard.graphql``, shipped with Prism."""
    return resources.files("prism.web").joinpath("dashboard.graphql").read_text()


class Dashboard:
    """The page and its operations, validated against ``schema`` (a file that does not is an
    error at start-up, not a blank page)."""

    def __init__(self, schema: GraphQLSchema, assets: Assets) -> None:
        self.assets = assets
        self.operations: list[tuple[str, str]] = split_operations(source(), schema)
        self.hashes: dict[str, str] = {
            name: operation_hash(document) for name, document in self.operations
        }
        missing = {VIEWER, PANELS} - set(self.hashes)
        if missing:
            raise LookupError(f"dashboard.graphql lacks {sorted(missing)}")
        self.page = page(self.hashes)

    async def register(self, services: Services) -> None:
        """Register the page's operations (global; already registered ones are left as they
        are). A database that refuses is logged, and Prism serves on: the page then says
        its operations are not registered."""
        try:
            async with services.db.transaction(None) as session:
                stored = await register_operations(session, self.operations)
        except Exception as exc:  # noqa: BLE001 - the API serves without its dashboard
            log.warning(
                "dashboard operations not registered: `prism operations push` them",
                path="prism/web/dashboard.graphql",
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        new = [name for name, _, created in stored if created]
        if new:
            log.info("dashboard operations registered", operations=new)

    async def serve(self, request: Request) -> Response:
        return await page_response(self.assets, self.page)


def page(hashes: Mapping[str, str]) -> Page:
    operations = html.escape(json.dumps(dict(sorted(hashes.items())), separators=(",", ":")))
    return Page(
        title="Prism dashboard",
        what="The dashboard",
        styles=("prism-dashboard.css",),
        scripts=("chart.js", "prism-dashboard.js"),
        body=_BODY.replace("{operations}", operations),
        policy=Policy(),
    )


def _tile(key: str, label: str) -> str:
    return f'<div class="tile"><dt>{label}</dt><dd data-tile="{key}" data-value="">–</dd></div>'


def _panel(
    key: str, title: str, caption: str, columns: tuple[str, ...], *, folded: str = ""
) -> str:
    """A chart with its data as a table: the table is the chart's text alternative (a long
    one ``folded`` in a disclosure of that summary)."""
    head = "".join(f'<th scope="col">{c}</th>' for c in columns)
    table = (
        f'<div class="table-wrap"><table id="{key}-table"><caption>{caption}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody></tbody></table></div>"
    )
    if folded:
        table = f"<details><summary>{folded}</summary>{table}</details>"
    return (
        f'<section class="panel" id="{key}" aria-labelledby="{key}-title">'
        f'<h2 id="{key}-title">{title}</h2>'
        f'<p class="note" id="{key}-note"></p>'
        f'<div class="chart"><canvas id="{key}-chart" role="img" '
        f'aria-label="{title}: the numbers are in the table below"></canvas></div>'
        f"{table}</section>"
    )


_BODY = (
    '<a class="skip" href="#dashboard">Skip to the dashboard</a>'
    '<header class="bar"><h1>Prism dashboard</h1>'
    '<form id="sign-in"><label for="token">Bearer token</label>'
    '<input id="token" type="password" autocomplete="off" spellcheck="false" required'
    ' placeholder="prism_pat_… or an access token from login">'
    '<button type="submit">Sign in</button></form>'
    '<p id="who" role="status" aria-live="polite">Loading…</p>'
    '<button id="sign-out" type="button" hidden>Sign out</button></header>'
    '<main id="dashboard" tabindex="-1" data-operations="{operations}">'
    "<noscript><p>The dashboard needs JavaScript.</p></noscript>"
    '<form id="range" class="range" hidden aria-describedby="range-help">'
    "<fieldset><legend>Date range (UTC days)</legend>"
    '<label for="from">From</label><input id="from" name="from" type="date" required>'
    '<label for="to">To</label><input id="to" name="to" type="date" required>'
    '<button type="submit">Show</button></fieldset>'
    '<p id="range-help" class="note">At most 366 days; the default is the last 30.</p></form>'
    '<p id="problem" role="alert" hidden></p>'
    '<div id="panels" hidden>'
    '<section class="panel" id="summary" aria-labelledby="summary-title">'
    '<h2 id="summary-title">Summary</h2>'
    '<h3 id="range-tiles-title">In the range <span id="range-period"></span></h3>'
    '<dl class="tiles" aria-labelledby="range-tiles-title">'
    + _tile("documents", "Documents uploaded")
    + _tile("analyses", "AI analyses")
    + _tile("cost", "AI cost")
    + _tile("acceptance", "Feedback accepted")
    + "</dl>"
    '<h3 id="executive-tiles-title">Executive summary: last <span id="executive-days">'
    '</span> days <span id="executive-period"></span></h3>'
    '<dl class="tiles" aria-labelledby="executive-tiles-title">'
    + _tile("processed", "Documents processed")
    + _tile("activeUsers", "Active users")
    + _tile("highRisk", "High-risk documents")
    + _tile("costPerDocument", "Cost per document")
    + _tile("processingTime", "Average analysis time")
    + _tile("satisfaction", "Average rating")
    + "</dl>"
    '<p class="note">The executive summary always ends today (UTC): it covers as many days '
    "as the range.</p></section>"
    + _panel(
        "trend",
        "Daily trend",
        "AI analyses, their cost and the feedback items they produced, per UTC day",
        ("Day", "Analyses", "Cost (USD)", "Feedback items", "Average time (s)"),
        folded="The numbers, day by day",
    )
    + _panel(
        "risk",
        "Risk distribution",
        "Documents uploaded in the range, by risk level",
        ("Risk", "Documents"),
    )
    + _panel(
        "feedback",
        "Feedback acceptance",
        "Reviewers' feedback on the AI in the range, by action",
        ("Action", "Feedback"),
    )
    + _panel(
        "models",
        "AI cost by model",
        "AI analyses completed in the range, by model",
        ("Model", "Analyses", "Tokens", "Cost (USD)"),
    )
    + "</div></main>"
)
