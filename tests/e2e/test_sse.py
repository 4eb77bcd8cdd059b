"""The SSE endpoint (``realtime.sse``) end to end, against real daphne processes.

Streams are read with ``open_sse`` (an httpx client that parses the event stream as it
arrives); events are published from this process, which shares the test database and the
Redis channel layer with the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
from asgiref.sync import sync_to_async

import realtime
from realtime.protocol import decode_cursor, encode_cursor
from realtime.storage import store
from tests.servers import Server, SSEStream, WSClient, open_sse, settings_env

SSE_PATH = "/realtime/sse/"

ServerFactory = Callable[..., Server]


# --- helpers ----------------------------------------------------------------------------


def start(
    daphne_server: ServerFactory,
    overrides: dict[str, Any] | None = None,
    **env: str,
) -> Server:
    """A daphne process with ``REALTIME`` ``overrides`` (tests.settings) and extra ``env``."""
    return daphne_server(settings_env(overrides, **env))


def url(server: Server, *streams: str, **params: str) -> str:
    """The SSE URL for ``streams`` (a repeated ``stream`` parameter) and other parameters."""
    query = urlencode([*(("stream", s) for s in streams), *params.items()])
    return f"{server.http_url}{SSE_PATH}?{query}"


@contextlib.asynccontextmanager
async def opened(target: str, **kwargs: Any) -> AsyncIterator[SSEStream]:
    """``open_sse`` for a stream that must start: 200, then ``realtime.welcome`` consumed."""
    async with open_sse(target, **kwargs) as sse:
        assert sse.status_code == 200, sse.status_code
        welcome = await sse.next_event()
        assert welcome["event"] == "realtime.welcome", welcome
        yield sse


@sync_to_async
def epoch_of(name: str) -> str:
    """The stream's epoch, stored or (never published to) the one subscribers are told."""
    return store.position(name).epoch


async def subscribed_events(sse: SSEStream, count: int) -> dict[str, dict[str, Any]]:
    """The next ``count`` events, all ``realtime.subscribed``, by stream."""
    found = {}
    for _ in range(count):
        event = await sse.next_event()
        assert event["event"] == "realtime.subscribed", event
        found[event["data"]["stream"]] = event
    assert len(found) == count, found
    return found


async def publish(stream: str, *numbers: int) -> None:
    for n in numbers:
        await realtime.apublish(stream, "t.e", {"n": n})


def summary(event: dict[str, Any]) -> tuple[str, str, int, Any]:
    """(event name, stream, seq, data) of an SSE event carrying an ``event`` envelope."""
    data = event["data"]
    assert data["type"] == "event", event
    assert data["event"] == event["event"], event
    return event["event"], data["stream"], data["seq"], data["data"]


async def error_response(target: str, **kwargs: Any) -> tuple[int, str, httpx.Response]:
    """GET (or ``method=``) ``target``; the status, the error code and the response."""
    method = kwargs.pop("method", "GET")
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.request(method, target, **kwargs)
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return response.status_code, body["error"]["code"], response


# --- the response -----------------------------------------------------------------------


async def test_response_headers_welcome_and_subscribed_events(
    daphne_server: ServerFactory,
) -> None:
    server = start(daphne_server, REALTIME_HEARTBEAT_INTERVAL="9")
    async with open_sse(url(server, "public:a", "public:b")) as sse:
        assert sse.status_code == 200
        assert sse.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "no-cache" in sse.headers["cache-control"]
        assert sse.headers["x-accel-buffering"] == "no"
        assert "content-length" not in sse.headers
        assert "content-encoding" not in sse.headers

        welcome = await sse.next_event()
        assert welcome["event"] == "realtime.welcome"
        assert welcome["retry"] == 2000
        assert welcome["id"] is None  # not a position: the browser keeps its Last-Event-ID
        data = welcome["data"]
        assert set(data) >= {"type", "connection_id", "protocol", "heartbeat"}
        assert (data["type"], data["protocol"], data["heartbeat"]) == ("welcome", 1, 9)
        assert isinstance(data["connection_id"], str) and data["connection_id"]

        found = await subscribed_events(sse, 2)
        epochs = {name: await epoch_of(name) for name in ("public:a", "public:b")}
        for name, event in found.items():
            assert event["data"] == {
                "type": "subscribed",
                "id": None,
                "stream": name,
                "epoch": epochs[name],
                "seq": 0,
                "recovered": True,
            }
            assert event["id"].startswith("1.")
        # The later cursor holds both streams' positions.
        assert decode_cursor(sse.last_event_id or "") == {
            "public:a": (epochs["public:a"], 0),
            "public:b": (epochs["public:b"], 0),
        }


async def test_stream_starts_with_the_retry_hint(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(5, read=5)) as client,
        client.stream("GET", url(server, "public:a")) as response,
    ):
        assert response.status_code == 200
        text = ""
        async with asyncio.timeout(5):
            async for chunk in response.aiter_text():
                text += chunk
                if "realtime.subscribed" in text:
                    break
    assert text.startswith("retry: 2000\n"), text
    assert text.index("retry:") < text.index("event: realtime.subscribed")


async def test_retry_hint_follows_the_setting(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, {"SSE_RETRY": 750})
    async with (
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", url(server, "public:a")) as response,
    ):
        async with asyncio.timeout(5):
            async for chunk in response.aiter_text():
                assert chunk.startswith("retry: 750\n"), chunk
                break


async def test_events_arrive_while_the_response_is_open(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with opened(url(server, "public:a")) as sse:
        subscribed = await sse.next_event()
        assert subscribed["event"] == "realtime.subscribed"
        epoch = subscribed["data"]["epoch"]
        for n in (1, 2):
            stored = await realtime.apublish("public:a", "chat.message", {"text": f"hi {n}"})
            event = await sse.next_event(timeout=5)
            assert not sse.ended  # delivered as it happened, not when the response ended
            assert event["event"] == "chat.message"
            data = event["data"]
            assert set(data) >= {"type", "stream", "seq", "event", "data", "ts"}
            assert (data["type"], data["stream"], data["seq"], data["event"], data["data"]) == (
                "event",
                "public:a",
                stored.seq,
                "chat.message",
                {"text": f"hi {n}"},
            )
            assert event["id"] == encode_cursor({"public:a": (epoch, n)})


async def test_subscribe_with_existing_history_is_live_only(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    await publish("public:a", 1, 2, 3)
    async with opened(url(server, "public:a")) as sse:
        subscribed = await sse.next_event()
        assert (subscribed["data"]["seq"], subscribed["data"]["recovered"]) == (3, True)
        await publish("public:a", 4)
        assert summary(await sse.next_event()) == ("t.e", "public:a", 4, {"n": 4})


# --- resume -----------------------------------------------------------------------------


async def read_then_leave(
    server: Server, *streams: str, publish_to: list[tuple[str, int]]
) -> list[str]:
    """Subscribe, publish ``publish_to`` while connected, read it all; the event ids seen."""
    ids = []
    async with opened(url(server, *streams)) as sse:
        await subscribed_events(sse, len(streams))
        for stream, n in publish_to:
            await publish(stream, n)
        for stream, n in publish_to:
            event = await sse.next_event()
            assert summary(event) == ("t.e", stream, n, {"n": n})
            ids.append(event["id"])
    return ids


async def test_resume_with_last_event_id_header(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    ids = await read_then_leave(server, "public:a", publish_to=[("public:a", n) for n in (1, 2, 3)])
    await publish("public:a", 4, 5)
    async with opened(url(server, "public:a"), headers={"Last-Event-ID": ids[-1]}) as sse:
        subscribed = await sse.next_event()
        assert subscribed["event"] == "realtime.subscribed"
        assert (subscribed["data"]["seq"], subscribed["data"]["recovered"]) == (5, True)
        missed = [summary(await sse.next_event()) for _ in range(2)]
        assert missed == [("t.e", "public:a", n, {"n": n}) for n in (4, 5)]
        await publish("public:a", 6)
        assert summary(await sse.next_event()) == ("t.e", "public:a", 6, {"n": 6})
        # Nothing else: no duplicates.
        await publish("public:a", 7)
        assert summary(await sse.next_event())[2] == 7


async def test_resume_with_last_event_id_query_parameter(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    ids = await read_then_leave(server, "public:a", publish_to=[("public:a", n) for n in (1, 2)])
    await publish("public:a", 3)
    async with opened(url(server, "public:a", last_event_id=ids[0])) as sse:
        subscribed = await sse.next_event()
        assert (subscribed["data"]["seq"], subscribed["data"]["recovered"]) == (3, True)
        assert [summary(await sse.next_event())[2] for _ in range(2)] == [2, 3]
        await publish("public:a", 4)
        assert summary(await sse.next_event())[2] == 4


async def test_last_event_id_header_wins_over_query_parameter(
    daphne_server: ServerFactory,
) -> None:
    server = start(daphne_server)
    ids = await read_then_leave(server, "public:a", publish_to=[("public:a", n) for n in (1, 2, 3)])
    await publish("public:a", 4)
    stale, newer = ids[0], ids[2]
    async with opened(
        url(server, "public:a", last_event_id=stale), headers={"Last-Event-ID": newer}
    ) as sse:
        subscribed = await sse.next_event()
        assert (subscribed["data"]["seq"], subscribed["data"]["recovered"]) == (4, True)
        await publish("public:a", 5)
        # From the header's position (3): 4, then live 5; never 2 or 3 again.
        assert [summary(await sse.next_event())[2] for _ in range(2)] == [4, 5]


async def test_resume_restores_every_streams_position(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    ids = await read_then_leave(
        server,
        "public:a",
        "public:b",
        publish_to=[("public:a", 1), ("public:b", 1), ("public:a", 2)],
    )
    assert {stream: seq for stream, (_, seq) in decode_cursor(ids[-1]).items()} == {
        "public:a": 2,
        "public:b": 1,
    }
    await publish("public:b", 2, 3)
    await publish("public:a", 3)
    async with opened(
        url(server, "public:a", "public:b"), headers={"Last-Event-ID": ids[-1]}
    ) as sse:
        # Each stream's replay may start before the other stream is subscribed: order is
        # per stream — its ``realtime.subscribed`` first, then its missed events.
        per_stream: dict[str, list[Any]] = {"public:a": [], "public:b": []}
        for _ in range(5):
            event = await sse.next_event()
            data = event["data"]
            if event["event"] == "realtime.subscribed":
                item = ("subscribed", data["seq"], data["recovered"])
            else:
                item = ("event", data["seq"], data["data"])
            per_stream[data["stream"]].append(item)
        assert per_stream == {
            "public:a": [("subscribed", 3, True), ("event", 3, {"n": 3})],
            "public:b": [
                ("subscribed", 3, True),
                ("event", 2, {"n": 2}),
                ("event", 3, {"n": 3}),
            ],
        }
        last = decode_cursor(sse.last_event_id or "")
        assert {stream: seq for stream, (_, seq) in last.items()} == {
            "public:a": 3,
            "public:b": 3,
        }


async def test_a_cursor_from_another_epoch_is_not_recovered(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    await publish("public:a", 1, 2)
    # "" is what a client without a known epoch sends to get all retained history.
    for epoch in ("some-old-epoch", ""):
        cursor = encode_cursor({"public:a": (epoch, 1)})
        async with opened(url(server, "public:a"), headers={"Last-Event-ID": cursor}) as sse:
            subscribed = await sse.next_event()
            assert subscribed["data"]["recovered"] is False
            assert subscribed["data"]["epoch"] == await epoch_of("public:a")
            assert [summary(await sse.next_event())[2] for _ in range(2)] == [1, 2]


async def test_cursor_entries_for_other_streams_are_ignored(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    await publish("public:a", 1, 2)
    epoch = await epoch_of("public:a")
    cursor = encode_cursor({"public:zzz": ("e", 5), "public:a": (epoch, 1)})
    async with opened(url(server, "public:a", last_event_id=cursor)) as sse:
        subscribed = await sse.next_event()
        assert (subscribed["data"]["stream"], subscribed["data"]["recovered"]) == (
            "public:a",
            True,
        )
        event = await sse.next_event()
        assert summary(event)[1:3] == ("public:a", 2)
        assert decode_cursor(event["id"]) == {"public:a": (epoch, 2)}


async def test_ephemeral_events_repeat_the_cursor(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    async with opened(url(server, "public:a")) as sse:
        await sse.next_event()
        await publish("public:a", 1)
        stored = await sse.next_event()
        await realtime.apublish("public:a", "cursor.moved", {"x": 1}, ephemeral=True)
        event = await sse.next_event()
        assert event["event"] == "cursor.moved"
        assert "seq" not in event["data"]
        assert (event["data"]["type"], event["data"]["data"]) == ("event", {"x": 1})
        assert event["id"] == stored["id"]


async def test_a_cursor_the_server_issued_is_accepted_back(daphne_server: ServerFactory) -> None:
    """Many subscriptions with long names, as many as fit one cursor, still resume."""
    server = start(daphne_server)
    streams = [f"public:{n:03d}-" + "s" * 140 for n in range(29)]
    async with opened(url(server, *streams)) as sse:
        assert sse.status_code == 200
        await subscribed_events(sse, len(streams))
        cursor = sse.last_event_id or ""
    assert 6500 < len(cursor) <= 8192  # the worst case (huge seqs) is just under 8192
    raw = base64.urlsafe_b64decode(cursor[2:] + "=" * (-len(cursor[2:]) % 4))
    assert {entry[0] for entry in json.loads(raw)} == set(streams)
    await publish(streams[0], 1)
    async with open_sse(url(server, *streams), headers={"Last-Event-ID": cursor}) as sse:
        assert sse.status_code == 200, f"resuming from a {len(cursor)}-character cursor"
        assert (await sse.next_event())["event"] == "realtime.welcome"
        events = [await sse.next_event() for _ in range(len(streams) + 1)]
    subscribed = [e["data"] for e in events if e["event"] == "realtime.subscribed"]
    assert sorted(d["stream"] for d in subscribed) == sorted(streams)
    assert all(d["recovered"] for d in subscribed)
    missed = [summary(e) for e in events if e["event"] != "realtime.subscribed"]
    assert missed == [("t.e", streams[0], 1, {"n": 1})]


async def test_a_stream_set_whose_cursor_could_not_come_back_is_refused(
    daphne_server: ServerFactory,
) -> None:
    """Browsers send the cursor back in a header, which daphne caps at 16 KiB: a set of
    streams whose cursor could pass 8192 characters is refused before it starts."""
    server = start(daphne_server)
    streams = [f"public:{n:03d}-" + "s" * 179 for n in range(60)]  # 190 characters each
    status, code, response = await error_response(url(server, *streams))
    assert (status, code) == (400, "too_many_subscriptions")
    assert "8192" in response.json()["error"]["message"]


# --- errors -----------------------------------------------------------------------------


async def test_request_errors(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    base = server.http_url + SSE_PATH
    results = [
        (await error_response(base))[:2],
        (await error_response(base + "?other=1"))[:2],
        (await error_response(url(server, "")))[:2],
        (await error_response(url(server, "public:a b")))[:2],
        (await error_response(url(server, "public:" + "a" * 194)))[:2],
        (await error_response(url(server, "public:a", "_bad")))[:2],
        (await error_response(url(server, "private:a")))[:2],
        (await error_response(url(server, "public:a", "private:a")))[:2],
        (await error_response(url(server, "public:a"), headers={"Origin": "http://evil.example"}))[
            :2
        ],
    ]
    assert results == [
        (400, "invalid_frame"),
        (400, "invalid_frame"),
        (400, "invalid_stream"),
        (400, "invalid_stream"),
        (400, "invalid_stream"),
        (400, "invalid_stream"),
        # Anonymous: 401, since signing in might help (403 for a signed-in user, below).
        (401, "forbidden"),
        (401, "forbidden"),
        # A page on another site may not read streams with the user's cookies.
        (403, "forbidden_origin"),
    ]


async def test_forbidden_stream_for_a_signed_in_user(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)

    @sync_to_async
    def token_key() -> str:
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        user = get_user_model().objects.create_user("ada", password="pw-ada")
        return str(Token.objects.create(user=user).key)

    headers = {"Authorization": f"Token {await token_key()}"}
    status, code, _ = await error_response(url(server, "private:a"), headers=headers)
    assert (status, code) == (403, "forbidden")
    status, code, _ = await error_response(url(server, "public:a", "x"), headers=headers)
    assert (status, code) == (403, "forbidden")
    async with opened(url(server, "public:a"), headers=headers) as sse:
        assert (await sse.next_event())["event"] == "realtime.subscribed"


async def test_unauthorized_response_says_how_to_authenticate(
    daphne_server: ServerFactory,
) -> None:
    """RFC 9110 11.6.1: a 401 response must carry a WWW-Authenticate challenge."""
    server = start(daphne_server)
    status, code, response = await error_response(url(server, "private:a"))
    assert (status, code) == (401, "forbidden")
    assert "www-authenticate" in response.headers, dict(response.headers)


async def test_invalid_cursor(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)

    def b64(value: Any) -> str:
        raw = json.dumps(value).encode()
        return "1." + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    cursors = [
        "abc",
        "1.!!!",
        "2." + b64([])[2:],
        b64({"public:a": ["e", 1]}),
        b64("public:a"),
        b64([["public:a", "e"]]),
        b64([["public:a", "e", -1]]),
        b64([["public:a", "e", True]]),
        b64([["public:a", "e", "1"]]),
        b64([["public:a", 1, 1]]),
        "1." + "A" * 9000,
    ]
    statuses = []
    for cursor in cursors:
        by_header = await error_response(url(server, "public:a"), headers={"Last-Event-ID": cursor})
        by_query = await error_response(url(server, "public:a", last_event_id=cursor))
        statuses.append((by_header[:2], by_query[:2]))
    assert statuses == [((400, "invalid_cursor"), (400, "invalid_cursor"))] * len(cursors)


async def test_only_get_is_allowed(daphne_server: ServerFactory) -> None:
    server = start(daphne_server)
    target = url(server, "public:a")
    for method in ("POST", "PUT", "DELETE"):
        status, code, response = await error_response(target, method=method)
        assert (status, code) == (405, "invalid_frame"), method
        # RFC 9110 15.5.6: a 405 response must say which methods are allowed.
        assert response.headers.get("allow") == "GET", (method, dict(response.headers))


async def test_too_many_streams(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, {"MAX_SUBSCRIPTIONS": 2})
    status, code, _ = await error_response(url(server, "public:a", "public:b", "public:c"))
    assert (status, code) == (400, "too_many_subscriptions")
    # A repeated stream counts once; two distinct streams are fine.
    async with opened(url(server, "public:a", "public:b", "public:a")) as sse:
        assert sse.status_code == 200
        found = await subscribed_events(sse, 2)
        assert set(found) == {"public:a", "public:b"}


# --- keep-alive and disconnects ---------------------------------------------------------


async def test_keep_alive_comments(daphne_server: ServerFactory) -> None:
    server = start(daphne_server, REALTIME_HEARTBEAT_INTERVAL="0.5")
    async with open_sse(url(server, "public:a"), include_comments=True) as sse:
        items = []
        async with asyncio.timeout(4):
            while sum(1 for item in items if item.get("comment") == "keep-alive") < 2:
                items.append(await sse.next_event(timeout=2))
        assert items[0]["event"] == "realtime.welcome"
        assert items[0]["data"]["heartbeat"] == 0.5
        assert items[1]["event"] == "realtime.subscribed"
        assert [item for item in items[2:] if "comment" not in item] == []
        # Comments do not get in the way of events.
        await publish("public:a", 1)
        event = await sse.next_event(timeout=3)
        while "comment" in event:
            event = await sse.next_event(timeout=3)
        assert summary(event) == ("t.e", "public:a", 1, {"n": 1})


async def test_client_leaving_mid_stream_does_not_break_the_server(
    daphne_server: ServerFactory,
) -> None:
    server = start(daphne_server)
    for _ in range(3):
        async with opened(url(server, "public:a", "public:b")) as sse:
            await subscribed_events(sse, 2)
            await publish("public:a", 0)
            await sse.next_event()
            await sse.aclose()
    # Events for streams whose subscribers just left.
    await publish("public:a", 0, 0)
    await publish("public:b", 0)
    await asyncio.sleep(0.3)

    async with opened(url(server, "public:a")) as sse:
        assert (await sse.next_event())["data"]["seq"] == 5
        await publish("public:a", 7)
        assert summary(await sse.next_event())[2:] == (6, {"n": 7})
    async with WSClient(server.ws_url + "/realtime/ws/") as ws:
        assert (await ws.recv_json())["type"] == "welcome"
        await ws.send_json({"type": "subscribe", "stream": "public:b"})
        assert (await ws.recv_json())["seq"] == 1
    assert server.running
    assert "Traceback" not in server.log(), server.log()
