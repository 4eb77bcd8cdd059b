"""The WebSocket endpoint (``realtime.websocket``) end to end, against real daphne processes.

Every test talks to ``/realtime/ws/`` of a daphne subprocess over 127.0.0.1; events are
published from this process (``realtime.apublish``), which shares the test database and the
Redis channel layer with the server, or from a ``manage.py`` subprocess.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from websockets.exceptions import InvalidStatus

import realtime
from realtime.models import Event, Stream
from realtime.storage import store
from tests.servers import Server, WSClient, arun_manage, settings_env

WS_PATH = "/realtime/ws/"

ServerFactory = Callable[..., Server]


# --- helpers ----------------------------------------------------------------------------


def start(
    daphne_server: ServerFactory,
    overrides: dict[str, Any] | None = None,
    **env: str,
) -> Server:
    """A daphne process with ``REALTIME`` ``overrides`` (tests.settings) and extra ``env``."""
    return daphne_server(settings_env(overrides, **env))


async def connect(server: Server) -> tuple[WSClient, dict[str, Any]]:
    """A connected client and the ``welcome`` frame it received first."""
    client = await WSClient(server.ws_url + WS_PATH).connect()
    welcome = await client.recv_json()
    assert welcome["type"] == "welcome", welcome
    return client, welcome


async def subscribe(client: WSClient, stream: str, **fields: Any) -> dict[str, Any]:
    await client.send_json({"type": "subscribe", "stream": stream, **fields})
    frame = await client.recv_json()
    assert frame["type"] == "subscribed", frame
    return frame


async def assert_alive(client: WSClient, frame_id: str = "alive") -> None:
    """The connection still answers: a ping gets its pong as the very next frame."""
    await client.send_json({"type": "ping", "id": frame_id})
    assert await client.recv_json() == {"type": "pong", "id": frame_id}


async def error_for(client: WSClient, frame: Any) -> tuple[str, Any]:
    """Send ``frame`` (JSON-encoded unless str/bytes); the (code, id) of the error it gets."""
    if isinstance(frame, str | bytes):
        await client.send_raw(frame)
    else:
        await client.send_json(frame)
    reply = await client.recv_json()
    assert reply["type"] == "error", reply
    assert set(reply) >= {"type", "id", "code", "message"}, reply
    assert isinstance(reply["message"], str) and reply["message"], reply
    await assert_alive(client)
    return reply["code"], reply["id"]


def events_of(stream: str) -> int:
    return Event.objects.filter(stream__name=stream).count()


count_events = sync_to_async(events_of)


@sync_to_async
def stream_row(name: str) -> Stream:
    return Stream.objects.get(name=name)


async def publish_many(stream: str, count: int) -> list[int]:
    seqs = []
    for n in range(1, count + 1):
        stored = await realtime.apublish(stream, "t.e", {"n": n})
        seqs.append(stored.seq)
    return seqs


async def seqs_until(client: WSClient, stream: str, last: int, timeout: float = 5) -> list[int]:
    """The seqs of ``stream``'s events received up to and including seq ``last``."""
    seqs: list[int] = []
    while not seqs or seqs[-1] < last:
        frame = await client.recv_json(timeout=timeout)
        assert frame["type"] == "event" and frame["stream"] == stream, frame
        seqs.append(frame["seq"])
    return seqs


# --- connection lifecycle ---------------------------------------------------------------


async def test_welcome_is_the_first_frame(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, REALTIME_HEARTBEAT_INTERVAL="7")
    client, welcome = await connect(server)
    async with client:
        # Fields may be added (docs/protocol.md: clients ignore unknown ones).
        assert set(welcome) >= {"type", "connection_id", "protocol", "heartbeat"}
        assert isinstance(welcome["connection_id"], str) and welcome["connection_id"]
        assert welcome["protocol"] == 1
        assert welcome["heartbeat"] == 7
        other, second = await connect(server)
        async with other:
            assert second["connection_id"] != welcome["connection_id"]


async def test_subscribe_then_receive_a_published_event(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        await client.send_json({"type": "subscribe", "id": "s1", "stream": "public:x"})
        subscribed = await client.recv_json()
        # Nobody published to it yet: nothing is stored, and the epoch is the one the
        # first publish will give the stream (docs/protocol.md).
        assert not await sync_to_async(Stream.objects.filter(name="public:x").exists)()
        assert subscribed == {
            "type": "subscribed",
            "id": "s1",
            "stream": "public:x",
            "epoch": (await sync_to_async(store.position)("public:x")).epoch,
            "seq": 0,
            "recovered": True,
        }
        assert isinstance(subscribed["epoch"], str) and subscribed["epoch"]

        result = await arun_manage("realtime_publish", "public:x", "t.e", '{"n": 1}')
        assert "public:x#1" in result.stdout
        event = await client.recv_json()
        assert set(event) >= {"type", "stream", "seq", "event", "data", "ts"}
        assert event["type"] == "event"
        assert (event["stream"], event["seq"], event["event"], event["data"]) == (
            "public:x",
            1,
            "t.e",
            {"n": 1},
        )
        assert event["ts"].endswith("Z") and len(event["ts"]) == len("2026-01-01T00:00:00.000Z")

        stored = await realtime.apublish("public:x", "t.f", [1, "two", None])
        assert stored.seq == 2
        event = await client.recv_json()
        assert (event["seq"], event["event"], event["data"]) == (2, "t.f", [1, "two", None])


async def test_subscribed_reports_the_head_of_an_existing_stream(
    daphne_server: ServerFactory,
) -> None:
    server = start(daphne_server)
    await publish_many("public:x", 3)
    async with (await connect(server))[0] as client:
        subscribed = await subscribe(client, "public:x", id=9)
        assert (subscribed["id"], subscribed["seq"], subscribed["recovered"]) == (9, 3, True)
        # No ``since``: live only, nothing replayed; the next event is the next live one.
        await realtime.apublish("public:x", "t.e", {"n": 4})
        event = await client.recv_json()
        assert (event["type"], event["seq"], event["data"]) == ("event", 4, {"n": 4})


async def test_unsubscribe_stops_delivery(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        await subscribe(client, "public:x")
        await subscribe(client, "public:y")
        await client.send_json({"type": "unsubscribe", "id": "u1", "stream": "public:x"})
        assert await client.recv_json() == {
            "type": "unsubscribed",
            "id": "u1",
            "stream": "public:x",
        }
        # Both publishes travel the same path in order: had the first been delivered it
        # would arrive before the second.
        await realtime.apublish("public:x", "t.e", {"n": "x"})
        await realtime.apublish("public:y", "t.e", {"n": "y"})
        event = await client.recv_json()
        assert (event["stream"], event["data"]) == ("public:y", {"n": "y"})
        await assert_alive(client)

        # Subscribing again works, and not being subscribed any more is an error.
        assert (await error_for(client, {"type": "unsubscribe", "id": 2, "stream": "public:x"}))[
            0
        ] == "not_subscribed"
        resubscribed = await subscribe(client, "public:x")
        assert resubscribed["seq"] == 1
        await realtime.apublish("public:x", "t.e", {"n": "again"})
        event = await client.recv_json()
        assert (event["stream"], event["seq"]) == ("public:x", 2)


async def test_unsubscribe_without_id_replies_with_null_id(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        await subscribe(client, "public:x")
        await client.send_json({"type": "unsubscribe", "stream": "public:x"})
        assert await client.recv_json() == {
            "type": "unsubscribed",
            "id": None,
            "stream": "public:x",
        }


async def test_subscription_state_errors(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        not_subscribed = {"type": "unsubscribe", "id": "n1", "stream": "public:nope"}
        assert await error_for(client, not_subscribed) == ("not_subscribed", "n1")
        # A name that could never be subscribed is simply not subscribed.
        invalid = {"type": "unsubscribe", "id": "n2", "stream": "not a stream!"}
        assert await error_for(client, invalid) == ("not_subscribed", "n2")
        await subscribe(client, "public:x")
        again = {"type": "subscribe", "id": "a1", "stream": "public:x"}
        assert await error_for(client, again) == ("already_subscribed", "a1")
        # The first subscription is untouched by the refused second one.
        await realtime.apublish("public:x", "t.e", None)
        event = await client.recv_json()
        assert (event["type"], event["seq"], event["data"]) == ("event", 1, None)


async def test_ping_gets_pong(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        for frame_id in ("p1", 42, 0, ""):
            await client.send_json({"type": "ping", "id": frame_id})
            assert await client.recv_json() == {"type": "pong", "id": frame_id}
        await client.send_json({"type": "ping"})
        assert await client.recv_json() == {"type": "pong"}


# --- errors -----------------------------------------------------------------------------


async def test_malformed_json(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        assert await error_for(client, "not json") == ("malformed_json", None)
        assert await error_for(client, '{"type": "ping"') == ("malformed_json", None)
        assert await error_for(client, "") == ("malformed_json", None)


async def test_non_standard_json_constants_are_malformed(daphne_server: ServerFactory) -> None:
    """NaN and Infinity are not JSON (RFC 8259); Python's json module accepts them."""
    server = start(daphne_server, {"POLICY": "realtime.policy.PublicPolicy"})
    async with (await connect(server))[0] as client:
        await subscribe(client, "public:x")
        results = []
        for constant in ("NaN", "Infinity", "-Infinity"):
            for ephemeral in ("false", "true"):
                text = (
                    '{"type": "publish", "id": "p", "stream": "public:x", "event": "t.e", '
                    f'"ephemeral": {ephemeral}, "data": {{"x": {constant}}}}}'
                )
                # An ephemeral one would otherwise reach subscribers as text that
                # JSON.parse() rejects.
                await client.send_raw(text)
                reply = await client.recv_json()
                results.append((reply["type"], reply.get("code"), reply.get("id")))
                await client.send_json({"type": "ping", "id": "sync"})
                await client.recv_until(lambda f: f["type"] == "pong" and f["id"] == "sync")
        assert results == [("error", "malformed_json", None)] * 6
        assert await count_events("public:x") == 0


async def test_invalid_frame(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        cases: list[Any] = [
            [],
            ["type", "ping"],
            "42",
            '"ping"',
            "null",
            {},
            {"type": 1},
            {"type": None},
            {"type": "subscribe"},
            {"type": "subscribe", "stream": 5},
            {"type": "subscribe", "stream": "public:x", "since": -1},
            {"type": "subscribe", "stream": "public:x", "since": True},
            {"type": "subscribe", "stream": "public:x", "since": "3"},
            {"type": "subscribe", "stream": "public:x", "since": 1.5},
            {"type": "subscribe", "stream": "public:x", "epoch": 5},
            {"type": "subscribe", "stream": "public:x", "epoch": "e" * 65},
            {"type": "unsubscribe"},
            {"type": "publish", "stream": "public:x"},
            {"type": "publish", "stream": "public:x", "event": 5},
            {"type": "publish", "stream": "public:x", "event": "t.e", "ephemeral": "yes"},
            # An id that is not an id cannot be echoed.
            {"type": "ping", "id": {"a": 1}},
            {"type": "ping", "id": [1]},
            {"type": "ping", "id": True},
            {"type": "ping", "id": 1.5},
            {"type": "ping", "id": "i" * 65},
        ]
        results = [await error_for(client, case) for case in cases]
        assert results == [("invalid_frame", None)] * len(cases)


async def test_frame_validation_errors_echo_the_frame_id(daphne_server: ServerFactory) -> None:
    """An error about a frame that carried a valid ``id`` names that id, whatever the error."""
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"type": "subscribe", "id": "f1"}, "invalid_frame"),
            ({"type": "subscribe", "id": "f2", "stream": "public:x", "since": -1}, "invalid_frame"),
            (
                {"type": "subscribe", "id": "f3", "stream": "public:x", "since": True},
                "invalid_frame",
            ),
            (
                {"type": "subscribe", "id": "f4", "stream": "public:x", "since": "1"},
                "invalid_frame",
            ),
            ({"type": "publish", "id": 5, "stream": "public:x"}, "invalid_frame"),
            ({"type": "nope", "id": "f6"}, "unknown_type"),
        ]
        results = [await error_for(client, frame) for frame, _ in cases]
        assert results == [(code, frame["id"]) for frame, code in cases]


async def test_falsy_frame_ids_are_echoed(daphne_server: ServerFactory) -> None:
    """0 and "" are ids like any other: errors carry them back."""
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        results = []
        for frame_id in (0, ""):
            frames: list[dict[str, Any]] = [
                {"type": "subscribe", "id": frame_id, "stream": "private:x"},
                {"type": "subscribe", "id": frame_id, "stream": "bad name"},
                {"type": "unsubscribe", "id": frame_id, "stream": "public:x"},
                {"type": "publish", "id": frame_id, "stream": "public:x", "event": "t.e"},
                {"type": "subscribe", "id": frame_id},
            ]
            results += [await error_for(client, frame) for frame in frames]
        codes = ["forbidden", "invalid_stream", "not_subscribed", "forbidden", "invalid_frame"]
        assert results == [(code, 0) for code in codes] + [(code, "") for code in codes]


async def test_unknown_type(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        for kind in ("nope", "event", "welcome", "PING", ""):
            assert await error_for(client, {"type": kind}) == ("unknown_type", None)


async def test_binary_frames_are_unsupported(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        assert await error_for(client, b'{"type": "ping"}') == ("unsupported_frame", None)
        assert await error_for(client, b"\xff\x00") == ("unsupported_frame", None)


async def test_frame_too_large(daphne_server: ServerFactory) -> None:
    limit = 100
    server = start(daphne_server, {"MAX_FRAME_SIZE": limit})

    def ping(pad: str) -> str:
        return json.dumps({"type": "ping", "id": "big", "pad": pad}, ensure_ascii=False)

    base = len(ping("").encode())
    async with (await connect(server))[0] as client:
        # Exactly at the limit: accepted.
        await client.send_raw(ping("x" * (limit - base)))
        assert await client.recv_json() == {"type": "pong", "id": "big"}
        # One byte over: refused, unparsed.
        assert await error_for(client, ping("x" * (limit - base + 1))) == (
            "frame_too_large",
            None,
        )
        # Under the limit in characters, over it in UTF-8 bytes.
        wide = ping("é" * (limit - base))
        assert len(wide) <= limit < len(wide.encode())
        assert await error_for(client, wide) == ("frame_too_large", None)


async def test_invalid_stream(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        names = [
            "",
            "public:a b",
            "public:x\n",
            "public:é",
            ":public",
            "_x",
            "public:" + "a" * 194,  # 201 characters
        ]
        results = [
            await error_for(client, {"type": "subscribe", "id": f"i{n}", "stream": name})
            for n, name in enumerate(names)
        ]
        assert results == [("invalid_stream", f"i{n}") for n in range(len(names))]
        # The longest allowed name (200 characters) is fine.
        subscribed = await subscribe(client, "public:" + "a" * 193, id="long")
        assert subscribed["id"] == "long"


async def test_forbidden(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (await connect(server))[0] as client:
        for n, stream in enumerate(["private:x", "x", "Public:x", "publicx"], start=1):
            frame = {"type": "subscribe", "id": n, "stream": stream}
            assert await error_for(client, frame) == ("forbidden", n)
        # The default policy lets no client publish, not even on public streams.
        publish = {"type": "publish", "id": "p", "stream": "public:x", "event": "t.e"}
        assert await error_for(client, publish) == ("forbidden", "p")
    assert await count_events("public:x") == 0


async def test_too_many_subscriptions(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, {"MAX_SUBSCRIPTIONS": 2})
    async with (await connect(server))[0] as client:
        await subscribe(client, "public:a")
        await subscribe(client, "public:b")
        third = {"type": "subscribe", "id": "t", "stream": "public:c"}
        assert await error_for(client, third) == ("too_many_subscriptions", "t")
        # Leaving one makes room again.
        await client.send_json({"type": "unsubscribe", "stream": "public:a"})
        assert (await client.recv_json())["type"] == "unsubscribed"
        subscribed = await subscribe(client, "public:c", id="t2")
        assert (subscribed["stream"], subscribed["id"]) == ("public:c", "t2")


# --- client publishing ------------------------------------------------------------------

PUBLIC_POLICY = {"POLICY": "realtime.policy.PublicPolicy"}


async def test_client_publish_is_acked_and_delivered(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, PUBLIC_POLICY)
    async with (await connect(server))[0] as subscriber, (await connect(server))[0] as publisher:
        await subscribe(subscriber, "public:x")
        frame = {
            "type": "publish",
            "id": "m1",
            "stream": "public:x",
            "event": "chat.message",
            "data": {"text": "hi", "n": [1, 2]},
        }
        await publisher.send_json(frame)
        assert await publisher.recv_json() == {"type": "ack", "id": "m1", "seq": 1}
        event = await subscriber.recv_json()
        assert (event["type"], event["stream"], event["seq"], event["event"], event["data"]) == (
            "event",
            "public:x",
            1,
            "chat.message",
            {"text": "hi", "n": [1, 2]},
        )
        # Without ``data`` the event's data is null.
        await publisher.send_json({"type": "publish", "stream": "public:x", "event": "t.e"})
        assert await publisher.recv_json() == {"type": "ack", "id": None, "seq": 2}
        event = await subscriber.recv_json()
        assert (event["seq"], event["data"]) == (2, None)

    stored = await sync_to_async(
        lambda: list(
            Event.objects.filter(stream__name="public:x").values_list("seq", "event", "data")
        )
    )()
    assert stored == [(1, "chat.message", {"text": "hi", "n": [1, 2]}), (2, "t.e", None)]


async def test_client_publish_policy_still_guards_streams(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, PUBLIC_POLICY)
    async with (await connect(server))[0] as client:
        frame = {"type": "publish", "id": "p", "stream": "private:x", "event": "t.e"}
        assert await error_for(client, frame) == ("forbidden", "p")
        frame = {"type": "publish", "id": "q", "stream": "public:a b", "event": "t.e"}
        assert await error_for(client, frame) == ("invalid_stream", "q")
    assert await count_events("private:x") == 0


async def test_client_publish_invalid_event_type(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, PUBLIC_POLICY)
    async with (await connect(server))[0] as client:
        events = ["realtime.x", "presence.join", "realtime.subscribed", "bad event", "", "x" * 101]
        results = [
            await error_for(
                client,
                {"type": "publish", "id": f"e{n}", "stream": "public:x", "event": event},
            )
            for n, event in enumerate(events)
        ]
        assert results == [("invalid_event", f"e{n}") for n in range(len(events))]
    assert await count_events("public:x") == 0


async def test_client_publish_data_size_limit(daphne_server: ServerFactory) -> None:
    limit = 50
    server = start(daphne_server, {**PUBLIC_POLICY, "MAX_EVENT_SIZE": limit})
    overhead = len('{"s":""}')
    async with (await connect(server))[0] as client:
        too_big = {
            "type": "publish",
            "id": "big",
            "stream": "public:x",
            "event": "t.e",
            "data": {"s": "x" * (limit - overhead + 1)},
        }
        assert await error_for(client, too_big) == ("invalid_event", "big")
        assert await count_events("public:x") == 0
        # Exactly at the limit (as compact JSON): stored.
        await client.send_json({**too_big, "id": "fits", "data": {"s": "x" * (limit - overhead)}})
        assert await client.recv_json() == {"type": "ack", "id": "fits", "seq": 1}
    assert await count_events("public:x") == 1


async def test_client_publish_ephemeral(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, PUBLIC_POLICY)
    async with (await connect(server))[0] as subscriber, (await connect(server))[0] as publisher:
        await subscribe(subscriber, "public:x")
        frame = {
            "type": "publish",
            "id": "e",
            "stream": "public:x",
            "event": "cursor.moved",
            "data": {"x": 3},
            "ephemeral": True,
        }
        await publisher.send_json(frame)
        assert await publisher.recv_json() == {"type": "ack", "id": "e", "seq": None}
        event = await subscriber.recv_json()
        assert set(event) >= {"type", "stream", "event", "data", "ts"}
        assert "seq" not in event
        assert (event["type"], event["stream"], event["event"], event["data"]) == (
            "event",
            "public:x",
            "cursor.moved",
            {"x": 3},
        )
        assert await count_events("public:x") == 0
        # An ephemeral event takes no seq: the next stored one is still number 1.
        await publisher.send_json({**frame, "id": "s", "ephemeral": False})
        assert await publisher.recv_json() == {"type": "ack", "id": "s", "seq": 1}
        event = await subscriber.recv_json()
        assert event["seq"] == 1
    assert await count_events("public:x") == 1


# --- heartbeat --------------------------------------------------------------------------


async def test_silent_client_is_closed_after_heartbeat_timeout(
    daphne_server: ServerFactory,
) -> None:
    server = start(daphne_server, REALTIME_HEARTBEAT_TIMEOUT="1")
    client, _ = await connect(server)
    began = time.monotonic()
    code = await client.wait_closed(timeout=3)
    assert code == 4408
    assert 0.8 <= time.monotonic() - began <= 3


async def test_pinging_client_stays_open(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, REALTIME_HEARTBEAT_TIMEOUT="1")
    client, _ = await connect(server)
    async with client:
        began = time.monotonic()
        n = 0
        while time.monotonic() - began < 1.5:
            await asyncio.sleep(0.3)
            n += 1
            await client.send_json({"type": "ping", "id": n})
            assert await client.recv_json(timeout=2) == {"type": "pong", "id": n}
        # Any frame counts, even one that is refused.
        while time.monotonic() - began < 3:
            await asyncio.sleep(0.3)
            await client.send_raw("not json")
            assert (await client.recv_json(timeout=2))["code"] == "malformed_json"
        assert client.close_code is None
        # Once it falls silent, the timeout applies again.
        assert await client.wait_closed(timeout=3) == 4408


# --- origin -----------------------------------------------------------------------------


async def test_foreign_origin_is_refused(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    with pytest.raises(InvalidStatus) as info:
        await WSClient(server.ws_url + WS_PATH, origin="http://evil.example").connect()
    assert info.value.response.status_code == 403
    # An allowed host's origin is accepted.
    client = await WSClient(server.ws_url + WS_PATH, origin="http://localhost").connect()
    async with client:
        assert (await client.recv_json())["type"] == "welcome"


# --- history and resume -----------------------------------------------------------------


async def test_since_replays_stored_events_in_order(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    assert await publish_many("public:h", 5) == [1, 2, 3, 4, 5]
    row = await stream_row("public:h")
    async with (await connect(server))[0] as client:
        subscribed = await subscribe(client, "public:h", id="h", since=0)
        assert subscribed == {
            "type": "subscribed",
            "id": "h",
            "stream": "public:h",
            "epoch": row.epoch,
            "seq": 5,
            "recovered": True,
        }
        frames = [await client.recv_json() for _ in range(5)]
        assert [(f["type"], f["seq"], f["data"]) for f in frames] == [
            ("event", n, {"n": n}) for n in range(1, 6)
        ]
        # Then live, without a gap or a duplicate.
        await realtime.apublish("public:h", "t.e", {"n": 6})
        assert (await client.recv_json())["seq"] == 6

    async with (await connect(server))[0] as client:
        subscribed = await subscribe(client, "public:h", since=3, epoch=row.epoch)
        assert (subscribed["seq"], subscribed["recovered"]) == (6, True)
        assert await seqs_until(client, "public:h", 6) == [4, 5, 6]
        await assert_alive(client)

    async with (await connect(server))[0] as client:
        # Caught up already: nothing to replay.
        subscribed = await subscribe(client, "public:h", since=6)
        assert (subscribed["seq"], subscribed["recovered"]) == (6, True)
        await assert_alive(client)

    async with (await connect(server))[0] as client:
        # Pipelined: the pong comes after the subscribed frame; replayed events may come on
        # either side of it, but in order.
        await client.send_json({"type": "subscribe", "id": "s", "stream": "public:h", "since": 4})
        await client.send_json({"type": "ping", "id": "p"})
        frames = [await client.recv_json() for _ in range(4)]
        assert frames[0]["type"] == "subscribed"
        assert {"type": "pong", "id": "p"} in frames[1:]
        assert [f["seq"] for f in frames if f["type"] == "event"] == [5, 6]


async def test_unrecoverable_positions_get_the_retained_history(
    daphne_server: ServerFactory, settings: Any
) -> None:
    # Retention is applied by the publisher (this process): keep the last 3 events.
    settings.REALTIME = {**settings.REALTIME, "RETENTION": {"public:*": {"max_events": 3}}}
    server = start(daphne_server)
    await publish_many("public:h", 5)
    row = await stream_row("public:h")
    assert (row.last_seq, row.trimmed_seq) == (5, 2)

    cases: list[tuple[dict[str, Any], bool]] = [
        ({"since": 99}, False),  # beyond the head
        ({"since": 6}, False),
        ({"since": 3, "epoch": "not-the-epoch"}, False),  # the stream was reset since
        ({"since": 0, "epoch": "not-the-epoch"}, False),
        ({"since": 1}, False),  # events 2 and 1 were deleted by retention
        ({"since": 2}, True),  # everything after 2 is still there
        ({"since": 2, "epoch": row.epoch}, True),
    ]
    results = []
    for fields, _ in cases:
        async with (await connect(server))[0] as client:
            subscribed = await subscribe(client, "public:h", **fields)
            assert (subscribed["seq"], subscribed["epoch"]) == (5, row.epoch)
            replayed = await seqs_until(client, "public:h", 5)
            await assert_alive(client)
            results.append((subscribed["recovered"], replayed))
    assert results == [(recovered, [3, 4, 5]) for _, recovered in cases]
