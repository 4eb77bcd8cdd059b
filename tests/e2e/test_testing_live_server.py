"""``realtime.testing.pytest``'s fixtures (loaded with ``-p realtime.testing.pytest`` in
pyproject.toml, as a project would): a live ``realtime.serve`` on the test database."""

from __future__ import annotations

import pytest

import realtime
from realtime.testing import CapturedEvents, LiveServer
from tests.servers import WSClient, open_sse

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_live_server_delivers_what_this_process_publishes(
    realtime_live_server: LiveServer, realtime_captured: CapturedEvents
) -> None:
    server = realtime_live_server
    async with WSClient(server.ws_url + "/realtime/ws/") as ws:
        assert (await ws.recv_json())["type"] == "welcome"
        await ws.send_json({"type": "subscribe", "stream": "public:news", "since": 0})
        await ws.recv_until(lambda frame: frame["type"] == "subscribed")
        await realtime.apublish("public:news", "headline", {"title": "hi"})
        frame = await ws.recv_until(lambda frame: frame["type"] == "event")
        assert (frame["seq"], frame["data"]) == (1, {"title": "hi"})
    async with open_sse(server.http_url + "/realtime/sse/?stream=public:news") as sse:
        assert sse.status_code == 200
        assert (await sse.next_event())["event"] == "realtime.welcome"
        assert (await sse.next_event())["event"] == "realtime.subscribed"
        await realtime.apublish("public:news", "headline", {"title": "again"})
        event = await sse.next_event()
        assert (event["event"], event["data"]["seq"]) == ("headline", 2)
    assert [e.seq for e in realtime_captured.sent] == [1, 2]
    assert server.running and "Listening on TCP address 127.0.0.1" in server.log()
    server.stop()
    assert not server.running
