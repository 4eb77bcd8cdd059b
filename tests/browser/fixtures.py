"""A headless Chromium for the whole session, and pages that fail the test on console errors.

Debian's ``chromium`` (``/usr/bin/chromium``) driven by Playwright for Python; Playwright's own
browser download does not work here, and ``make test`` installs both (``scripts/services.sh``
installs the Debian package). A missing browser fails the tests, never skips them.

Import the fixtures into a test module::

    from tests.browser.fixtures import browser_fixture, pages_fixture  # noqa: F401
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.servers import Server

CHROMIUM = Path(os.environ.get("REALTIME_TEST_CHROMIUM", "/usr/bin/chromium"))
# As on every machine here: no network beyond loopback, so nothing in the background.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}

# What Chromium itself logs as console errors when a server is down or refuses WebSocket;
# tests that cause that on purpose allow these, and only these.
NETWORK_ERRORS = (
    r"^WebSocket connection to '.*' failed",
    r"^Failed to load resource: net::ERR_",
    r"^Failed to load resource: the server responded with a status of 403",
    # A draining server's answer to a new connection (an SSE client reconnecting to it).
    r"^Failed to load resource: the server responded with a status of 503",
)

# The client driven directly, in a document at the server's origin: the client module itself
# (served as text/javascript, so the page shows its source and runs nothing). A document
# that Playwright makes up (route.fulfill) will not do: it has no network address, so
# Chromium's local network access checks block its connections to 127.0.0.1.
HARNESS_PATH = "/static/realtime/realtime.js"
HARNESS_JS = """async () => {
  const realtime = await import("/static/realtime/realtime.js");
  window.realtime = realtime;
  // start(options, name): a client recording its states, attempts and errors in window.log
  // (window[name + "Log"] for other names); `random: 0.5` pins the jitter.
  window.start = (options = {}, name = "rt") => {
    if (typeof options.random === "number") {
      const value = options.random;
      options = { ...options, random: () => value };
    }
    const log = { states: [], attempts: [], errors: [], events: {}, subscribed: [], resets: [],
                  gaps: [], snapshots: [] };
    const rt = realtime.connect(options);
    rt.on("state", (s) => log.states.push({ ...s, t: performance.now() }));
    rt.on("attempt", (a) => log.attempts.push({ ...a, t: performance.now() }));
    rt.on("error", (e) => log.errors.push({ code: e.code, message: e.message }));
    window[name] = rt;
    window[name + "Log"] = log;
    if (name === "rt") window.log = log;
    return true;
  };
  // track(stream, options, name): subscribe and record every event and lifecycle signal.
  window.track = (stream, options = {}, name = "rt") => {
    const log = window[name + "Log"];
    const sub = window[name].subscribe(stream, options);
    log.events[stream] = [];
    sub.on("*", (e) => log.events[stream].push(e));
    sub.on("realtime.subscribed", (i) => log.subscribed.push(i));
    sub.on("realtime.reset", (i) => log.resets.push(i));
    sub.on("realtime.gap", (g) => log.gaps.push(g));
    sub.on("realtime.snapshot", (s) => log.snapshots.push(s));
    return true;
  };
}"""


class ConsoleGuard:
    """Collects console errors and uncaught exceptions of the pages it watches."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, patterns: Iterable[str]) -> None:
        self.allowed.extend(re.compile(p) for p in patterns)

    def watch(self, page: Any, label: str) -> None:
        def on_console(message: Any) -> None:
            if message.type == "error" and not any(p.search(message.text) for p in self.allowed):
                self.errors.append(f"[{label}] console.error: {message.text}")

        def on_error(error: Any) -> None:
            self.errors.append(f"[{label}] uncaught: {error}")

        page.on("console", on_console)
        page.on("pageerror", on_error)

    def check(self) -> None:
        assert not self.errors, "The browser reported errors:\n" + "\n".join(self.errors)


class Pages:
    """Pages for one test, each in its own browser context (its own storage: a different
    "browser" for presence), closed after the test; any console error fails the test."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.guard = ConsoleGuard()
        self.contexts: list[Any] = []

    def allow_network_errors(self) -> None:
        """The test stops servers or refuses WebSocket on purpose: Chromium logs that."""
        self.guard.allow(NETWORK_ERRORS)

    async def context(self, viewport: dict[str, int] | None = None, name: str | None = None) -> Any:
        context = await self.browser.new_context(viewport=viewport or DESKTOP)
        context.set_default_timeout(10_000)
        if name is not None:
            await context.add_init_script(f"localStorage.setItem('realtime-demo:name', {name!r});")
        self.contexts.append(context)
        return context

    async def open(
        self,
        url: str,
        *,
        label: str | None = None,
        viewport: dict[str, int] | None = None,
        name: str | None = None,
        context: Any = None,
    ) -> Any:
        """A new page (in a new context unless one is given) at ``url``."""
        context = context or await self.context(viewport, name)
        page = await context.new_page()
        self.guard.watch(page, label or name or url)
        await page.goto(url)
        return page

    async def harness(self, server: Server, *, label: str = "harness", context: Any = None) -> Any:
        """A page at ``server``'s origin with ``start()`` and ``track()`` (see HARNESS_JS)."""
        context = context or await self.context()
        # The server has no favicon; Chromium would log the 404 as an error.
        await context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        page = await context.new_page()
        self.guard.watch(page, label)
        await page.goto(server.http_url + HARNESS_PATH)
        await page.evaluate(HARNESS_JS)
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()
        self.contexts.clear()


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing. The browser tests need Debian's chromium: run `make test`, "
            "which installs it (scripts/services.sh), or `apt-get install -y chromium`.",
            pytrace=False,
        )
    if importlib.util.find_spec("playwright") is None:
        pytest.fail(
            "The Python package playwright is missing: run `make test` (it installs the "
            "test extra), or `.venv/bin/pip install -e '.[test]'`.",
            pytrace=False,
        )


@pytest_asyncio.fixture(name="browser", scope="session", loop_scope="session")
async def browser_fixture() -> AsyncIterator[Any]:
    """Headless Debian Chromium for the whole session."""
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(name="pages", loop_scope="session")
async def pages_fixture(browser: Any) -> AsyncIterator[Pages]:
    """Pages of one test; the test fails if any of them logged an error."""
    opened = Pages(browser)
    yield opened
    await opened.close()
    opened.guard.check()


# The same fixtures under their own names, for ``from tests.browser.fixtures import browser,
# pages`` (pytest registers them by the fixture name either way).
browser = browser_fixture
pages = pages_fixture
