"""The JSON Schemas in docs/protocol.md describe what a real server sends and accepts.

Every frame captured here from a live daphne (WebSocket and SSE) is validated against the
schema whose ``title`` is its ``type``; every frame sent is validated too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

import realtime
from tests.servers import WSClient, open_sse, settings_env

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def load_schemas() -> dict[str, dict[str, Any]]:
    blocks = re.findall(r"```json schema\n(.*?)```", DOC.read_text(), flags=re.S)
    schemas = {}
    for block in blocks:
        schema = json.loads(block)
        jsonschema.Draft202012Validator.check_schema(schema)
        schemas[schema["title"]] = schema
    return schemas


SCHEMAS = load_schemas()
CLIENT = {"subscribe", "unsubscribe", "publish", "presence", "ping", "received"}


def check(frame: dict[str, Any]) -> None:
    schema = SCHEMAS.get(frame["type"])
    assert schema is not None, f"docs/protocol.md has no schema for {frame['type']!r}"
    jsonschema.validate(frame, schema, cls=jsonschema.Draft202012Validator)


def test_every_frame_type_has_a_schema():
    server_types = {
        "welcome", "subscribed", "event", "unsubscribed", "ack", "pong", "error",
        "presence.state", "presence.join", "presence.update", "presence.leave", "presence.count",
        "snapshot", "gap", "batch",
    }  # fmt: skip
    assert server_types | CLIENT <= set(SCHEMAS)


async def test_live_frames_match_their_schemas(daphne_server):
    server = daphne_server(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "REALTIME_TEST_OVERRIDES": json.dumps(
                {"POLICY": "realtime.policy.PublicPolicy", "PRESENCE_COUNTS_ONLY": ["public:big"]}
            ),
        }
    )
    sent: list[dict[str, Any]] = []

    async def send(ws: WSClient, frame: dict[str, Any]) -> None:
        sent.append(frame)
        await ws.send_json(frame)

    url = server.ws_url + "/realtime/ws/"
    async with WSClient(url + "?client_id=a") as a, WSClient(url + "?client_id=b") as b:
        await a.recv_until(lambda f: f["type"] == "welcome")
        await b.recv_until(lambda f: f["type"] == "welcome")
        await realtime.apublish("public:s", "seeded", {"n": 0})
        await send(a, {"type": "subscribe", "id": 1, "stream": "public:s", "since": 0,
                       "presence": {"name": "A"}})  # fmt: skip
        await a.recv_until(lambda f: f["type"] == "presence.state")
        await send(b, {"type": "subscribe", "id": "b1", "stream": "public:s", "presence": {}})
        await a.recv_until(lambda f: f["type"] == "presence.join")
        await send(b, {"type": "presence", "id": 2, "stream": "public:s", "meta": {"x": 1}})
        await a.recv_until(lambda f: f["type"] == "presence.update")
        await send(b, {"type": "publish", "id": 3, "stream": "public:s", "event": "m", "data": [1],
                       "key": "k-1"})  # fmt: skip
        await send(b, {"type": "publish", "id": 31, "stream": "public:s", "event": "m", "data": [1],
                       "key": "k-1"})  # fmt: skip
        await b.recv_until(lambda f: f.get("duplicate") is True)
        await send(b, {"type": "received", "count": 5})
        await send(b, {"type": "publish", "id": 4, "stream": "public:s", "event": "c",
                       "data": None, "ephemeral": True})  # fmt: skip
        await a.recv_until(lambda f: f["type"] == "event" and "seq" not in f)
        await send(b, {"type": "presence", "id": 5, "stream": "public:s", "leave": True})
        await a.recv_until(lambda f: f["type"] == "presence.leave")
        await send(b, {"type": "ping", "id": 6})
        await send(b, {"type": "ping"})
        await send(b, {"type": "unsubscribe", "id": 7, "stream": "public:s"})
        await send(b, {"type": "subscribe", "id": 8, "stream": "secret"})
        await send(b, {"type": "subscribe", "stream": "public:big", "presence": {}})
        await b.recv_until(lambda f: f["type"] == "presence.count")
        await b.send_raw("{broken")
        await b.recv_until(lambda f: f.get("code") == "malformed_json")
        await send(b, {"type": "ping", "id": "end"})
        await b.recv_until(lambda f: f.get("id") == "end")
        frames = a.received + a.skipped + b.received + b.skipped
    seen = {f["type"] for f in frames}
    assert seen >= {
        "welcome", "subscribed", "event", "unsubscribed", "ack", "pong", "error",
        "presence.state", "presence.join", "presence.update", "presence.leave", "presence.count",
    }  # fmt: skip
    for frame in frames:
        check(frame)
    for frame in sent:
        check(frame)

    stream_url = f"{server.http_url}/realtime/sse/?stream=public:s&presence=public:s&client_id=c"
    async with open_sse(stream_url) as sse:
        events = [await sse.next_event() for _ in range(4)]
        await sse.aclose()
    names = [e["event"] for e in events]
    assert names[:2] == ["realtime.welcome", "realtime.subscribed"]
    for event in events:  # SSE data is the same JSON as the WebSocket frame
        check(event["data"])


@sync_to_async
def publish_in_one_transaction(stream: str, count: int) -> None:
    """``count`` events of ``stream``, fanned out one by one as the transaction commits."""
    with transaction.atomic():
        for n in range(count):
            realtime.publish(stream, "tick", {"n": n})


async def test_live_batch_frames_match_their_schema(daphne_server):
    server = daphne_server(settings_env({"FLUSH_INTERVAL": 0.05}))
    stream = "public:batches"
    await realtime.apublish_many(stream, [("tick", {"n": n}) for n in range(150)])
    async with WSClient(server.ws_url + "/realtime/ws/?batch=1&client_id=x") as ws:
        welcome = await ws.recv_json()
        assert welcome["type"] == "welcome" and welcome["batch"] is True, welcome
        # A page of history (replay), then live: one publish_many message, then 200 single
        # messages as fast as a commit sends them.
        await ws.send_json({"type": "subscribe", "id": 1, "stream": stream, "since": 0})
        await realtime.apublish_many(stream, [("tick", {"n": n}) for n in range(150, 300)])
        await publish_in_one_transaction(stream, 200)
        events = 0
        while events < 500:
            message = await ws.recv_json()
            if message["type"] == "batch":
                events += sum(f["type"] == "event" for f in message["frames"])
            elif message["type"] == "event":
                events += 1
        await ws.send_json({"type": "ping", "id": "end"})
        await ws.recv_until(
            lambda f: "end" in [f.get("id"), *(g.get("id") for g in f.get("frames", []))]
        )
    batches = [f for f in ws.received if f["type"] == "batch"]
    assert len(batches) >= 2, [f["type"] for f in ws.received]
    for batch in batches:
        check(batch)
        for frame in batch["frames"]:
            assert frame["type"] != "batch"
            check(frame)
    for frame in ws.received:
        check(frame)
    # The schema refuses what no server sends.
    for bad in (
        {"type": "batch", "frames": []},
        {"type": "batch", "frames": [{"type": "batch", "frames": [{"type": "pong"}]}]},
        {"type": "batch", "frames": [{"no": "type"}]},
        {"type": "batch", "frames": ["text"]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            check(bad)


@pytest.mark.parametrize("kind", sorted(CLIENT))
def test_client_schemas_reject_what_the_server_rejects(kind):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": kind, "id": {"no": 1}}, SCHEMAS[kind])
