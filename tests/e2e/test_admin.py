"""The admin: who may see it, what it shows, the stream filter on both databases, the
disconnect action across server processes, the dashboard from live servers, and the
live-connections list updating itself in a real browser."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

import realtime
from realtime.models import (
    Connection,
    Event,
    Presence,
    PresenceMember,
    PresenceSession,
    Server,
    Stream,
    UserStatus,
)
from tests.browser.fixtures import (  # noqa: F401 (fixtures)
    DESKTOP,
    Pages,
    browser_fixture,
    pages_fixture,
)
from tests.servers import Server as Daphne
from tests.servers import WSClient, open_sse, settings_env

User = get_user_model()
ServerFactory = Callable[..., Daphne]
ADMIN = "/admin/realtime"
CHANGELISTS = [
    "connection",
    "event",
    "stream",
    "server",
    "presencemember",
    "presence",
    "presencesession",
    "userstatus",
]


def start(daphne_server: ServerFactory, **overrides: Any) -> Daphne:
    return daphne_server(settings_env(overrides))


def login(user: Any) -> tuple[Client, str]:
    client = Client()
    client.force_login(user)
    return client, client.cookies["sessionid"].value


def sample_rows() -> dict[str, Any]:
    """One of everything, as a running deployment would have."""
    now = timezone.now()
    ada = User.objects.create_user("ada", password="x")
    bob = User.objects.create_user("bob", password="x")
    live = Server.objects.create(
        id="a" * 32, channel="c1", hostname="web1", pid=101, expires_at=now + timedelta(seconds=20)
    )
    other = Server.objects.create(
        id="b" * 32, channel="c2", hostname="web2", pid=202, expires_at=now + timedelta(seconds=20)
    )
    conns = {
        "ada-ws": Connection.objects.create(
            id="1" * 32,
            server=live,
            user=ada,
            transport="websocket",
            remote_addr="10.0.0.1",
            user_agent="Firefox",
            streams=["public:a", "chat:1"],
        ),
        "ada-sse": Connection.objects.create(
            id="2" * 32,
            server=other,
            user=ada,
            transport="sse",
            remote_addr="10.0.0.2",
            streams=["public:A"],
        ),
        "anon": Connection.objects.create(
            id="3" * 32,
            server=live,
            transport="websocket",
            remote_addr="192.168.1.9",
            streams=["public:ab", "public:a_b"],
        ),
        "bob": Connection.objects.create(
            id="4" * 32,
            server=other,
            user=bob,
            transport="websocket",
            remote_addr="10.0.0.3",
            streams=[],
        ),
    }
    realtime.publish("public:a", "t.e", {"n": 1})
    member = PresenceMember.objects.create(stream="chat:1", key=str(ada.pk), user=ada)
    Presence.objects.create(member=member, server=live, connection="1" * 32, ref="r1")
    PresenceSession.objects.create(stream="chat:1", key=str(ada.pk), user=ada)
    UserStatus.objects.create(user=ada, online=True)
    return {"ada": ada, "bob": bob, "conns": conns}


def listed(response: Any) -> set[str]:
    """Connection ids on a changelist page."""
    return set(
        re.findall(r'name="_selected_action" value="([0-9a-f]+)"', response.content.decode())
    )


# --- who may see it --------------------------------------------------------------------------
def admin_urls(rows: dict[str, Any]) -> list[str]:
    event = Event.objects.first()
    assert event is not None
    return [
        f"{ADMIN}/",
        *[f"{ADMIN}/{name}/" for name in CHANGELISTS],
        f"{ADMIN}/connection/{'1' * 32}/change/",
        f"{ADMIN}/event/{event.pk}/change/",
        f"{ADMIN}/stream/{Stream.objects.get(name='public:a').pk}/change/",
        f"{ADMIN}/server/{'a' * 32}/change/",
        f"{ADMIN}/presencemember/{PresenceMember.objects.get().pk}/change/",
        f"{ADMIN}/connection/dashboard/",
        f"{ADMIN}/connection/dashboard/data/",
    ]


@pytest.mark.django_db
def test_every_page_renders_for_staff() -> None:
    rows = sample_rows()
    admin = User.objects.create_superuser("root", password="x")
    client, _ = login(admin)
    for url in admin_urls(rows):
        response = client.get(url)
        assert response.status_code == 200, (url, response.content[:500])
    page = client.get(f"{ADMIN}/connection/").content.decode()
    assert "Live connections" in page
    assert listed(client.get(f"{ADMIN}/connection/")) == {"1" * 32, "2" * 32, "3" * 32, "4" * 32}
    for text in ("web1:101", "10.0.0.1", "Firefox", "public:a", "anonymous", "Disconnect selected"):
        assert text in page, text
    assert "realtime/admin/connections.js" in page
    assert "Dashboard" in client.get(f"{ADMIN}/").content.decode()
    dashboard = client.get(f"{ADMIN}/connection/dashboard/").content.decode()
    for text in ("Realtime dashboard", "web1:101", "web2:202", "public:a", "0 of 2 servers"):
        assert text in dashboard, text
    data = client.get(f"{ADMIN}/connection/dashboard/data/").json()
    assert data["expected"] == 2 and data["reporting"] == 0
    assert data["totals"]["connections"] == 4
    assert [s["name"] for s in data["streams"]] == ["public:a"]


@pytest.mark.django_db
def test_pages_are_refused_to_everyone_else() -> None:
    rows = sample_rows()
    urls = admin_urls(rows)
    # Anonymous and signed-in non-staff users are sent to the admin's login page.
    anonymous = Client()
    member, _ = login(User.objects.create_user("member", password="x"))
    for client in (anonymous, member):
        for url in urls:
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url
    # Staff without permissions: 403 (the app index says there is nothing to see).
    staff, _ = login(User.objects.create_user("staff", password="x", is_staff=True))
    for url in urls:
        assert staff.get(url).status_code in (403, 404), url


@pytest.mark.django_db
def test_view_permission_shows_the_list_without_the_disconnect_action() -> None:
    sample_rows()
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connection"))
    client, _ = login(viewer)
    page = client.get(f"{ADMIN}/connection/")
    assert page.status_code == 200
    assert "Disconnect selected" not in page.content.decode()
    assert client.get(f"{ADMIN}/connection/dashboard/").status_code == 200
    response = client.post(
        f"{ADMIN}/connection/",
        {"action": "disconnect", "_selected_action": ["1" * 32], "post": "yes", "index": 0},
    )
    assert not LogEntry.objects.exists()
    assert response.status_code in (200, 302)


@pytest.mark.django_db
def test_everything_is_read_only() -> None:
    rows = sample_rows()
    client, _ = login(User.objects.create_superuser("root", password="x"))
    for name in CHANGELISTS:
        assert client.get(f"{ADMIN}/{name}/add/").status_code == 403, name
    conn = rows["conns"]["ada-ws"]
    assert client.get(f"{ADMIN}/connection/{conn.pk}/delete/").status_code == 403
    response = client.post(f"{ADMIN}/connection/{conn.pk}/change/", {"remote_addr": "6.6.6.6"})
    assert response.status_code == 403
    assert Connection.objects.get(pk=conn.pk).remote_addr == "10.0.0.1"
    assert "delete_selected" not in client.get(f"{ADMIN}/connection/").content.decode()


# --- filters and search (on SQLite and PostgreSQL) ------------------------------------------
@pytest.mark.django_db
def test_connection_filters_and_search() -> None:
    rows = sample_rows()
    client, _ = login(User.objects.create_superuser("root", password="x"))
    c = {name: conn.pk for name, conn in rows["conns"].items()}

    def ids(query: str) -> set[str]:
        response = client.get(f"{ADMIN}/connection/?{query}")
        assert response.status_code == 200, response.content[:300]
        return listed(response)

    # Exact stream names: not "public:A" (case), "public:ab" or "public:a_b" (LIKE's _).
    assert ids("stream=public:a") == {c["ada-ws"]}
    assert ids("stream=public:A") == {c["ada-sse"]}
    assert ids("stream=public:a_b") == {c["anon"]}
    assert ids("stream=chat:1") == {c["ada-ws"]}
    assert ids("stream=nowhere") == set()
    assert ids("transport__exact=sse") == {c["ada-sse"]}
    assert ids("server__id__exact=" + "b" * 32) == {c["ada-sse"], c["bob"]}
    assert ids("user=anonymous") == {c["anon"]}
    assert ids("user=signed-in") == {c["ada-ws"], c["ada-sse"], c["bob"]}
    assert ids(f"user={rows['bob'].pk}") == {c["bob"]}
    assert ids("q=ada") == {c["ada-ws"], c["ada-sse"]}
    assert ids("q=192.168") == {c["anon"]}
    assert ids("stream=public:a&transport__exact=sse") == set()
    # The sidebar offers the streams and users that have connections.
    page = client.get(f"{ADMIN}/connection/").content.decode()
    for choice in ("public:a (1)", "public:A (1)", "ada (2)", "bob (1)", "web2:202"):
        assert choice in page, choice
    # A user that is not a number is a bad lookup, not a crash.
    assert client.get(f"{ADMIN}/connection/?user=nope").status_code in (200, 302)


@pytest.mark.django_db
def test_event_history_is_filtered_by_stream_and_date() -> None:
    for n in range(3):
        realtime.publish("public:x", "t.e", {"n": n})
    realtime.publish("public:y", "t.f", None)
    client, _ = login(User.objects.create_superuser("root", password="x"))
    page = client.get(f"{ADMIN}/event/?stream=public:x").content.decode()
    assert page.count("t.e") >= 3 and "t.f" not in page
    today = timezone.now()
    url = f"{ADMIN}/event/?ts__year={today.year}&ts__month={today.month}&ts__day={today.day}"
    assert client.get(url).status_code == 200
    assert "t.f" in client.get(f"{ADMIN}/event/?q=t.f").content.decode()


# --- disconnecting, across processes -----------------------------------------------------------
async def test_disconnect_action_closes_a_connection_held_by_another_server(
    daphne_server: ServerFactory,
) -> None:
    a, b = start(daphne_server), start(daphne_server)

    def make_admin() -> tuple[Any, str]:
        admin = User.objects.create_superuser("root", password="x")
        return admin, login(admin)[1]

    admin, session = await sync_to_async(make_admin)()
    async with WSClient(b.ws_url + "/realtime/ws/") as ws:
        welcome = await ws.recv_until(lambda f: f["type"] == "welcome")
        conn_id = welcome["connection_id"]
        async with httpx.AsyncClient(base_url=a.http_url, cookies={"sessionid": session}) as http:
            page = await http.get(f"{ADMIN}/connection/")
            assert conn_id in page.text
            csrf = http.cookies["csrftoken"]
            form = {"action": "disconnect", "_selected_action": conn_id, "index": "0"}
            headers = {"X-CSRFToken": csrf}
            confirm = await http.post(f"{ADMIN}/connection/", data=form, headers=headers)
            assert confirm.status_code == 200
            assert "Disconnect 1 connection?" in confirm.text
            reason = "Maintenance: please come back in five minutes."
            done = await http.post(
                f"{ADMIN}/connection/",
                data={
                    "action": "disconnect",
                    "_selected_action": conn_id,
                    "post": "yes",
                    "reason": reason,
                },
                headers=headers,
            )
            assert done.status_code == 302, done.text[:500]
        error = await ws.recv_until(lambda f: f["type"] == "error")
        assert (error["code"], error["message"]) == ("revoked", reason)
        assert await ws.wait_closed() == 4401

    entry = await sync_to_async(LogEntry.objects.get)()
    assert (entry.object_id, entry.action_flag, entry.user_id) == (conn_id, CHANGE, admin.pk)
    assert entry.change_message == f"Disconnected: {reason}"


# --- the dashboard, from live servers -----------------------------------------------------------
async def test_dashboard_shows_every_live_server(daphne_server: ServerFactory) -> None:
    a, b = start(daphne_server), start(daphne_server)
    session = await sync_to_async(
        lambda: login(User.objects.create_superuser("root", password="x"))[1]
    )()
    async with (
        WSClient(a.ws_url + "/realtime/ws/") as ws,
        open_sse(b.http_url + "/realtime/sse/?stream=public:busy") as sse,
    ):
        await ws.recv_until(lambda f: f["type"] == "welcome")
        await ws.send_json({"type": "subscribe", "stream": "public:busy"})
        await ws.recv_until(lambda f: f["type"] == "subscribed")
        await sse.next_event()
        for n in range(3):
            await realtime.apublish("public:busy", "t.e", {"n": n})
        async with httpx.AsyncClient(cookies={"sessionid": session}) as http:
            page = await http.get(f"{b.http_url}{ADMIN}/connection/dashboard/")
            assert page.status_code == 200
            assert "2 of 2 servers reporting" in page.text
            assert f":{a.pid}</code>" in page.text and f":{b.pid}</code>" in page.text
            assert "public:busy" in page.text
            data = (await http.get(f"{a.http_url}{ADMIN}/connection/dashboard/data/")).json()
    by_pid = {int(s["name"].rsplit(":", 1)[1]): s for s in data["servers"]}
    assert by_pid[a.pid]["connections"] == {"websocket": 1}
    assert by_pid[b.pid]["connections"] == {"sse": 1}
    assert all(s["reporting"] for s in data["servers"])
    assert data["totals"]["connections"] == 2
    assert data["streams"][0]["name"] == "public:busy" and data["streams"][0]["events"] == 3


# --- the live list in a browser ---------------------------------------------------------------
@pytest.mark.asyncio(loop_scope="session")
async def test_live_connections_page_shows_a_new_connection_within_a_second(
    daphne_server: ServerFactory, pages: Pages
) -> None:
    # Stats ticks every 0.2 s (the maintenance loop wakes every RECONCILE_INTERVAL).
    server = start(daphne_server, STATS_INTERVAL=0.2, RECONCILE_INTERVAL=0.2, PRESENCE_GRACE=0.2)
    session = await sync_to_async(
        lambda: login(User.objects.create_superuser("root", password="x"))[1]
    )()
    context = await pages.context(DESKTOP)
    # The demo has no favicon; Chromium would log the 404 as a console error.
    await context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    await context.add_cookies([{"name": "sessionid", "value": session, "url": server.http_url}])
    page = await pages.open(f"{server.http_url}{ADMIN}/connection/", context=context)
    await page.wait_for_selector("#rt-live-status[data-state='live']")
    # The page's own connection shows up first.
    await page.wait_for_function("document.querySelectorAll('input.action-select').length === 1")

    async with WSClient(
        server.ws_url + "/realtime/ws/", headers={"User-Agent": "rt-browser-test/1.0"}
    ) as ws:
        welcome = await ws.recv_until(lambda f: f["type"] == "welcome")
        opened = time.monotonic()
        row = f"input.action-select[value='{welcome['connection_id']}']"
        await page.wait_for_selector(row, timeout=1000)
        appeared = time.monotonic() - opened
        assert appeared <= 1.0, appeared
        assert "rt-browser-test/1.0" in await page.inner_text("#result_list")
        # Selection survives refreshes: check the row, let another connection come and go.
        await page.check(row)
        async with WSClient(server.ws_url + "/realtime/ws/") as other:
            await other.recv_until(lambda f: f["type"] == "welcome")
            await page.wait_for_function(
                "document.querySelectorAll('input.action-select').length === 3"
            )
        assert await page.is_checked(row)
        assert "1 of 3 selected" in await page.inner_text("span.action-counter")
    # Gone from the list once closed (after PRESENCE_GRACE), still without reloading.
    await page.wait_for_selector(row, state="detached", timeout=5000)
    await asyncio.sleep(0)
