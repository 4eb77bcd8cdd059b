"""The browser client (``realtime/static/realtime/realtime.js``) in a real headless Chromium,
against real daphne processes: the demo pages, reconnection, exact resume across a server
crash, the SSE fallback, presence, the backoff policy, heartbeats, the publish queue and
``batch`` frames.

Pages are served by the daphne processes themselves (static files included); events are
published from this process with ``realtime.apublish``, which shares the test database and
the Redis channel layer with the servers. Any console error in a page fails its test.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

import realtime
from realtime.models import Event
from tests.browser.fixtures import (  # noqa: F401 (fixtures)
    DESKTOP,
    PHONE,
    Pages,
    browser_fixture,
    pages_fixture,
)
from tests.servers import Server, settings_env

pytestmark = pytest.mark.asyncio(loop_scope="session")

ServerFactory = Callable[..., Server]


def start(
    daphne_server: ServerFactory, overrides: dict[str, Any] | None = None, **env: str
) -> Server:
    """A daphne process with ``REALTIME`` ``overrides`` (tests.settings) and extra ``env``."""
    return daphne_server(settings_env(overrides, **env))


@sync_to_async
def signed_in_session(username: str) -> tuple[str, int]:
    """The session cookie of a new signed-in user, and the user's pk."""
    client = Client()
    user = get_user_model().objects.create_user(username, password="unused")
    client.force_login(user)
    return client.cookies["sessionid"].value, user.pk


@sync_to_async
def stored(stream: str) -> list[tuple[int, str, Any]]:
    return list(
        Event.objects.filter(stream__name=stream)
        .order_by("seq")
        .values_list("seq", "event", "data")
    )


async def wait_open(page: Any, transport: str = "websocket", client: str = "demo.rt") -> None:
    await page.wait_for_function(
        f"() => {client}?.state === 'open' && {client}.transport === {transport!r}"
    )


async def chat_seqs(page: Any) -> list[int]:
    return await page.eval_on_selector_all(
        "#messages li[data-seq]", "items => items.map(i => Number(i.dataset.seq))"
    )


async def send_chat(page: Any, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def test_chat_two_pages_exchange_messages(daphne_server: ServerFactory, pages: Pages) -> None:
    server = start(daphne_server, REALTIME_PRESENCE_GRACE="0.3")
    url = server.http_url + "/chat/room1/"
    ada = await pages.open(url, name="Ada")
    bob = await pages.open(url, name="Bob")
    await wait_open(ada)
    await wait_open(bob)

    await send_chat(ada, "hello bob")
    for page in (ada, bob):
        await page.wait_for_selector("#messages li[data-seq='1'] >> text=hello bob")
    await send_chat(bob, "hi ada")
    for page in (ada, bob):
        await page.wait_for_selector("#messages li[data-seq='2'] >> text=hi ada")
    assert await ada.locator("#messages li.own").count() == 1
    assert await ada.locator("#messages li.pending").count() == 0
    await realtime.apublish(
        "public:chat:room1", "message.created", {"author": "server", "text": "from django"}
    )
    for page in (ada, bob):
        await page.wait_for_selector("#messages li[data-seq='3'] >> text=from django")
    assert [seq for seq, _, _ in await stored("public:chat:room1")] == [1, 2, 3]


SCREENSHOTS = Path(os.environ.get("REALTIME_SCREENSHOT_DIR", "/tmp/realtime-screenshots"))


async def assert_fits(page: Any, what: str) -> None:
    """No horizontal scrolling: the layout fits the viewport (a phone's, too)."""
    overflow = await page.evaluate(
        "() => document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"
    )
    assert overflow <= 0, f"{what} is {overflow}px wider than the viewport"


def screenshot_path(name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / f"{name}.png")


async def screenshot(page: Any, name: str) -> None:
    """A full-page PNG in REALTIME_SCREENSHOT_DIR (/tmp/...), to look at; not kept in git."""
    await page.screenshot(path=screenshot_path(name), full_page=True)


async def member_names(page: Any) -> list[str]:
    return sorted(await page.locator("#people .person-name").all_inner_texts())


async def test_chat_presence_and_layout(daphne_server: ServerFactory, pages: Pages) -> None:
    server = start(daphne_server, REALTIME_PRESENCE_GRACE="0.3")
    url = server.http_url + "/chat/presence/"
    ada = await pages.open(url, name="Ada", viewport=PHONE)
    await wait_open(ada)
    await ada.wait_for_function("() => document.querySelectorAll('#people li').length === 1")
    bob = await pages.open(url, name="Bob", viewport=DESKTOP)
    await wait_open(bob)
    for page in (ada, bob):
        await page.wait_for_function("() => document.querySelectorAll('#people li').length === 2")
        assert await member_names(page) == ["Ada", "Bob"]
        assert await page.locator("#online-count").inner_text() == "2"
    assert await ada.locator("#people li:has(.you) .person-name").inner_text() == "Ada"

    # A second tab of Bob's browser is the same member, with two connections.
    bob2 = await pages.open(url, label="Bob's 2nd tab", context=bob.context)
    await wait_open(bob2)
    await ada.wait_for_selector("#people li:has-text('Bob') .tabs >> text=2 tabs")
    await bob2.close()
    await ada.wait_for_function("() => !document.querySelector('#people .tabs')")

    # A new name is a presence update everyone sees.
    await bob.fill("#name", "Robert")
    await ada.wait_for_function(
        """() => [...document.querySelectorAll('#people .person-name')]
                   .some(n => n.textContent === 'Robert')"""
    )
    # Typing shows on the other page (an ephemeral event).
    await bob.type("#text", "so", delay=20)
    await ada.wait_for_selector("#typing >> text=Robert is typing…")
    await send_chat(bob, "a message long enough to wrap on a phone: " + "word " * 30)
    await send_chat(ada, "short one")
    await ada.wait_for_selector("#messages li[data-seq='2']")
    await bob.wait_for_selector("#messages li[data-seq='2']")

    await assert_fits(ada, "the chat page at 390px")
    await assert_fits(bob, "the chat page at 1280px")
    await screenshot(ada, "chat-phone")
    await screenshot(bob, "chat-desktop")

    # Leaving: Bob's page closes; after the grace period Ada sees him go.
    await bob.close()
    await ada.wait_for_function("() => document.querySelectorAll('#people li').length === 1")
    assert await member_names(ada) == ["Ada"]


async def test_cursors_are_shared_between_windows(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    server = start(daphne_server)
    url = server.http_url + "/cursors/board1/"
    ada = await pages.open(url, name="Ada", viewport=DESKTOP)
    bob = await pages.open(url, name="Bob", viewport=PHONE)
    await wait_open(ada)
    await wait_open(bob)
    for page in (ada, bob):
        await page.wait_for_function("() => document.querySelectorAll('#people li').length === 2")

    box = await ada.locator("#board").bounding_box()
    assert box is not None
    await ada.mouse.move(box["x"] + 10, box["y"] + 10)
    await ada.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.6, steps=8)
    label = bob.locator("#board .cursor .cursor-label")
    await label.wait_for()
    assert await label.inner_text() == "Ada"
    # Bob's cursor sits where Ada's pointer is, as a fraction of the board.
    await bob.wait_for_function(
        """() => {
          const c = document.querySelector('#board .cursor');
          return Math.abs(parseFloat(c.style.left) - 25) < 2
              && Math.abs(parseFloat(c.style.top) - 60) < 2;
        }"""
    )
    # Nothing of this is stored: cursor events are ephemeral.
    assert await stored("public:cursors:board1") == []

    bob_box = await bob.locator("#board").bounding_box()
    assert bob_box is not None
    await bob.mouse.move(
        bob_box["x"] + bob_box["width"] * 0.7, bob_box["y"] + bob_box["height"] * 0.3, steps=4
    )
    await ada.locator("#board .cursor-label >> text=Bob").wait_for()
    await ada.mouse.down()
    await ada.mouse.up()
    await bob.locator("#board .ripple").wait_for(state="attached")

    await assert_fits(bob, "the cursors page at 390px")
    await assert_fits(ada, "the cursors page at 1280px")
    await screenshot(bob, "cursors-phone")
    await screenshot(ada, "cursors-desktop")

    # Ada's pointer leaves the board: her cursor goes away on Bob's screen.
    await ada.mouse.move(box["x"] + box["width"] / 2, box["y"] - 40)
    await bob.wait_for_function("() => !document.querySelector('#board .cursor')")


async def test_server_killed_and_restarted_every_event_once_in_order(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    pages.allow_network_errors()
    server = start(daphne_server)
    stream = "public:chat:crash"
    page = await pages.open(server.http_url + "/chat/crash/", name="Ada", viewport=PHONE)
    await wait_open(page)
    await page.evaluate("window.states = []; demo.rt.on('state', (s) => states.push(s)); 0")

    total = 40

    async def publisher() -> None:
        for n in range(1, total + 1):
            await realtime.apublish(
                stream, "message.created", {"author": "server", "text": f"m{n}"}
            )
            await asyncio.sleep(0.05)

    publishing = asyncio.create_task(publisher())
    await asyncio.sleep(0.5)
    server.kill()
    await page.wait_for_function("() => demo.rt.state === 'reconnecting'")
    await send_chat(page, "written while the server was down")
    await page.locator("#messages li.pending time >> text=queued").wait_for()
    await screenshot(page, "chat-reconnecting-phone")
    await asyncio.sleep(0.8)
    restarted = daphne_server(server.env, port=server.port)
    assert restarted.port == server.port
    await publishing
    await page.wait_for_function(
        f"() => document.querySelectorAll('#messages li[data-seq]').length === {total + 1}",
        timeout=15_000,
    )
    assert await chat_seqs(page) == list(range(1, total + 2))
    texts = await page.locator("#messages li[data-seq] .text").all_inner_texts()
    assert [t for t in texts if t.startswith("m")] == [f"m{n}" for n in range(1, total + 1)]
    assert texts.count("written while the server was down") == 1
    assert await page.locator("#messages li.pending").count() == 0
    events = await stored(stream)
    assert [seq for seq, _, _ in events] == list(range(1, total + 2))
    assert sum(data["text"] == "written while the server was down" for _, _, data in events) == 1
    states = [s["state"] for s in await page.evaluate("states")]
    assert "reconnecting" in states and states[-1] == "open", states


async def test_websocket_refused_falls_back_to_sse(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    pages.allow_network_errors()
    # Presence over SSE lives on HTTP heartbeats: with a 2 s timeout, members would leave
    # within the test if those did not work.
    server = start(
        daphne_server,
        {"WEBSOCKET_ENABLED": False},
        REALTIME_HEARTBEAT_INTERVAL="0.5",
        REALTIME_PRESENCE_TIMEOUT="2",
    )
    url = server.http_url + "/chat/fallback/"
    # Ada is signed in: her HTTP publishes need the CSRF token, which the client sends.
    ada_context = await pages.context(name="Ada")
    session, ada_pk = await signed_in_session("ada")
    await ada_context.add_cookies([{"name": "sessionid", "value": session, "url": server.http_url}])
    ada = await pages.open(url, context=ada_context, label="Ada")
    bob = await pages.open(url, name="Bob", viewport=PHONE)
    for page in (ada, bob):
        await wait_open(page, "sse")
        assert await page.locator("#status").inner_text() == "live · SSE fallback"
        await page.wait_for_function("() => document.querySelectorAll('#people li').length === 2")

    await send_chat(ada, "over http")
    await send_chat(bob, "and back")
    for page in (ada, bob):
        await page.wait_for_selector("#messages li[data-seq='2']")
    await realtime.apublish(
        "public:chat:fallback", "message.created", {"author": "server", "text": "pushed"}
    )
    for page in (ada, bob):
        await page.wait_for_selector("#messages li[data-seq='3'] >> text=pushed")
        assert sorted(await page.locator("#messages li[data-seq] .text").all_inner_texts()) == [
            "and back",
            "over http",
            "pushed",
        ]
    await asyncio.sleep(2.5)  # longer than PRESENCE_TIMEOUT: the heartbeats keep both present
    for page in (ada, bob):
        assert await member_names(page) == ["Ada", "Bob"]
        keys = await page.evaluate("[...demo.sub.presence.members.keys()].sort()")
        assert keys[0] == str(ada_pk) and keys[1].startswith("anon:"), keys
        assert await page.evaluate("demo.rt.transport") == "sse"
    assert len(await stored("public:chat:fallback")) == 3
    await screenshot(bob, "chat-fallback-phone")


def delays_follow_policy(states: list[dict[str, Any]], base: int, cap: int) -> list[dict[str, Any]]:
    retries = [s for s in states if s["state"] == "reconnecting"]
    for index, retry in enumerate(retries):
        assert retry["attempt"] == index, retries
        assert 0 <= retry["delay"] <= min(cap, base * 2 ** retry["attempt"]), retry
    return retries


async def test_reconnect_delays_follow_backoff_with_jitter(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    pages.allow_network_errors()
    server = start(daphne_server)
    page = await pages.harness(server)
    base, cap = 100, 800
    await page.evaluate(
        f"start({{transports: ['websocket'], "
        f"backoff: {{base: {base}, cap: {cap}, stableAfter: 1000}}}})"
    )
    await wait_open(page, client="rt")
    server.kill()
    await page.wait_for_function(
        "() => log.states.filter(s => s.state === 'reconnecting').length >= 8", timeout=15_000
    )
    restarted = daphne_server(server.env, port=server.port)
    await wait_open(page, client="rt")
    retries = delays_follow_policy(await page.evaluate("log.states"), base, cap)
    delays = [r["delay"] for r in retries]
    assert len(set(delays)) > 1, f"no jitter: {delays}"
    # The ceiling doubles up to the cap: later delays may be (and in practice are) longer.
    assert max(delays[3:]) > base, delays
    # The time between retries is the delay the client announced (and the attempt it made).
    attempts = await page.evaluate("log.attempts")
    assert [a["reason"] for a in attempts][:2] == ["initial", "retry"]

    # Stable for longer than stableAfter: the next failure starts over from attempt 0.
    await asyncio.sleep(1.3)
    await page.evaluate("log.states = []")
    restarted.kill()
    await page.wait_for_function("() => log.states.some(s => s.state === 'reconnecting')")
    first = (await page.evaluate("log.states.filter(s => s.state === 'reconnecting')"))[0]
    assert first["attempt"] == 0 and 0 <= first["delay"] <= base, first


async def test_no_reconnect_storm_when_a_server_goes_away(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    pages.allow_network_errors()
    server = start(daphne_server)
    page = await pages.harness(server)
    sockets: list[Any] = []

    def route(ws: Any) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    await page.route_web_socket("**/realtime/ws/**", route)
    clients = 12
    await page.evaluate(
        f"for (let i = 0; i < {clients}; i++) start({{transports: ['websocket'], "
        "backoff: {stableAfter: 300}}, 'c' + i)"
    )
    for i in range(clients):
        await wait_open(page, client=f"c{i}")

    async def first_retries() -> list[dict[str, Any]]:
        await page.wait_for_function(
            f"""() => Array.from({{length: {clients}}}, (_, i) => window['c' + i + 'Log'])
                  .every(log => log.states.some(s => s.state === 'reconnecting'))"""
        )
        return await page.evaluate(
            f"""Array.from({{length: {clients}}}, (_, i) => window['c' + i + 'Log'])
                  .map(log => log.states.find(s => s.state === 'reconnecting'))"""
        )

    def spread(retries: list[dict[str, Any]], attempt: int, code: int) -> None:
        base, cap = 500, 30000
        for retry in retries:
            assert (retry["attempt"], retry["code"]) == (attempt, code), retry
            assert 0 <= retry["delay"] <= min(cap, base * 2**attempt), retry
        delays = sorted(r["delay"] for r in retries)
        # Spread out, not synchronised: full jitter on the very first retry.
        assert len(set(delays)) >= clients - 2, delays
        assert delays[-1] - delays[0] >= 150, delays

    # A deploy: the server says "going away" (1001) to everyone at once. The clients spread
    # their first retry over a wider window (attempt 2: up to 2 s).
    await asyncio.gather(*(ws.close(code=1001, reason="deploy") for ws in sockets))
    spread(await first_retries(), attempt=2, code=1001)
    for i in range(clients):
        await wait_open(page, client=f"c{i}")
    await asyncio.sleep(0.5)  # stable: the backoff starts over
    await page.evaluate(f"for (let i = 0; i < {clients}; i++) window['c' + i + 'Log'].states = []")
    # A crash: every connection drops (1006); the first retries spread over [0, 500 ms).
    server.kill()
    spread(await first_retries(), attempt=0, code=1006)
    for i in range(clients):
        await page.evaluate(f"c{i}.close()")


async def test_a_draining_server_spreads_its_clients_reconnects(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    """SIGTERM to ``realtime.serve``: each WebSocket client comes back after the delay its
    1012 close carried, each SSE client after its ``retry:``, not after its own backoff."""
    pages.allow_network_errors()
    spread_ms = 2000
    server = daphne_server(
        settings_env({"DRAIN_SPREAD": spread_ms / 1000, "DRAIN_TIMEOUT": 4.0}), server="realtime"
    )
    page = await pages.harness(server)
    names = {f"ws{i}": "websocket" for i in range(6)} | {f"sse{i}": "sse" for i in range(2)}
    for name, transport in names.items():
        await page.evaluate(f"start({{transports: [{transport!r}]}}, {name!r})")
        await page.evaluate(f"track('public:drain', {{}}, {name!r})")
        await page.wait_for_function(f"() => {name}Log.subscribed.length > 0")

    server.terminate()
    await page.wait_for_function(
        f"""() => {list(names)!r}.every(
              (name) => window[name + 'Log'].states.some(s => s.state === 'reconnecting'))""",
        timeout=10_000,
    )
    delays = []
    for name, transport in names.items():
        states = await page.evaluate(f"{name}Log.states")
        retry = next(s for s in states if s["state"] == "reconnecting")
        assert retry["code"] == 1012 and retry["attempt"] == 0, retry
        if transport == "websocket":  # the reason carries the server's delay
            assert retry["delay"] == json.loads(retry["reason"])["retry"], retry
        assert 0 <= retry["delay"] <= spread_ms, retry
        delays.append(retry["delay"])
    assert len(set(delays)) >= len(names) - 1, f"not spread: {delays}"
    for name in names:
        await page.evaluate(f"{name}.close()")


async def silence_first_websocket(page: Any) -> dict[str, Any]:
    """Route the page's WebSockets through Playwright; the first one stops delivering
    server frames once ``control["silent"]`` is set (a half-dead connection)."""
    control: dict[str, Any] = {"silent": False, "count": 0}

    def route(ws: Any) -> None:
        control["count"] += 1
        number = control["count"]
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            if not (number == 1 and control["silent"]):
                ws.send(message)

        server.on_message(from_server)

    await page.route_web_socket("**/realtime/ws/**", route)
    return control


async def test_silent_connection_is_dead_and_resumed(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    server = start(daphne_server, REALTIME_HEARTBEAT_INTERVAL="0.5")
    page = await pages.harness(server)
    control = await silence_first_websocket(page)
    stream = "public:silent"
    await page.evaluate(f"start({{transports: ['websocket']}}); track({stream!r}, {{since: 0}})")
    await wait_open(page, client="rt")
    await page.wait_for_function("() => log.subscribed.length === 1")
    for n in (1, 2):
        await realtime.apublish(stream, "tick", n)
    await page.wait_for_function(f"() => log.events[{stream!r}].length === 2")
    control["silent"] = True
    for n in (3, 4, 5):
        await realtime.apublish(stream, "tick", n)
    # No frame for twice 0.5 s: the client drops the connection and resumes on a new one.
    await page.wait_for_function(f"() => log.events[{stream!r}].length === 5", timeout=8_000)
    events = await page.evaluate(f"log.events[{stream!r}]")
    assert [(e["seq"], e["data"]) for e in events] == [(n, n) for n in range(1, 6)]
    assert control["count"] == 2
    retry = next(s for s in await page.evaluate("log.states") if s["state"] == "reconnecting")
    assert retry["reason"] == "silent" and retry["code"] == 4000, retry
    assert await page.evaluate("rt._connection.ticker.kind") == "worker"


async def test_visible_tab_with_dead_socket_reconnects_at_once(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    server = start(daphne_server, REALTIME_HEARTBEAT_INTERVAL="1")
    page = await pages.harness(server)
    control = await silence_first_websocket(page)
    await page.evaluate("start({transports: ['websocket']})")
    await wait_open(page, client="rt")
    # A hidden tab whose timers did not run: the heartbeat check never fired.
    await page.evaluate("rt._connection.ticker.stop()")
    control["silent"] = True
    await asyncio.sleep(2.3)  # more than twice the heartbeat interval
    assert await page.evaluate("rt.state") == "open"  # nobody noticed yet
    shown = await page.evaluate(
        """() => {
          document.dispatchEvent(new Event('visibilitychange'));
          return performance.now();
        }"""
    )
    await page.wait_for_function("() => log.attempts.some(a => a.reason === 'visible')")
    attempt = next(a for a in await page.evaluate("log.attempts") if a["reason"] == "visible")
    assert attempt["t"] - shown < 100, "the reconnect waited for a timer"
    await wait_open(page, client="rt")
    assert control["count"] == 2


async def test_online_event_retries_at_once(daphne_server: ServerFactory, pages: Pages) -> None:
    pages.allow_network_errors()
    server = start(daphne_server)
    page = await pages.harness(server)
    # A long backoff, pinned: without the online event the retry would wait 54 s.
    await page.evaluate(
        "start({transports: ['websocket'], backoff: {base: 60000, cap: 60000}, random: 0.9})"
    )
    await wait_open(page, client="rt")
    server.kill()
    await page.wait_for_function("() => rt.state === 'reconnecting'")
    retry = (await page.evaluate("log.states"))[-1]
    assert retry["delay"] == 54000, retry
    daphne_server(server.env, port=server.port)
    await page.evaluate("dispatchEvent(new Event('online'))")
    await wait_open(page, client="rt")
    assert (await page.evaluate("log.attempts"))[-1]["reason"] == "online"


async def test_publishes_queue_while_disconnected(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    pages.allow_network_errors()
    server = start(daphne_server)
    stream = "public:chat:queue"
    page = await pages.harness(server)
    await page.evaluate(
        "start({transports: ['websocket'], maxQueue: 3, backoff: {base: 100, cap: 300}});"
        f"track({stream!r}, {{since: 0}})"
    )
    await wait_open(page, client="rt")
    server.kill()
    await page.wait_for_function("() => rt.state === 'reconnecting'")
    outcome = await page.evaluate(
        f"""async () => {{
          const settle = (p) => p.then((v) => ({{ok: v}}), (e) => ({{error: e.code}}));
          const publish = (n) => rt.publish({stream!r}, "message.created", {{n}});
          window.queued = [1, 2, 3].map((n) => settle(publish(n)));
          const full = await settle(publish(4));
          const ephemeral = await settle(
            rt.publish({stream!r}, "cursor", {{}}, {{ephemeral: true}}));
          return {{full, ephemeral}};
        }}"""
    )
    assert outcome == {"full": {"error": "queue_full"}, "ephemeral": {"error": "disconnected"}}
    daphne_server(server.env, port=server.port)
    results = await page.evaluate("Promise.all(window.queued)")
    assert [r["ok"]["seq"] for r in results] == [1, 2, 3]
    assert not any(r["ok"]["duplicate"] for r in results)
    await page.wait_for_function(f"() => log.events[{stream!r}].length === 3")
    events = await page.evaluate(f"log.events[{stream!r}]")
    assert [e["data"]["n"] for e in events] == [1, 2, 3]
    assert [data["n"] for _, _, data in await stored(stream)] == [1, 2, 3]


async def test_publish_over_max_frame_is_refused_by_the_client(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    """Sent, it would close the connection (1009 with realtime.serve) and be sent again after
    every reconnect: the client refuses it with frame_too_large and stays connected."""
    server = start(daphne_server, {"MAX_FRAME_SIZE": 2048})
    stream = "public:chat:big"
    page = await pages.harness(server)
    await page.evaluate(f"start({{transports: ['websocket']}}); track({stream!r}, {{since: 0}})")
    await wait_open(page, client="rt")
    assert await page.evaluate("rt.maxFrame") == 2048
    connection = await page.evaluate("rt.connectionId")
    outcome = await page.evaluate(
        f"""async () => {{
          const settle = (p) => p.then((v) => ({{ok: v.seq}}), (e) => ({{error: e.code}}));
          const big = await settle(rt.publish({stream!r}, "m", {{text: "x".repeat(3000)}}));
          const small = await settle(rt.publish({stream!r}, "m", {{text: "fits"}}));
          return {{big, small}};
        }}"""
    )
    assert outcome == {"big": {"error": "frame_too_large"}, "small": {"ok": 1}}
    assert await page.evaluate("rt.connectionId") == connection
    assert [data["text"] for _, _, data in await stored(stream)] == ["fits"]


async def test_publish_resent_after_lost_ack_is_stored_once(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    server = start(daphne_server)
    stream = "public:chat:idempotent"
    page = await pages.harness(server)
    routed: dict[str, Any] = {"count": 0, "dropped": None}

    def route(ws: Any) -> None:
        routed["count"] += 1
        number = routed["count"]
        upstream = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            # The ack may share a `batch` frame with the event it acknowledges (the hub had
            # queued the event before the ack was written): then that message is lost whole.
            inner = frame["frames"] if frame.get("type") == "batch" else [frame]
            acks = [f for f in inner if f.get("type") == "ack"]
            if number == 1 and acks and routed["dropped"] is None:
                # The event was stored; the connection dies before its ack arrives.
                routed["dropped"] = acks[0]
                routed["closing"] = asyncio.ensure_future(ws.close(code=4000, reason="lost"))
                return
            ws.send(message)

        upstream.on_message(from_server)

    await page.route_web_socket("**/realtime/ws/**", route)
    await page.evaluate(
        "start({transports: ['websocket'], backoff: {base: 100, cap: 200}});"
        f"track({stream!r}, {{since: 0}})"
    )
    await wait_open(page, client="rt")
    await page.wait_for_function("() => log.subscribed.length === 1")
    result = await page.evaluate(f"rt.publish({stream!r}, 'message.created', {{text: 'once'}})")
    assert routed["dropped"] == {"type": "ack", "id": routed["dropped"]["id"], "seq": 1}
    assert result == {"stream": stream, "seq": 1, "duplicate": True}
    assert routed["count"] == 2
    assert [seq for seq, _, _ in await stored(stream)] == [1]
    await page.wait_for_function(f"() => log.events[{stream!r}].length >= 1")
    await asyncio.sleep(0.3)
    assert [e["seq"] for e in await page.evaluate(f"log.events[{stream!r}]")] == [1]


async def test_gap_duplicate_and_unrecoverable_stream(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    server = start(daphne_server)
    stream = "public:gap"
    for n in (1, 2, 3):
        await realtime.apublish(stream, "tick", n)
    page = await pages.harness(server)
    await page.evaluate(f"start(); track({stream!r}, {{since: 0}})")
    await page.wait_for_function(f"() => log.events[{stream!r}].length === 3")

    fake = {"type": "event", "stream": stream, "event": "tick", "ts": "2026-01-01T00:00:00.000Z"}
    # A repeated event is dropped.
    await page.evaluate("(f) => rt._handleFrame(f)", {**fake, "seq": 2, "data": "again"})
    assert await page.evaluate(f"rt.subscription({stream!r}).duplicates") == 1
    # An event that skips a seq is not delivered: the client resubscribes from seq 3.
    await page.evaluate("(f) => rt._handleFrame(f)", {**fake, "seq": 5, "data": "skipped"})
    assert await page.evaluate("log.gaps") == [{"stream": stream, "expected": 4, "got": 5}]
    await page.wait_for_function("() => log.subscribed.length === 2")
    assert (await page.evaluate("log.subscribed"))[1]["recovered"] is True
    for n in (4, 5):
        await realtime.apublish(stream, "tick", n)
    await page.wait_for_function(f"() => log.events[{stream!r}].length === 5")
    events = await page.evaluate(f"log.events[{stream!r}]")
    assert [(e["seq"], e["data"]) for e in events] == [(n, n) for n in range(1, 6)]

    # The stream's history is reset: the application is told to drop what it built.
    epoch = (await page.evaluate("log.subscribed"))[0]["epoch"]
    await realtime.areset(stream)
    await page.wait_for_function("() => log.resets.length === 1")
    reset = (await page.evaluate("log.resets"))[0]
    assert reset["recovered"] is False and reset["epoch"] != epoch
    await realtime.apublish(stream, "tick", "new")
    await page.wait_for_function(f"() => log.events[{stream!r}].length === 6")
    last = (await page.evaluate(f"log.events[{stream!r}]"))[-1]
    assert (last["seq"], last["data"]) == (1, "new")


async def test_sse_fallback_upgrades_to_websocket_when_it_works_again(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    server = start(daphne_server)
    stream = "public:chat:upgrade"
    page = await pages.harness(server)
    control = {"blocked": True, "refused": 0}

    async def route(ws: Any) -> None:
        if control["blocked"]:  # a proxy that breaks the upgrade
            control["refused"] += 1
            await ws.close(code=1011, reason="blocked")
        else:
            ws.connect_to_server()

    await page.route_web_socket("**/realtime/ws/**", route)
    await page.evaluate(
        "start({fallbackAfter: 1, backoff: {base: 50, cap: 100}, upgrade: {after: 400}});"
        f"track({stream!r}, {{since: 0}})"
    )
    await wait_open(page, "sse", client="rt")
    await realtime.apublish(stream, "tick", 1)
    await page.wait_for_function(f"() => log.events[{stream!r}].length === 1")
    published = await page.evaluate(f"rt.publish({stream!r}, 'tick', 2)")
    assert published == {"stream": stream, "seq": 2, "duplicate": False}  # over HTTP
    # On SSE, the client keeps trying WebSocket (and is refused, here).
    async with asyncio.timeout(5):
        while control["refused"] < 2:
            await asyncio.sleep(0.05)
    assert await page.evaluate("rt.transport") == "sse"
    # WebSocket works again: the next try moves the client over, without losing a step.
    control["blocked"] = False
    await wait_open(page, "websocket", client="rt")
    await realtime.apublish(stream, "tick", 3)
    published = await page.evaluate(f"rt.publish({stream!r}, 'tick', 4)")
    assert published["seq"] == 4
    await page.wait_for_function(f"() => log.events[{stream!r}].length === 4")
    events = await page.evaluate(f"log.events[{stream!r}]")
    assert [(e["seq"], e["data"]) for e in events] == [(n, n) for n in range(1, 5)]
    transports = [s["transport"] for s in await page.evaluate("log.states") if s["state"] == "open"]
    assert transports == ["sse", "websocket"], transports


# Records, in the page, what the client's WebSocket receives and sends: per message from
# the server, how many frames it carried (a batch's frames, else 1) and whether it was a
# batch; per `received` sent, its count.
WIRE_TAP_JS = """() => {
  window.wire = { messages: [], received: [] };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", ({ data }) => {
        const frame = JSON.parse(data);
        const batch = frame.type === "batch";
        wire.messages.push({ batch, frames: batch ? frame.frames.length : 1, url: this.url });
      });
    }
    send(data) {
      const frame = JSON.parse(data);
      if (frame.type === "received") wire.received.push(frame.count);
      super.send(data);
    }
  };
  return true;
}"""


async def test_batched_burst_arrives_once_in_order_and_keeps_a_small_window_open(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    # A window of 50 frames for a burst of 500 events, on a stream whose slow consumers are
    # disconnected (4409): only prompt acknowledgements that count every frame inside the
    # batches keep the connection open.
    server = start(
        daphne_server,
        {
            "OUTBOX_WINDOW": {"messages": 50, "bytes": 1_000_000},
            "SLOW_CONSUMERS": {"*": "disconnect"},
        },
    )
    stream = "public:batch-burst"
    page = await pages.harness(server)
    await page.evaluate(WIRE_TAP_JS)
    await page.evaluate(f"start({{transports: ['websocket']}}); track({stream!r})")
    await wait_open(page, client="rt")
    await page.wait_for_function("() => log.subscribed.length === 1")
    # 50 times 10 events, each ten sent as one channel-layer message, so each reaches the
    # client as (part of) a batch frame. Paced: frames queued for a write count toward the
    # window at once, so 50 events within one FLUSH_INTERVAL would fill it whatever the
    # client does.
    for chunk in range(50):
        await realtime.apublish_many(
            stream, [("tick", {"n": n}) for n in range(chunk * 10, chunk * 10 + 10)]
        )
        await asyncio.sleep(0.02)
    await page.wait_for_function(
        f"() => log.events[{stream!r}].length >= 500"
        " || log.states.some(s => s.state === 'reconnecting')",
        timeout=15_000,
    )
    await asyncio.sleep(0.2)  # anything repeated would be here by now
    # One connection from start to end: never cut as a slow consumer (4409).
    states = await page.evaluate("log.states")
    assert [s["state"] for s in states if s["state"] != "connecting"] == ["open"], states
    events = await page.evaluate(f"log.events[{stream!r}].map(e => [e.seq, e.data.n])")
    assert events == [[n + 1, n] for n in range(500)]

    wire = await page.evaluate("wire")
    assert all("batch=1" in m["url"] for m in wire["messages"]), wire["messages"][:1]
    batches = [m for m in wire["messages"] if m["batch"]]
    assert batches, "no batch frame arrived"
    assert len(wire["messages"]) < 500, len(wire["messages"])
    # The client counts frames, not messages: what it counted is what arrived, and it
    # acknowledged as it went, at most once per message.
    frames = sum(m["frames"] for m in wire["messages"])
    assert await page.evaluate("rt._connection.received") == frames
    acks = wire["received"]
    assert acks == sorted(acks) and acks[-1] >= frames - 50, (acks, frames)
    assert len(acks) <= len(wire["messages"]), "more than one acknowledgement per message"
    assert "is slow" not in server.log()


async def test_any_frame_may_come_in_a_batch_even_the_welcome(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    server = start(daphne_server)
    stream = "public:batch-of-one"
    page = await pages.harness(server)
    relayed = {"frames": 0}

    def route(ws: Any) -> None:
        upstream = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            # Every message as a batch, welcome included (a batch of one is legal).
            frame = json.loads(message)
            frames = frame["frames"] if frame["type"] == "batch" else [frame]
            relayed["frames"] += len(frames)
            ws.send(json.dumps({"type": "batch", "frames": frames}))

        upstream.on_message(from_server)

    await page.route_web_socket("**/realtime/ws/**", route)
    await page.evaluate(f"start({{transports: ['websocket']}}); track({stream!r})")
    await wait_open(page, client="rt")
    await page.wait_for_function("() => log.subscribed.length === 1")
    for n in range(5):
        await realtime.apublish(stream, "tick", n)
    await page.wait_for_function(f"() => log.events[{stream!r}].length === 5")
    events = await page.evaluate(f"log.events[{stream!r}].map(e => [e.seq, e.data])")
    assert events == [[n + 1, n] for n in range(5)]
    assert await page.evaluate("rt._connection.received") == relayed["frames"]
    assert await page.evaluate("rt.connectionId")  # from the welcome inside a batch
