"""End to end on real daphne processes sharing Redis: fan-out, exact resume, transport switch."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

import realtime
from realtime.protocol import encode_cursor
from tests.servers import WSClient, arun_manage, open_sse

WS_PATH = "/realtime/ws/"


async def subscribe(ws: WSClient, stream: str, **fields: Any) -> dict[str, Any]:
    await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_json({"type": "subscribe", "id": stream, "stream": stream, **fields})
    return await ws.recv_until(lambda f: f["type"] == "subscribed")


async def events_until(ws: WSClient, stream: str, last: int, timeout: float = 10) -> list[int]:
    seqs: list[int] = []
    try:
        async with asyncio.timeout(timeout):
            while not seqs or seqs[-1] < last:
                frame = await ws.recv_json(timeout=timeout)
                if frame["type"] == "event" and frame["stream"] == stream:
                    seqs.append(frame["seq"])
    except TimeoutError:
        tail = ws.received[-3:]
        raise AssertionError(f"waited for #{last}; got {len(seqs)} events, last {tail}") from None
    return seqs


async def test_publish_from_a_third_process_reaches_both_servers_in_order(daphne_server):
    a, b = daphne_server(), daphne_server()
    async with WSClient(a.ws_url + WS_PATH) as on_a, WSClient(b.ws_url + WS_PATH) as on_b:
        await subscribe(on_a, "public:orders")
        await subscribe(on_b, "public:orders")
        for n in range(3):
            await arun_manage("realtime_publish", "public:orders", "order.created", f'{{"n": {n}}}')
        for ws in (on_a, on_b):
            frames = [await ws.recv_until(lambda f: f["type"] == "event") for _ in range(3)]
            assert [f["seq"] for f in frames] == [1, 2, 3]
            assert [f["data"] for f in frames] == [{"n": 0}, {"n": 1}, {"n": 2}]
            assert {f["event"] for f in frames} == {"order.created"}


def publish_many(stream: str, count: int, stop: threading.Event) -> None:
    try:
        for n in range(count):
            if stop.is_set():
                return
            realtime.publish(stream, "tick", {"n": n})
    finally:
        connection.close()


async def test_no_gap_no_duplicate_at_the_replay_live_seam(daphne_server):
    """Clients subscribe with and without history while two publishers are busy."""
    servers = [daphne_server(), daphne_server()]
    stream, per_publisher = "public:seam", 150
    total = 2 * per_publisher
    stop = threading.Event()
    publishers = [
        asyncio.create_task(asyncio.to_thread(publish_many, stream, per_publisher, stop))
        for _ in range(2)
    ]
    clients: list[tuple[WSClient, int, dict[str, Any]]] = []
    try:
        for round_ in range(6):
            await asyncio.sleep(0.15)
            for server in servers:
                ws = await WSClient(server.ws_url + WS_PATH).connect()
                if round_ % 2:
                    subscribed = await subscribe(ws, stream)  # live from the head
                    start = subscribed["seq"]
                else:
                    start = round_ * 7
                    subscribed = await subscribe(ws, stream, since=start)
                    assert subscribed["recovered"] is (start <= subscribed["seq"])
                    if start > subscribed["seq"]:
                        start = 0
                clients.append((ws, start, subscribed))
        await asyncio.gather(*publishers)
        for ws, start, subscribed in clients:
            if start == total:  # subscribed after the last publish: nothing more may come
                with pytest.raises(AssertionError, match="no WebSocket frame"):
                    await ws.recv_json(timeout=0.3)
                continue
            seqs = await events_until(ws, stream, total)
            assert seqs == list(range(start + 1, total + 1)), subscribed
    finally:
        stop.set()
        await asyncio.gather(*publishers, return_exceptions=True)
        for ws, _, _ in clients:
            await ws.close()


async def test_websocket_drop_and_resume(daphne_server):
    server = daphne_server()
    stream = "public:resume"
    async with WSClient(server.ws_url + WS_PATH) as ws:
        subscribed = await subscribe(ws, stream, since=0)
        for n in range(3):
            await realtime.apublish(stream, "e", n)
        assert await events_until(ws, stream, 3) == [1, 2, 3]
    for n in range(3, 8):  # published while the client is away
        await realtime.apublish(stream, "e", n)
    async with WSClient(server.ws_url + WS_PATH) as ws:
        again = await subscribe(ws, stream, since=3, epoch=subscribed["epoch"])
        assert again["recovered"] is True and again["seq"] == 8
        await realtime.apublish(stream, "e", 8)
        frames = []
        while len(frames) < 6:
            frame = await ws.recv_json()
            if frame["type"] == "event":
                frames.append(frame)
        assert [f["seq"] for f in frames] == [4, 5, 6, 7, 8, 9]
        assert [f["data"] for f in frames] == [3, 4, 5, 6, 7, 8]
        with pytest.raises(AssertionError, match="no WebSocket frame"):
            await ws.recv_json(timeout=0.5)  # and nothing twice


async def sse_events(sse: Any, stream: str, last: int) -> list[dict[str, Any]]:
    found = []
    while not found or found[-1]["data"]["seq"] < last:
        event = await sse.next_event(timeout=10)
        if not event["event"].startswith("realtime.") and event["data"]["stream"] == stream:
            found.append(event)
    return found


async def sse_subscribed(sse: Any) -> dict[str, Any]:
    """The next ``realtime.subscribed`` event, past the ``realtime.welcome``."""
    while True:
        event = await sse.next_event()
        if event["event"] == "realtime.subscribed":
            return event


async def test_sse_drop_and_resume_with_last_event_id(daphne_server):
    server = daphne_server()
    stream = "public:sse-resume"
    url = f"{server.http_url}/realtime/sse/?stream={stream}"
    async with open_sse(url) as sse:
        await sse_subscribed(sse)
        for n in range(3):
            await realtime.apublish(stream, "e", n)
        got = await sse_events(sse, stream, 3)
        assert [e["data"]["seq"] for e in got] == [1, 2, 3]
        cursor = got[-1]["id"]
        await sse.aclose()
    for n in range(3, 6):
        await realtime.apublish(stream, "e", n)
    async with open_sse(url, headers={"Last-Event-ID": cursor}) as sse:
        subscribed = await sse_subscribed(sse)
        assert subscribed["data"]["recovered"] is True
        await realtime.apublish(stream, "e", 6)
        got = await sse_events(sse, stream, 7)
        assert [e["data"]["seq"] for e in got] == [4, 5, 6, 7]
        assert [e["event"] for e in got] == ["e"] * 4
        await sse.aclose()


async def test_switching_transport_mid_stream(daphne_server):
    """WebSocket → SSE → WebSocket with events published at every step: each exactly once."""
    a, b = daphne_server(), daphne_server()
    stream = "public:switch"
    seen: list[int] = []
    async with WSClient(a.ws_url + WS_PATH) as ws:
        subscribed = await subscribe(ws, stream, since=0)
        epoch = subscribed["epoch"]
        for n in range(2):
            await realtime.apublish(stream, "e", n)
        seen += await events_until(ws, stream, 2)
    await realtime.apublish(stream, "e", 2)
    cursor = encode_cursor({stream: (epoch, seen[-1])})
    url = f"{b.http_url}/realtime/sse/?stream={stream}&last_event_id={cursor}"
    async with open_sse(url) as sse:
        assert (await sse_subscribed(sse))["data"]["recovered"] is True
        await realtime.apublish(stream, "e", 3)
        seen += [e["data"]["seq"] for e in await sse_events(sse, stream, 4)]
        await sse.aclose()
    await realtime.apublish(stream, "e", 4)
    async with WSClient(a.ws_url + WS_PATH) as ws:
        again = await subscribe(ws, stream, since=seen[-1], epoch=epoch)
        assert again["recovered"] is True
        seen += await events_until(ws, stream, 5)
    assert seen == [1, 2, 3, 4, 5]


async def test_history_written_while_no_server_runs(daphne_server):
    """Events published with no server up are replayed from the database later."""
    for n in range(4):
        await sync_to_async(realtime.publish)("public:offline", "e", n)
    server = daphne_server()
    async with WSClient(server.ws_url + WS_PATH) as ws:
        subscribed = await subscribe(ws, "public:offline", since=0)
        assert subscribed["seq"] == 4
        assert await events_until(ws, "public:offline", 4) == [1, 2, 3, 4]
