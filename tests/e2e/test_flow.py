"""Flow control on real daphne processes: a client that stops acknowledging cannot grow the
server's memory; each stream's SLOW_CONSUMERS policy applies; nothing is lost for good."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

import realtime
from tests.servers import WSClient, open_sse, settings_env

WS = "/realtime/ws/"


def server_with(daphne_server, **overrides: Any):
    return daphne_server(settings_env(overrides))


async def read_until_closed(ws: WSClient, timeout: float = 5) -> int | None:
    """Read (without acknowledging) until the server closes; the close code.

    The client library stops reading the socket when its own queue is full, so a test
    client has to read for the server's close frame to get through.
    """
    try:
        while True:
            await ws.recv_json(timeout=timeout)
    except AssertionError:
        return await ws.wait_closed(timeout=timeout)


async def subscribed(ws: WSClient, stream: str, **fields: Any) -> dict[str, Any]:
    await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_json({"type": "subscribe", "stream": stream, **fields})
    return await ws.recv_until(lambda f: f["type"] == "subscribed")


async def test_a_client_that_never_acknowledges_is_cut_and_resumes(daphne_server):
    server = server_with(daphne_server, OUTBOX_WINDOW={"messages": 30, "bytes": 1_000_000})
    stream = "public:flood"
    async with WSClient(server.ws_url + WS) as slow, WSClient(server.ws_url + WS) as good:
        first = await subscribed(slow, stream, since=0)
        assert first["type"] == "subscribed"
        await subscribed(good, stream, since=0)
        good_seqs: list[int] = []
        for n in range(80):
            await realtime.apublish(stream, "tick", {"n": n})
            while True:  # the good client reads and acknowledges as it goes
                frame = await good.recv_json()
                if frame["type"] == "event":
                    good_seqs.append(frame["seq"])
                    await good.send_json({"type": "received", "count": len(good.received)})
                    break
        assert good_seqs == list(range(1, 81))
        assert await read_until_closed(slow) == 4409
        got = [f["seq"] for f in slow.received if f["type"] == "event"]
        assert got == list(range(1, len(got) + 1)) and len(got) < 30
    # It resumes from where it was and gets every event once.
    async with WSClient(server.ws_url + WS) as again:
        resumed = await subscribed(again, stream, since=got[-1], epoch=first["epoch"])
        assert resumed["recovered"] is True
        rest: list[int] = []
        while len(got) + len(rest) < 80:  # a replay larger than the window: acknowledge
            rest.append((await again.recv_until(lambda f: f["type"] == "event"))["seq"])
            await again.send_json({"type": "received", "count": len(again.received)})
        assert got + rest == list(range(1, 81))


async def test_skip_policy_sends_a_gap_then_goes_on(daphne_server):
    server = server_with(
        daphne_server,
        OUTBOX_WINDOW={"messages": 20, "bytes": 1_000_000},
        SLOW_CONSUMERS={"public:ticker*": "skip", "*": "disconnect"},
    )
    stream = "public:ticker"
    async with WSClient(server.ws_url + WS) as ws:
        await subscribed(ws, stream)
        for n in range(50):
            await realtime.apublish(stream, "price", {"n": n})
        await asyncio.sleep(0.5)  # let the server take every fan-out before acknowledging
        events = []
        while len(events) < 18:  # the window (20) minus welcome and subscribed
            frame = await ws.recv_json()
            if frame["type"] == "event":
                events.append(frame["seq"])
        assert events == list(range(1, 19))
        await ws.send_json({"type": "received", "count": len(ws.received)})
        gap = await ws.recv_until(lambda f: f["type"] == "gap")
        assert gap == {"type": "gap", "stream": stream, "from": 19, "to": 50}
        await realtime.apublish(stream, "price", {"n": 50})
        live = await ws.recv_until(lambda f: f["type"] == "event")
        assert live["seq"] == 51
        assert ws.close_code is None


async def test_conflate_policy_keeps_the_latest_per_key(daphne_server):
    server = server_with(
        daphne_server,
        OUTBOX_WINDOW={"messages": 10, "bytes": 1_000_000},
        SLOW_CONSUMERS={"public:cursors*": "conflate"},
    )
    stream = "public:cursors"
    async with WSClient(server.ws_url + WS) as ws:
        await subscribed(ws, stream)
        for n in range(30):
            who = "ada" if n % 2 else "bob"
            await realtime.apublish(stream, "cursor.moved", {"key": who, "x": n}, ephemeral=True)
        await asyncio.sleep(0.5)  # let the server take every fan-out before acknowledging
        events = []
        while len(events) < 8:
            frame = await ws.recv_json()
            if frame["type"] == "event":
                events.append(frame["data"]["x"])
        assert events == list(range(8))
        await ws.send_json({"type": "received", "count": len(ws.received)})
        latest = [await ws.recv_until(lambda f: f["type"] == "event") for _ in range(2)]
        assert sorted(f["data"]["x"] for f in latest) == [28, 29]  # the last of each key


async def test_sse_clients_acknowledge_through_the_heartbeat(daphne_server):
    server = server_with(daphne_server, OUTBOX_WINDOW={"messages": 15, "bytes": 1_000_000})
    stream = "public:sse-flow"
    url = f"{server.http_url}/realtime/sse/?stream={stream}"
    async with open_sse(url) as sse, httpx.AsyncClient(base_url=server.http_url) as http:
        welcome = await sse.next_event()
        connection = welcome["data"]["connection_id"]
        assert welcome["data"]["window"] == {"messages": 15, "bytes": 1_000_000}
        received = 1
        seqs = []
        for n in range(40):
            await realtime.apublish(stream, "tick", {"n": n})
            while True:
                event = await sse.next_event()
                received += 1
                if event["event"] == "tick":
                    seqs.append(event["data"]["seq"])
                    break
            if n % 5 == 4:
                response = await http.post(
                    "/realtime/heartbeat/", json={"connection": connection, "received": received}
                )
                assert response.status_code == 204
        assert seqs == list(range(1, 41))
        await sse.aclose()
