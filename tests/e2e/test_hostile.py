"""Hostile input, thrown at a real server by Hypothesis.

Every frame gets a documented answer (an ``error`` frame with a stable code, or the normal
reply when the frame happens to be valid), the connection keeps working, another client keeps
receiving, and no stored event changes. Resume cursors and stream names get a 4xx, never a 5xx.
What the parser answers to each payload is fuzzed far more widely in process, against the
schemas (``tests/unit/test_parsing.py``); here fewer examples show the server around it holds.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

import realtime
from realtime.models import Event
from realtime.protocol import ERROR_CODES, encode_cursor
from tests.servers import WSClient
from tests.strategies import client_payloads, names

WS = "/realtime/ws/"
HOSTILE = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
REPLIES = {"pong", "subscribed", "unsubscribed", "ack", "error", "event", "presence.state"}


@pytest.fixture
def arena(daphne_server):
    """A server, a victim subscribed to ``public:h``, and the events stored before the attack."""
    server = daphne_server({"REALTIME_TEST_OVERRIDES": "{}"})
    loop = asyncio.new_event_loop()
    for n in range(3):
        realtime.publish("public:h", "before", {"n": n})
    before = list(Event.objects.order_by("pk").values_list("pk", "seq", "event", "data"))
    victim = WSClient(server.ws_url + WS)

    async def open_victim() -> None:
        await victim.connect()
        await victim.recv_until(lambda f: f["type"] == "welcome")
        await victim.send_json({"type": "subscribe", "stream": "public:h", "since": 3})
        await victim.recv_until(lambda f: f["type"] == "subscribed")

    loop.run_until_complete(open_victim())
    yield server, loop, victim, before
    loop.run_until_complete(victim.close())
    loop.close()


def assert_unharmed(
    server: Any, loop: asyncio.AbstractEventLoop, victim: WSClient, before: list
) -> None:
    after = list(Event.objects.order_by("pk").values_list("pk", "seq", "event", "data"))
    assert after == before, "stored events changed"
    event = realtime.publish("public:h", "after", {"ok": True})
    before.append((event.pk, event.seq, event.event, event.data))
    frame = loop.run_until_complete(victim.recv_until(lambda f: f["type"] == "event"))
    assert frame["seq"] == event.seq, "the other client stopped receiving"


@settings(HOSTILE, max_examples=40)
@given(payload=client_payloads)
@example(payload="[" * 50_000 + "]" * 50_000)
@example(payload='{"type": "ping", "id": ' + "[" * 1000 + "]" * 1000 + "}")
@example(payload="x" * (64 * 1024 + 1))
@example(payload=b"\x00" * 10)
@example(payload='{"type": "publish", "stream": "public:h", "event": "x", "data": 1}')
@example(payload='{"type": "subscribe", "stream": "public:h", "since": NaN}')
def test_random_frames_get_documented_answers(arena, payload):
    server, loop, victim, before = arena

    async def attack() -> None:
        async with WSClient(server.ws_url + WS) as ws:
            await ws.recv_until(lambda f: f["type"] == "welcome")
            await ws.send_raw(payload)
            await ws.send_json({"type": "ping", "id": "after"})
            replies = []
            while True:
                frame = await ws.recv_json(timeout=5)
                if frame.get("type") == "pong" and frame.get("id") == "after":
                    break
                replies.append(frame)
            for frame in replies:
                assert frame["type"] in REPLIES, frame
                if frame["type"] == "error":
                    assert frame["code"] in ERROR_CODES, frame
                    assert isinstance(frame["message"], str) and frame["message"]

    loop.run_until_complete(attack())
    assert_unharmed(server, loop, victim, before)


def test_invalid_utf8_fails_the_connection_and_others_carry_on(arena):
    """Daphne's WebSocket layer (autobahn) fails such a connection itself: 1007, or a drop."""
    server, loop, victim, before = arena

    async def attack() -> int | None:
        async with WSClient(server.ws_url + WS) as ws:
            await ws.recv_until(lambda f: f["type"] == "welcome")
            await ws.connection.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
            with pytest.raises((AssertionError, ConnectionClosed)):
                await ws.recv_json(timeout=5)
            return await ws.wait_closed()

    assert loop.run_until_complete(attack()) in (1006, 1007)
    assert_unharmed(server, loop, victim, before)


cursor_text = st.one_of(
    # What an HTTP client can send: no control characters, no surrounding blanks.
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=200).map(
        str.strip
    ),
    st.builds(
        lambda entries: encode_cursor({s: (e, n) for s, e, n in entries}),
        st.lists(st.tuples(names, st.text(max_size=20), st.integers(0, 2**40)), max_size=4),
    ),
    st.just("1.W1siYSIsImUiLC0xXV0"),
)


@HOSTILE
@given(cursor=cursor_text, streams=st.lists(names, min_size=0, max_size=3))
def test_resume_cursors_and_stream_names_never_break_sse(arena, cursor, streams):
    server, loop, victim, before = arena

    async def attack() -> None:
        params = [("stream", s) for s in streams] or [("stream", "public:h")]
        async with (
            httpx.AsyncClient(timeout=5) as http,
            http.stream(
                "GET",
                f"{server.http_url}/realtime/sse/",
                params=params,
                headers={"Last-Event-ID": cursor.encode("latin-1")} if cursor else {},
            ) as response,
        ):
            assert response.status_code in (200, 400, 401, 403), response.status_code
            if response.status_code != 200:
                raw = await response.aread()
                if not response.headers.get("content-type", "").startswith("application/json"):
                    # daphne itself refuses header bytes HTTP does not allow, before the app.
                    assert response.status_code == 400 and b"Invalid header value" in raw
                    return
                assert json.loads(raw)["error"]["code"] in ERROR_CODES
                return
            async for line in response.aiter_lines():
                if line.startswith("event: realtime.welcome"):
                    return

    loop.run_until_complete(attack())
    assert_unharmed(server, loop, victim, before)
