"""The app under the other ASGI servers it supports: uvicorn and hypercorn, as real processes.

The rest of the suite runs daphne (the default). Here each supported alternative serves
``project.asgi`` next to a daphne process on the same database and Redis: WebSocket and SSE
clients subscribe on it, get events published from this process and from a client of the
other server, resume exactly from their last seq, and the WebSocket frame limit holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async

import realtime
from tests.servers import Server, WSClient, open_sse

pytestmark = pytest.mark.parametrize("kind", ["uvicorn", "hypercorn"])

WS = "/realtime/ws/"
ServerFactory = Callable[..., Server]


async def subscribe(server: Server, stream: str, **position: object) -> WSClient:
    ws = await WSClient(server.ws_url + WS).connect()
    await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_json({"type": "subscribe", "stream": stream, **position})
    await ws.recv_until(lambda f: f["type"] == "subscribed")
    return ws


async def events(ws: WSClient, count: int) -> list[tuple[int, object]]:
    got = []
    while len(got) < count:
        frame = await ws.recv_until(lambda f: f["type"] == "event", timeout=10)
        got.append((frame["seq"], frame["data"]))
    return got


async def test_websocket_live_resume_and_across_servers(
    daphne_server: ServerFactory, kind: str
) -> None:
    other, daphne = daphne_server(server=kind), daphne_server()
    stream = "public:chat:servers"
    ws = await subscribe(other, stream)
    await realtime.apublish(stream, "m", 1)
    # A client of the daphne process publishes; the other server's subscriber gets it.
    sender = await subscribe(daphne, stream)
    await sender.send_json({"type": "publish", "stream": stream, "event": "m", "data": 2})
    assert await events(ws, 2) == [(1, 1), (2, 2)]
    epoch = (await sync_to_async(realtime.storage.store.position)(stream)).epoch
    await ws.close()
    for n in (3, 4):
        await realtime.apublish(stream, "m", n)
    back = await subscribe(other, stream, since=2, epoch=epoch)
    assert await events(back, 2) == [(3, 3), (4, 4)]
    await realtime.apublish(stream, "m", 5)
    assert await events(back, 1) == [(5, 5)]
    await back.close()
    await sender.close()


async def test_sse_live_and_resume(daphne_server: ServerFactory, kind: str) -> None:
    server = daphne_server(server=kind)
    stream = "public:servers-sse"
    url = f"{server.http_url}/realtime/sse/?stream={stream}"
    async with open_sse(url) as sse:
        assert sse.status_code == 200
        while (await sse.next_event())["event"] != "realtime.subscribed":
            pass
        await realtime.apublish(stream, "m", 1)
        first = await sse.next_event(timeout=10)
        assert (first["event"], first["data"]["seq"]) == ("m", 1)
        cursor = first["id"]
    await realtime.apublish(stream, "m", 2)
    async with open_sse(url, headers={"Last-Event-ID": cursor}) as sse:
        event = await sse.next_event(timeout=10)
        while event["event"] != "m":
            event = await sse.next_event(timeout=10)
        assert event["data"]["seq"] == 2


async def test_oversized_frames_are_refused(daphne_server: ServerFactory, kind: str) -> None:
    """uvicorn refuses a message over ``--ws-max-size`` with close 1009 before the app sees
    it; hypercorn (no such command-line option) reads it and the app answers with an error
    frame, as it does for any frame over ``MAX_FRAME_SIZE``. Either way the process lives."""
    server = daphne_server(server=kind)
    ws = await WSClient(server.ws_url + WS).connect()
    await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_raw('{"type":"ping","pad":"' + "x" * 70_000 + '"}')
    if kind == "uvicorn":
        assert await ws.wait_closed() == 1009
    else:
        error = await ws.recv_until(lambda f: f["type"] == "error")
        assert error["code"] == "frame_too_large"
        await ws.close()
    await asyncio.sleep(0.2)
    assert server.running
