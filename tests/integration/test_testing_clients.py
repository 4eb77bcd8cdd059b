"""``realtime.testing``'s in-process WebSocket and SSE clients, on the real hub and Redis."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

import realtime
from realtime.protocol import SSEParser, sse_comment, sse_message
from realtime.testing import SSEClient, WebSocketClient, capture_published

pytestmark = pytest.mark.django_db(transaction=True)

RULES = {
    "public:*": "public",
    "chat:*": {
        "subscribe": "authenticated",
        "history": "authenticated",
        "publish": "authenticated",
    },
}


@pytest.fixture(autouse=True)
def rules(settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "RULES": RULES}


async def test_websocket_welcome_subscribe_and_events() -> None:
    async with WebSocketClient() as ws:
        assert ws.welcome is not None and ws.welcome["type"] == "welcome"
        subscribed = await ws.subscribe("public:news")
        assert subscribed["type"] == "subscribed" and subscribed["stream"] == "public:news"
        await realtime.apublish("public:news", "headline", {"title": "hi"})
        frame = await ws.next_event("public:news")
        assert (frame["event"], frame["seq"], frame["data"]) == ("headline", 1, {"title": "hi"})
        await ws.assert_no_frame()


async def test_websocket_history_and_batches() -> None:
    await realtime.apublish_many("public:news", [("a", 1), ("b", 2)])
    async with WebSocketClient(query={"batch": "1"}) as ws:
        await ws.subscribe("public:news", since=0)
        assert [(await ws.next_event())["data"] for _ in range(2)] == [1, 2]


async def test_websocket_drop_and_resume_misses_nothing() -> None:
    ws = WebSocketClient()
    await ws.connect()
    await ws.subscribe("public:news")
    await ws.subscribe("public:other")
    await realtime.apublish("public:news", "a")
    assert (await ws.next_event())["seq"] == 1
    await ws.drop()
    await realtime.apublish_many("public:news", [("b", None), ("c", None)])
    await realtime.apublish("public:other", "x")
    resumed = await ws.resume()
    assert [(f["stream"], f["recovered"]) for f in resumed] == [
        ("public:news", True),
        ("public:other", True),
    ]
    events = [await ws.next_event() for _ in range(3)]
    assert sorted((f["stream"], f["event"], f["seq"]) for f in events) == [
        ("public:news", "b", 2),
        ("public:news", "c", 3),
        ("public:other", "x", 1),
    ]
    assert ws.positions == {
        "public:news": [resumed[0]["epoch"], 3],
        "public:other": [resumed[1]["epoch"], 1],
    }
    await ws.close()


async def test_websocket_refusals_raise_with_the_error() -> None:
    async with WebSocketClient() as ws:
        with pytest.raises(AssertionError, match=r"forbidden|authentication_required"):
            await ws.subscribe("chat:1")
    with pytest.raises(AssertionError, match="no WebSocket frame within"):
        async with WebSocketClient() as ws:
            await ws.next_event(timeout=0.2)


async def test_websocket_user_publishes_and_capture_sees_it() -> None:
    ada = await User.objects.acreate_user("ada", password="pw")
    async with WebSocketClient(user=ada) as ws:
        await ws.subscribe("chat:1")  # refused without the session (above)
        async with capture_published() as captured:
            ack = await ws.publish("chat:1", "message", {"text": "hi"})
        assert ack["seq"] == 1
        assert captured.events == [("chat:1", "message", {"text": "hi"}, 1)]
        frame = await ws.next_event()
        assert frame["data"] == {"text": "hi"}


async def test_sse_reads_welcome_subscribed_and_events() -> None:
    async with SSEClient(["public:news"]) as sse:
        assert sse.status == 200
        assert sse.response_headers[b"content-type"].startswith(b"text/event-stream")
        await realtime.apublish("public:news", "headline", {"title": "hi"})
        message = await sse.next_event()
        assert message.event == "headline" and message.id
        frame = sse.frame(message)
        assert (frame["stream"], frame["seq"], frame["data"]) == ("public:news", 1, {"title": "hi"})


async def test_sse_refused_and_signed_in() -> None:
    refused = SSEClient(["chat:1"])
    with pytest.raises(AssertionError, match="SSE response 40"):
        await refused.connect()
    await refused.close()
    ada = await User.objects.acreate_user("ada", password="pw")
    async with SSEClient(["chat:1"], user=ada) as sse:
        realtime_event = await realtime.apublish("chat:1", "message", "hi")
        assert sse.frame(await sse.next_event())["seq"] == realtime_event.seq


async def test_clients_side_by_side_share_the_hub() -> None:
    async with WebSocketClient() as ws, SSEClient(["public:news"]) as sse:
        await ws.subscribe("public:news")
        await realtime.apublish("public:news", "x")
        assert (await ws.next_event())["event"] == "x"
        assert (await sse.next_event()).event == "x"


def test_sse_parser_reads_what_sse_message_writes() -> None:
    parser = SSEParser()
    text = (
        sse_message('{"a":\n1}', event="e", id="c1") + sse_comment("ping") + "retry: 5\ndata: x\n\n"
    )
    messages = parser.feed(text[:7]) + parser.feed(text[7:])
    assert [(m.event, m.data, m.id, m.retry) for m in messages] == [
        ("e", '{"a":\n1}', "c1", None),
        ("message", "x", None, 5),
    ]
    assert parser.comments == ["ping"]
