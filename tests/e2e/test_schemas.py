"""The schema files in ``realtime/protocol/schemas/`` describe what the server sends and accepts.

The files themselves (valid, named, complete), the ``TypedDict``s beside them, every frame the
server's encoders build (called in process), and frames captured from a live daphne (WebSocket
and SSE) together with every frame sent to it, each validated against the schema of its type.
"""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from hypothesis import given
from hypothesis import strategies as st
from referencing import Registry, Resource

import realtime
from realtime.endpoints.sse import SSEConnection
from realtime.endpoints.websocket import WebSocketConnection
from realtime.protocol import (
    CLIENT_TYPES,
    ERROR_CODES,
    SERVER_TYPES,
    batch_frame,
    dumps,
    error_frame,
    event_frame,
    format_ts,
    gap_frame,
    pong_frame,
    presence_ack_frame,
    presence_change_frame,
    presence_count_frame,
    presence_state_frame,
    publish_ack_frame,
    schemas,
    snapshot_frame,
    subscribed_frame,
    types,
    unsubscribed_frame,
)
from tests.servers import WSClient, open_sse, settings_env
from tests.strategies import from_schema, is_valid, json_values

SCHEMA_DIR = Path(schemas.__file__).parent
FILES = sorted(SCHEMA_DIR.rglob("*.json"))


def schema_of(frame: dict[str, Any]) -> dict[str, Any]:
    """The schema of a frame the server sent (or, for client types, one sent to it)."""
    direction = "client" if frame["type"] in CLIENT_TYPES else "server"
    assert frame["type"] in schemas.names(direction), f"no schema for {frame['type']!r}"
    return schemas.resolved(f"{direction}/{frame['type']}")


def check(frame: dict[str, Any]) -> None:
    jsonschema.validate(frame, schema_of(frame), cls=jsonschema.Draft202012Validator)


# --- The files ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SCHEMA_DIR)))
def test_each_file_is_a_draft_2020_12_schema_named_by_its_path(path):
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    name = str(path.relative_to(SCHEMA_DIR)).removesuffix(".json")
    assert schema["$id"] == f"https://realtime.invalid/protocol/1/{name}.json"
    if name != "defs":
        assert schema["title"] == name.split("/")[1] == schema["properties"]["type"]["const"]
        assert "type" in schema["required"]
        assert "$ref" not in json.dumps(schemas.resolved(name))
    for node in _walk(schema.get("properties", {})):
        assert "description" in node or "$ref" in node, (name, node)


def _walk(properties: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for node in properties.values():
        found.append(node)
        found.extend(_walk(node.get("properties", {})))
    return found


def test_the_files_resolve_their_references_for_standard_tools():
    """A validator given the files as they are (a registry by $id) reads them as resolved()."""
    documents = [json.loads(path.read_text()) for path in FILES]
    registry = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in documents
    )
    frame = {"type": "batch", "frames": [{"type": "pong"}, {"type": "gap", "stream": "s",
             "from": 1, "to": 2}]}  # fmt: skip
    validator = jsonschema.Draft202012Validator(schemas.load("server/batch"), registry=registry)
    assert validator.is_valid(frame)
    assert not validator.is_valid({"type": "batch", "frames": [{"type": "gap"}]})


def test_there_is_a_schema_for_every_frame_type_and_no_other():
    assert set(schemas.names("client")) == set(CLIENT_TYPES)
    assert set(schemas.names("server")) == set(SERVER_TYPES)


def test_the_error_codes_are_the_schemas():
    assert schemas.load("server/error")["properties"]["code"]["enum"] == list(ERROR_CODES)


def typed_dict(name: str) -> Any:
    return getattr(types, "".join(part.title() for part in name.split(".")) + "Frame")


@pytest.mark.parametrize(
    "name", [f"client/{n}" for n in CLIENT_TYPES] + [f"server/{n}" for n in SERVER_TYPES]
)
def test_each_typed_dict_has_its_schemas_fields(name):
    schema, cls = schemas.load(name), typed_dict(name.split("/")[1])
    # With postponed annotations, __required_keys__ cannot see NotRequired: read the hints.
    hints = typing.get_type_hints(cls, include_extras=True)
    assert set(hints) == set(schema["properties"]), cls
    required = {k for k, v in hints.items() if typing.get_origin(v) is not typing.NotRequired}
    assert required == set(schema["required"]), cls
    assert typing.get_args(hints["type"]) == (name.split("/")[1],)


# --- What the server builds --------------------------------------------------------------
TS = "2026-11-27T21:14:38.767Z"
META = [{"ref": "b27d37de45fb", "meta": {"name": "Ada"}}]
BUILT = [
    subscribed_frame("s1", "public:lobby", "13d423834965b92f", 41, True),
    subscribed_frame(None, "public:lobby", "13d423834965b92f", 0, False),
    event_frame("public:lobby", 42, "message.created", '{"a":[1,"\\n"]}', TS),
    event_frame("public:lobby", None, "cursor.moved", "null", TS),
    unsubscribed_frame("u1", "public:lobby"),
    unsubscribed_frame(7, "orders:42", revoked=True),
    publish_ack_frame("p1", 42),
    publish_ack_frame(3, 42, duplicate=True),
    publish_ack_frame(None, None),
    presence_ack_frame("j1", "b27d37de45fb"),
    presence_ack_frame("l1", None),
    pong_frame({"type": "ping", "id": 17}),
    pong_frame({"type": "ping", "id": None}),
    pong_frame({"type": "ping"}),
    *(error_frame(code, "Because.", frame_id) for code in ERROR_CODES for frame_id in (None, 1)),
    snapshot_frame("tasks", 42, {"objects": [{"id": 1}], "truncated": False}),
    snapshot_frame("tasks", 0, None),
    gap_frame("ticker:eur", 1200, 1750),
    presence_state_frame("public:room", "b27d37de45fb", {"anon:a": {"metas": META}}),
    presence_state_frame("public:room", "b27d37de45fb", {}),
    presence_change_frame("join", "public:room", "anon:a", META),
    presence_change_frame("update", "public:room", "17", META * 2),
    presence_change_frame("leave", "public:room", "anon:a"),
    presence_count_frame("public:big", members=2, connections=3),
    batch_frame([event_frame("a", 1, "e", "1", TS), gap_frame("a", 2, 3)]),
]


@pytest.mark.parametrize("frame", BUILT)
def test_every_frame_the_encoders_build_has_its_schema(frame):
    check(json.loads(frame) if isinstance(frame, str) else frame)


@pytest.mark.parametrize("cls", [WebSocketConnection, SSEConnection])
@pytest.mark.parametrize("heartbeat", [15, 2.5])
def test_the_welcome_a_connection_builds_has_its_schema(settings, cls, heartbeat):
    settings.REALTIME = {"HEARTBEAT_INTERVAL": heartbeat}
    scope = {"type": "websocket", "path": "/", "query_string": b"batch=1", "headers": []}
    welcome = json.loads(cls(scope, None, None).welcome_frame(batch=cls is WebSocketConnection))
    check(welcome)
    assert welcome["heartbeat"] == heartbeat


@given(
    stream=from_schema(schemas.resolved("defs")["$defs"]["stream"]),
    seq=st.none() | st.integers(1, 2**63 - 1),
    event=from_schema(schemas.resolved("defs")["$defs"]["event_type"]),
    data=json_values,
    ts=st.datetimes(timezones=st.just(UTC), min_value=datetime(1970, 1, 2)),
)
def test_every_event_frame_has_its_schema_and_its_data(stream, seq, event, data, ts):
    frame = json.loads(event_frame(stream, seq, event, dumps(data), format_ts(ts)))
    assert is_valid(frame, schemas.resolved("server/event"))
    assert frame["data"] == data and frame.get("seq") == seq


# --- A live server -----------------------------------------------------------------------
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
