"""The browser harness: Debian's headless Chromium driven by Playwright, the network cut to
loopback, and real servers on free loopback ports for it to visit.

Playwright's own browser builds are never downloaded: Chromium is the system's
(``make test`` installs Debian's package: scripts/chromium.sh). Every request a page makes
that is not to 127.0.0.1 is aborted and recorded (:class:`Loopback`), and every Content
Security Policy violation is recorded too (:func:`watch_csp`), so a test can assert that
none happened."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    WebSocketRoute,
    async_playwright,
    expect,
)

CHROMIUM_ENV = "PRISM_TEST_CHROMIUM"
# A page's state is waited for (never slept on); on a busy machine GraphiQL's 3.5 MB script
# takes a while to start.
expect.set_options(timeout=20_000)


def chromium_or_skip() -> str:
    """The system Chromium (or PRISM_TEST_CHROMIUM). Missing: fails under CI=true, skips
    (saying how to install it) elsewhere."""
    binary = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium")
    if binary is None:
        message = "chromium is not installed (make test installs it: scripts/chromium.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs Debian's chromium for the browser tests: {message}")
        pytest.skip(message)
    return binary


@asynccontextmanager
async def launched_chromium() -> AsyncIterator[Browser]:
    """The system Chromium, headless, under Playwright (conftest's ``chromium`` fixture)."""
    binary = chromium_or_skip()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=binary,
            headless=True,
            # Containers give /dev/shm little room; Chromium then uses /tmp.
            args=["--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            await browser.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """An ASGI app under uvicorn (as `prism serve` runs it) on a free loopback port, in
    this event loop; yields its origin, ``http://127.0.0.1:<port>``."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, "the server did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@dataclass
class Loopback:
    """Routing of a browser context: requests to 127.0.0.1 go through, any other is aborted
    and recorded in ``refused``."""

    refused: list[str] = field(default_factory=list)

    async def install(self, context: BrowserContext) -> None:
        await context.route("**/*", self._route)
        await context.route_web_socket(re.compile(".*"), self._route_socket)

    @staticmethod
    def allowed(url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname == "127.0.0.1"

    async def _route(self, route: Route) -> None:
        if self.allowed(route.request.url):
            await route.continue_()
            return
        self.refused.append(route.request.url)
        await route.abort("blockedbyclient")

    async def _route_socket(self, socket: WebSocketRoute) -> None:
        if self.allowed(socket.url):
            socket.connect_to_server()
            return
        self.refused.append(socket.url)
        await socket.close(code=1008, reason="loopback only")


# Runs in every page before its own scripts: reports the page's CSP violations to the test.
_CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__prismCspViolation(
    `${event.effectiveDirective} blocked ${event.blockedURI || "inline"}` +
      ` (${event.sourceFile}:${event.lineNumber})`
  );
});
"""


@dataclass
class Violations:
    """The CSP violations the pages of a browser context reported, across navigations:
    their ``securitypolicyviolation`` events, and the console's CSP errors."""

    reported: list[str] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.reported, *self.logged]


async def watch_csp(context: BrowserContext) -> Violations:
    violations = Violations()

    def report(text: str) -> None:
        violations.reported.append(text)

    await context.expose_function("__prismCspViolation", report)
    await context.add_init_script(_CSP_WATCH)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            violations.logged.append(message.text)

    context.on("console", on_console)
    return violations


@dataclass
class PageWatch:
    """What a page reported: console errors and uncaught exceptions."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)


def watch(page: Page) -> PageWatch:
    watched = PageWatch(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.console_errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.exceptions.append(str(error)))
    return watched


@dataclass
class Profile:
    """A fresh browser profile (conftest's ``browser_profile``): its requests may reach
    127.0.0.1 only (``loopback.refused`` lists the others), its CSP violations recorded."""

    context: BrowserContext
    loopback: Loopback
    violations: Violations


@asynccontextmanager
async def loopback_profile(browser: Browser, **options: Any) -> AsyncIterator[Profile]:
    """``options`` go to ``new_context`` (a viewport, a device scale factor, …)."""
    loopback = Loopback()
    context = await browser.new_context(**options)
    try:
        await loopback.install(context)
        violations = await watch_csp(context)
        yield Profile(context, loopback, violations)
    finally:
        await context.close()
