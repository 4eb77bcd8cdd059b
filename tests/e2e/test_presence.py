"""Presence on real daphne processes sharing Redis: members across tabs, processes and crashes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

import realtime.storage.presence
from realtime.models import (
    Connection,
    Presence,
    PresenceMember,
    PresenceSession,
    Server,
    UserStatus,
)
from tests.servers import WSClient, open_sse

WS = "/realtime/ws/"


@pytest.fixture
def signal_log(tmp_path: Path) -> Path:
    return tmp_path / "signals.jsonl"


@pytest.fixture
def start(daphne_server, signal_log):
    """Start a daphne with test settings; REALTIME overrides as keyword arguments."""

    def start_server(**overrides: Any):
        env = {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "REALTIME_TEST_SIGNAL_LOG": str(signal_log),
            "REALTIME_TEST_OVERRIDES": json.dumps(
                {"PRESENCE_GRACE": 0.3, "RECONCILE_INTERVAL": 0.5, **overrides}
            ),
        }
        return daphne_server(env)

    return start_server


def signals_logged(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def session_cookie(username: str) -> str:
    def login() -> str:
        user = get_user_model().objects.create_user(username, password="x")
        client = Client()
        client.force_login(user)
        return f"sessionid={client.cookies['sessionid'].value}"

    return await sync_to_async(login)()


async def keep_alive(ws: WSClient) -> None:
    """Ping every 0.3 s, as a client does, so short presence timeouts spare this one."""
    while True:
        await ws.send_json({"type": "ping"})
        await asyncio.sleep(0.3)


async def open_ws(server, *, client_id: str | None = None, cookie: str | None = None) -> WSClient:
    url = server.ws_url + WS + (f"?client_id={client_id}" if client_id else "")
    ws = WSClient(url, headers={"Cookie": cookie} if cookie else None)
    await ws.connect()
    await ws.recv_until(lambda f: f["type"] == "welcome")
    return ws


async def join(ws: WSClient, stream: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Subscribe with presence; returns the ``presence.state`` frame."""
    await ws.send_json({"type": "subscribe", "id": 1, "stream": stream, "presence": meta or {}})
    await ws.recv_until(lambda f: f["type"] == "subscribed")
    return await ws.recv_until(lambda f: f["type"].startswith("presence.state"))


def presence_frames(ws: WSClient) -> list[dict[str, Any]]:
    return [f for f in ws.received if f["type"].startswith("presence.")]


async def test_join_and_leave_across_two_processes(start):
    a, b = start(PRESENCE_HISTORY_ANONYMOUS=True), start(PRESENCE_HISTORY_ANONYMOUS=True)
    stream = "public:room-1"
    ada = await open_ws(a, client_id="ada-browser")
    state = await join(ada, stream, {"name": "Ada"})
    assert list(state["members"]) == ["anon:ada-browser"]
    assert state["members"]["anon:ada-browser"]["metas"][0]["meta"] == {"name": "Ada"}
    assert state["ref"] == state["members"]["anon:ada-browser"]["metas"][0]["ref"]

    bob = await open_ws(b, client_id="bob-browser")
    state = await join(bob, stream, {"name": "Bob"})
    assert set(state["members"]) == {"anon:ada-browser", "anon:bob-browser"}
    joined = await ada.recv_until(lambda f: f["type"] == "presence.join")
    assert joined["key"] == "anon:bob-browser" and joined["stream"] == stream
    assert [m["meta"] for m in joined["metas"]] == [{"name": "Bob"}]

    members = await sync_to_async(realtime.storage.presence.presence)(stream)
    assert sorted(m.key for m in members) == ["anon:ada-browser", "anon:bob-browser"]

    await bob.close()
    left = await ada.recv_until(lambda f: f["type"] == "presence.leave", timeout=5)
    assert left == {"type": "presence.leave", "stream": stream, "key": "anon:bob-browser"}
    await ada.close()
    async with asyncio.timeout(5):
        while await sync_to_async(Presence.objects.count)():
            await asyncio.sleep(0.1)
    sessions = await sync_to_async(list)(PresenceSession.objects.order_by("started_at"))
    assert [(s.key, s.ended_at is not None) for s in sessions] == [
        ("anon:ada-browser", True),
        ("anon:bob-browser", True),
    ]


async def test_three_tabs_of_one_user_are_one_member(start, signal_log):
    a, b = start(), start()
    stream = "public:doc"
    watcher = await open_ws(b, client_id="watcher")
    await join(watcher, stream)
    cookie = await session_cookie("ada")
    user_id = await sync_to_async(lambda: get_user_model().objects.get(username="ada").pk)()
    tabs = []
    for n, server in enumerate([a, a, b]):
        tab = await open_ws(server, cookie=cookie)
        state = await join(tab, stream, {"tab": n})
        assert str(user_id) in state["members"]
        tabs.append(tab)
    key = str(user_id)
    await watcher.recv_until(lambda f: f["type"] == "presence.update" and len(f["metas"]) == 3)
    for tab in tabs[:2]:
        await tab.close()
    await watcher.recv_until(lambda f: f["type"] == "presence.update" and len(f["metas"]) == 1)
    await tabs[2].close()
    await watcher.recv_until(lambda f: f["type"] == "presence.leave" and f["key"] == key)
    mine = [f for f in presence_frames(watcher) if f.get("key") == key]
    assert [f["type"] for f in mine].count("presence.join") == 1
    assert [f["type"] for f in mine].count("presence.leave") == 1
    async with asyncio.timeout(5):
        while await sync_to_async(UserStatus.objects.filter(user_id=user_id, online=True).exists)():
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    logged = [(s["signal"], s["user"]) for s in signals_logged(signal_log) if s["user"] == user_id]
    assert logged.count(("user_online", user_id)) == 1
    assert logged.count(("user_offline", user_id)) == 1
    assert logged.count(("presence_joined", user_id)) == 1
    assert logged.count(("presence_left", user_id)) == 1
    await watcher.close()


async def test_reconnect_within_grace_does_not_flap(start):
    server = start(PRESENCE_GRACE=4)
    stream = "public:flap"
    watcher = await open_ws(server, client_id="w")
    await join(watcher, stream)
    tab = await open_ws(server, client_id="tab")
    await join(tab, stream, {"v": 1})
    await watcher.recv_until(lambda f: f["type"] == "presence.join" and f["key"] == "anon:tab")
    await tab.close()
    tab = await open_ws(server, client_id="tab")  # the reload
    await join(tab, stream, {"v": 2})
    await watcher.recv_until(lambda f: f["type"] == "presence.update" and len(f["metas"]) == 2)
    await watcher.recv_until(
        lambda f: f["type"] == "presence.update" and [m["meta"] for m in f["metas"]] == [{"v": 2}],
        timeout=8,
    )
    assert not [f for f in presence_frames(watcher) if f["type"] == "presence.leave"]
    await tab.close()
    await watcher.close()


async def test_metadata_update_and_explicit_leave(start):
    server = start()
    stream = "public:meta"
    watcher = await open_ws(server, client_id="w")
    await join(watcher, stream)
    ada = await open_ws(server, client_id="ada")
    await join(ada, stream, {"status": "here"})
    await ada.send_json({"type": "presence", "id": 7, "stream": stream, "meta": {"status": "away"}})
    ack = await ada.recv_until(lambda f: f["type"] == "ack")
    assert ack["id"] == 7 and isinstance(ack["ref"], str)
    update = await watcher.recv_until(lambda f: f["type"] == "presence.update")
    assert update["key"] == "anon:ada" and update["metas"][0]["meta"] == {"status": "away"}
    await ada.send_json({"type": "presence", "id": 8, "stream": stream, "leave": True})
    assert (await ada.recv_until(lambda f: f["type"] == "ack"))["id"] == 8
    await watcher.recv_until(lambda f: f["type"] == "presence.leave" and f["key"] == "anon:ada")
    await ada.close()
    await watcher.close()


async def test_killed_process_leaves_no_ghosts(start, signal_log):
    a, b = start(PRESENCE_TIMEOUT=3), start(PRESENCE_TIMEOUT=3)
    stream = "public:crash"
    watcher = await open_ws(b, client_id="w")
    await join(watcher, stream)
    pinger = asyncio.create_task(keep_alive(watcher))
    cookie = await session_cookie("victim")
    victim = await open_ws(a, cookie=cookie)
    await join(victim, stream, {"on": "a"})
    victim_pinger = asyncio.create_task(keep_alive(victim))
    joined = await watcher.recv_until(lambda f: f["type"] == "presence.join")
    a.kill()
    victim_pinger.cancel()
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    left = await watcher.recv_until(lambda f: f["type"] == "presence.leave", timeout=8)
    assert left["key"] == joined["key"]
    assert loop.time() - killed_at < 3 + 1.5  # the timeout, plus scheduling slack
    assert await sync_to_async(Server.objects.filter(pid=a.pid).exists)() is False
    assert await sync_to_async(Connection.objects.filter(server__pid=a.pid).exists)() is False
    members = await sync_to_async(realtime.storage.presence.presence)(stream)
    assert [m.key for m in members] == ["anon:w"]
    await asyncio.sleep(0.3)
    offline = [s for s in signals_logged(signal_log) if s["signal"] == "user_offline"]
    assert len(offline) == 1 and offline[0]["pid"] == b.pid  # swept by the survivor
    pinger.cancel()
    await watcher.close()


async def test_silent_client_times_out_of_presence(start):
    server = start(PRESENCE_TIMEOUT=1.5)
    stream = "public:quiet"
    watcher = await open_ws(server, client_id="w")
    await join(watcher, stream)
    quiet = await open_ws(server, client_id="quiet")
    await join(quiet, stream)

    # The watcher keeps talking; the quiet client does not (its socket stays open).
    pinger = asyncio.create_task(keep_alive(watcher))
    try:
        left = await watcher.recv_until(
            lambda f: f["type"] == "presence.leave" and f["key"] == "anon:quiet", timeout=6
        )
        assert left["stream"] == stream
        assert quiet.close_code is None
    finally:
        pinger.cancel()
    await quiet.close()
    await watcher.close()


async def test_sse_presence_with_http_heartbeats_on_another_process(start):
    a, b = start(PRESENCE_TIMEOUT=1.5), start(PRESENCE_TIMEOUT=1.5)
    stream = "public:sse-room"
    watcher = await open_ws(a, client_id="w")
    await join(watcher, stream)

    pings = asyncio.create_task(keep_alive(watcher))
    url = (
        f"{b.http_url}/realtime/sse/?stream={stream}&presence={stream}"
        '&meta={"name":"Sam"}&client_id=sam'
    )
    try:
        async with open_sse(url) as sse:
            welcome = await sse.next_event()
            assert welcome["event"] == "realtime.welcome"
            connection_id = welcome["data"]["connection_id"]
            state = None
            while state is None:
                event = await sse.next_event()
                if event["event"] == "presence.state":
                    state = event["data"]
            assert "anon:sam" in state["members"]
            await watcher.recv_until(
                lambda f: f["type"] == "presence.join" and f["key"] == "anon:sam"
            )
            import httpx

            async with httpx.AsyncClient() as http:
                for _ in range(8):  # 2.4 s of heartbeats, sent to the *other* process
                    response = await http.post(
                        f"{a.http_url}/realtime/heartbeat/", json={"connection": connection_id}
                    )
                    assert response.status_code == 204
                    await asyncio.sleep(0.3)
                assert not [f for f in presence_frames(watcher) if f["type"] == "presence.leave"]
                missing = await http.post(
                    f"{a.http_url}/realtime/heartbeat/", json={"connection": "nope"}
                )
                assert missing.status_code == 404
                assert missing.json()["error"]["code"] == "unknown_connection"
            # Heartbeats stop: the member leaves though the stream is still open.
            await watcher.recv_until(
                lambda f: f["type"] == "presence.leave" and f["key"] == "anon:sam", timeout=6
            )
            await sse.aclose()
    finally:
        pings.cancel()
    await watcher.close()


async def test_counts_only_streams_send_occupancy(start):
    server = start(PRESENCE_COUNTS_ONLY=["public:big-*"])
    stream = "public:big-hall"
    first = await open_ws(server, client_id="one")
    await first.send_json({"type": "subscribe", "stream": stream, "presence": {}})
    count = await first.recv_until(lambda f: f["type"] == "presence.count")
    assert count == {"type": "presence.count", "stream": stream, "members": 1, "connections": 1}
    second = await open_ws(server, client_id="two")
    await second.send_json({"type": "subscribe", "stream": stream, "presence": {}})
    await second.recv_until(lambda f: f["type"] == "presence.count")
    update = await first.recv_until(lambda f: f["type"] == "presence.count", timeout=5)
    assert (update["members"], update["connections"]) == (2, 2)
    assert not [f for f in first.received if f["type"] in ("presence.join", "presence.state")]
    await first.close()
    await second.close()


async def test_member_cap_and_metadata_limits(start):
    server = start(PRESENCE_MAX_MEMBERS=1, PRESENCE_MAX_META_SIZE=64)
    stream = "public:small"
    one = await open_ws(server, client_id="one")
    await join(one, stream)
    two = await open_ws(server, client_id="two")
    await two.send_json({"type": "subscribe", "id": "s", "stream": stream, "presence": {}})
    assert (await two.recv_until(lambda f: f["type"] == "subscribed"))["stream"] == stream
    error = await two.recv_until(lambda f: f["type"] == "error")
    assert error["code"] == "presence_full" and error["id"] == "s"
    big = {"blob": "x" * 100}
    await one.send_json({"type": "presence", "id": 2, "stream": stream, "meta": big})
    error = await one.recv_until(lambda f: f["type"] == "error")
    assert error["code"] == "invalid_presence"
    await one.send_json({"type": "presence", "id": 3, "stream": "public:other", "meta": {}})
    assert (await one.recv_until(lambda f: f["type"] == "error"))["code"] == "not_subscribed"
    members = await sync_to_async(realtime.storage.presence.presence)(stream)
    assert [m.key for m in members] == ["anon:one"]
    assert [m.metas[0].meta for m in members] == [{}]
    assert await sync_to_async(PresenceMember.objects.filter(key="anon:two").exists)() is False
    await one.close()
    await two.close()
