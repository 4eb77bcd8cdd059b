"""``batch`` frames on real daphne processes (docs/protocol.md#batch).

A WebSocket client that connects with ``?batch=1`` may get several frames in one message,
``{"type": "batch", "frames": [...]}``: a burst arrives in fewer messages than events, each
event once and in order, and flow control counts the frames inside, not the messages. A
client that does not ask never sees a batch.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from websockets.exceptions import ConnectionClosed

import realtime
from tests.servers import WSClient, settings_env

WS = "/realtime/ws/"


@sync_to_async
def publish_in_one_transaction(stream: str, start: int, count: int) -> None:
    """Events ``start`` .. ``start + count - 1``, fanned out one by one as the commit sends
    them: a burst of single channel-layer messages, which the server coalesces."""
    with transaction.atomic():
        for n in range(start, start + count):
            realtime.publish(stream, "tick", {"n": n})


async def burst(stream: str) -> int:
    """500 events: one ``publish_many`` (channel-layer messages of 100 events), then 200
    single messages from one transaction. Returns the number of events."""
    await realtime.apublish_many(stream, [("tick", {"n": n}) for n in range(300)])
    await publish_in_one_transaction(stream, 300, 200)
    return 500


async def subscribed(ws: WSClient, stream: str) -> dict[str, Any]:
    welcome = await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_json({"type": "subscribe", "id": "s", "stream": stream})
    await ws.recv_until(lambda f: f["type"] == "subscribed")
    return welcome


async def read_events(ws: WSClient, count: int, *, every: int = 50) -> list[Any]:
    """The next ``count`` events' ``(seq, data["n"])``.

    Acknowledges as a client does: at the end of a message (never in the middle of a batch),
    once ``every`` frames or more are unacknowledged, counting every frame received.
    """
    events: list[Any] = []
    acked = 0
    while len(events) < count:
        frame = await ws.recv_json()
        if frame["type"] == "event":
            events.append((frame["seq"], frame["data"]["n"]))
        if not ws.mid_batch and len(ws.received) - acked >= every:
            acked = len(ws.received)
            await ws.send_json({"type": "received", "count": acked})
    return events


async def test_batch_opt_in_joins_a_burst_into_fewer_messages(daphne_server):
    server = daphne_server(settings_env())
    stream = "public:batched"
    async with WSClient(server.ws_url + WS + "?batch=1", unbatch=True) as ws:
        welcome = await subscribed(ws, stream)
        assert welcome["batch"] is True, welcome
        messages_before = ws.messages
        count = await burst(stream)
        events = await read_events(ws, count)
        messages = ws.messages - messages_before
        # Every event once, in order, whatever message carried it.
        assert events == [(n + 1, n) for n in range(count)]
        assert ws.batches, "no batch frame arrived"
        assert messages < count, f"{count} events came in {messages} messages"
        # The 200 single channel-layer messages were coalesced too (FLUSH_INTERVAL), not
        # only the publish_many ones, which arrive 100 events to a message.
        batched = {f["seq"] for b in ws.batches for f in b["frames"] if f["type"] == "event"}
        alone = [seq for seq, _ in events if seq > 300 and seq not in batched]
        carriers = [b for b in ws.batches if any(f.get("seq", 0) > 300 for f in b["frames"])]
        assert len(carriers) + len(alone) < 200, (len(carriers), len(alone))
        for batch in ws.batches:
            assert set(batch) == {"type", "frames"}, batch.keys()
            assert 1 <= len(batch["frames"]) <= 1000
            assert all(f["type"] != "batch" for f in batch["frames"]), "a batch in a batch"
        # Nothing but the events (and no frame twice): the connection goes on as usual.
        await ws.send_json({"type": "ping", "id": "end"})
        assert (await ws.recv_json())["type"] == "pong"
        assert ws.close_code is None


@pytest.mark.parametrize("query", ["", "?batch=0", "?batch=true"])
async def test_without_batch_every_frame_is_its_own_message(daphne_server, query):
    server = daphne_server(settings_env())
    stream = "public:unbatched"
    async with WSClient(server.ws_url + WS + query) as ws:
        welcome = await subscribed(ws, stream)
        assert welcome["batch"] is False, welcome
        count = await burst(stream)
        events = await read_events(ws, count)
        assert events == [(n + 1, n) for n in range(count)]
        assert not [f for f in ws.received if f["type"] == "batch"]
        assert ws.messages == len(ws.received)


async def test_flow_control_counts_the_frames_inside_batches(daphne_server):
    """A window far smaller than the burst stays open for a client that counts the frames
    in batches; one that counts messages instead falls behind and is cut (4409)."""
    server = daphne_server(
        settings_env(
            {"OUTBOX_WINDOW": {"messages": 250, "bytes": 10_000_000}, "FLUSH_INTERVAL": 0.05}
        )
    )
    stream = "public:batch-window"
    url = server.ws_url + WS + "?batch=1"
    async with WSClient(url, unbatch=True) as good, WSClient(url, unbatch=True) as wrong:
        await subscribed(good, stream)
        await subscribed(wrong, stream)
        events: list[Any] = []
        wrong_code = None
        for chunk in range(10):  # 1000 events, 100 at a time: four windows' worth
            await realtime.apublish_many(
                stream, [("tick", {"n": n}) for n in range(chunk * 100, chunk * 100 + 100)]
            )
            events += await read_events(good, 100)
            if wrong_code is None:
                try:
                    while True:  # read what came, acknowledging messages, not frames
                        await wrong.recv_json(timeout=0.2)
                        if not wrong.mid_batch:
                            await wrong.send_json({"type": "received", "count": wrong.messages})
                except (AssertionError, ConnectionClosed):  # nothing more for now, or closed
                    wrong_code = wrong.close_code
        assert events == [(n + 1, n) for n in range(1000)]
        assert good.batches and good.close_code is None
        assert wrong_code == 4409, wrong_code
    assert "is slow" in server.log()
