"""The demo's task board (``/tasks/``) in a real headless Chromium against daphne: a change
made in one window, in another, or by server code (as the admin would) shows in every open
board — on a desktop and on a phone."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from project.demo.models import Task
from tests.browser.fixtures import DESKTOP, PHONE, Pages, browser, pages  # noqa: F401
from tests.servers import Server

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def titles(page: Any) -> list[str]:
    return await page.eval_on_selector_all(
        "#tasks .title", "items => items.map(i => i.textContent)"
    )


async def wait_titles(page: Any, expected: list[str]) -> None:
    await page.wait_for_function(
        "(want) => JSON.stringify([...document.querySelectorAll('#tasks .title')]"
        ".map(i => i.textContent)) === JSON.stringify(want)",
        arg=expected,
    )


async def test_board_updates_live_in_every_window(
    daphne_server: Callable[..., Server],
    pages: Pages,  # noqa: F811 (the fixture imported above)
) -> None:
    await Task.objects.acreate(title="Already there")
    server = daphne_server()
    desk = await pages.open(server.http_url + "/tasks/", label="desktop", viewport=DESKTOP)
    phone = await pages.open(server.http_url + "/tasks/", label="phone", viewport=PHONE)
    for page in (desk, phone):
        await page.wait_for_selector("#status.status-open")
        assert await titles(page) == ["Already there"]

    # Added in one window: both show it (the page waits for the event, like every other).
    await desk.fill("#title", "Buy milk")
    await desk.press("#title", "Enter")
    for page in (desk, phone):
        await wait_titles(page, ["Already there", "Buy milk"])

    # Ticked on the phone: done on the desktop.
    await phone.locator("#tasks li", has_text="Buy milk").locator("input").check()
    await desk.wait_for_selector("#tasks li.done:has-text('Buy milk')")
    assert await desk.text_content("#summary") == "1 open · 1 done"

    # Changed by server code, as the admin or a worker would.
    def rename() -> None:
        task = Task.objects.get(title="Already there")
        task.title = "Renamed elsewhere"
        task.save()

    await sync_to_async(rename)()
    for page in (desk, phone):
        await wait_titles(page, ["Renamed elsewhere", "Buy milk"])

    # Deleted on the desktop: gone on the phone.
    await desk.locator("#tasks li", has_text="Buy milk").locator("button.delete").click()
    await wait_titles(phone, ["Renamed elsewhere"])

    # Readable on a phone: nothing wider than the screen.
    width = await phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    shots = os.environ.get("REALTIME_TEST_SCREENSHOTS")
    if shots:
        await desk.screenshot(path=str(Path(shots) / "board-desktop.png"), full_page=True)
        await phone.screenshot(path=str(Path(shots) / "board-phone.png"), full_page=True)


# Keeps every WebSocket the page opens, records the frame types it receives, and while
# ``__hold`` is set hands out sockets that fail at once (the server "unreachable").
SOCKET_SPY = """
const Real = window.WebSocket;
window.__sockets = [];
window.__frames = [];
window.__hold = false;
window.WebSocket = function (url, protocols) {
  if (window.__hold) {
    const fake = { readyState: 3, send() {}, close() {} };
    setTimeout(() => fake.onclose && fake.onclose({ code: 1006 }), 20);
    return fake;
  }
  const ws = new Real(url, protocols);
  ws.addEventListener("message", (m) => window.__frames.push(JSON.parse(m.data).type));
  window.__sockets.push(ws);
  return ws;
};
"""


async def test_board_resyncs_from_a_snapshot(
    daphne_server: Callable[..., Server],
    pages: Pages,  # noqa: F811 (the fixture imported above)
    settings: Any,
) -> None:
    """A page that was away while its history was trimmed is rebuilt from the snapshot."""
    server = daphne_server()
    context = await pages.context()
    await context.add_init_script(SOCKET_SPY)
    page = await pages.open(server.http_url + "/tasks/", context=context)
    await page.wait_for_selector("#status.status-open")
    await page.evaluate("() => { window.__marker = 1; window.__hold = true; }")
    await page.evaluate("() => window.__sockets.at(-1).close()")
    await page.wait_for_selector("#status.status-reconnecting")
    # Behind the page's back: changes, and history trimmed to the last one.
    settings.REALTIME = {**settings.REALTIME, "RETENTION": {"tasks": {"max_events": 1}}}
    for n in range(3):
        await Task.objects.acreate(title=f"t{n}")
    await page.evaluate("() => { window.__hold = false; }")
    await wait_titles(page, ["t0", "t1", "t2"])
    frames = await page.evaluate("() => window.__frames")
    assert frames.count("snapshot") == 1 and frames.count("event") == 0
    assert await page.evaluate("() => window.__marker") == 1  # no reload
    await Task.objects.acreate(title="t3")  # and live again after it
    await wait_titles(page, ["t0", "t1", "t2", "t3"])
