"""The client-frame checker agrees with ``schemas/client/*.json``: in process, no server.

Frames drawn from each schema are accepted; a frame with one field the schema refuses gets
that field's documented error code; and any payload at all either fails with a documented
code or is a frame its schema allows. ``tests/e2e/test_hostile.py`` throws the same payloads at
a live server for what only a server can show (the connection and the others carry on).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from realtime.core.publishing import validate_event_type, validate_idempotency_key
from realtime.exceptions import InvalidStream, RealtimeError
from realtime.protocol import (
    CLIENT_TYPES,
    INVALID_EVENT,
    INVALID_FRAME,
    INVALID_STREAM,
    MALFORMED_JSON,
    NOT_SUBSCRIBED,
    TOO_DEEP,
    UNKNOWN_TYPE,
    dumps,
    json_depth,
    loads,
    parse_client_frame,
    schemas,
)
from realtime.streams import validate_stream_name
from tests.strategies import KEYWORDS, client_payloads, from_schema, is_valid, keywords, violations

DEPTH = 32  # MAX_JSON_DEPTH's default
FUZZ = settings(max_examples=300, deadline=None)
# What the parser alone answers (stream names and event types are the endpoint's).
PARSER_CODES = {MALFORMED_JSON, INVALID_FRAME, UNKNOWN_TYPE, TOO_DEEP}


def answer(text: str) -> dict[str, Any]:
    """What ``/realtime/ws/`` checks in a frame before the policy and the connection's state:
    the frame, or the ``RealtimeError`` whose code the client gets (``websocket.py``)."""
    frame = parse_client_frame(text)
    kind = frame["type"]
    if kind in ("subscribe", "publish"):
        validate_stream_name(frame["stream"])
    elif kind in ("unsubscribe", "presence"):
        try:
            validate_stream_name(frame["stream"])
        except InvalidStream:
            # Looked up among the subscriptions, where no invalid name can be.
            raise RealtimeError("Not subscribed.", code=NOT_SUBSCRIBED) from None
    if kind == "publish":
        validate_event_type(frame["event"])
        validate_idempotency_key(frame.get("key"))
    return frame


def schema(kind: str) -> dict[str, Any]:
    return schemas.resolved(f"client/{kind}")


def documented_code(kind: str, field: str, value: Any) -> str:
    """The error docs/protocol.md gives for ``field`` holding a value its schema refuses."""
    if field == "stream" and isinstance(value, str):
        return INVALID_STREAM if kind in ("subscribe", "publish") else NOT_SUBSCRIBED
    if (field == "event" and isinstance(value, str)) or field == "key":
        return INVALID_EVENT
    return INVALID_FRAME


def test_the_strategies_understand_every_keyword_of_the_client_schemas():
    for kind in CLIENT_TYPES:
        assert keywords(schema(kind)) <= KEYWORDS, kind


def test_every_client_type_has_a_schema():
    assert set(schemas.names("client")) == set(CLIENT_TYPES)


@pytest.mark.parametrize("kind", CLIENT_TYPES)
@given(data=st.data())
def test_frames_the_schema_allows_are_accepted(kind, data):
    frame = data.draw(from_schema(schema(kind)))
    assume(json_depth(frame, DEPTH) <= DEPTH)
    assert answer(dumps(frame)) == frame


FIELDS = [
    (kind, field)
    for kind in CLIENT_TYPES
    for field, field_schema in schema(kind)["properties"].items()
    if field != "type" and set(field_schema) - {"description"}  # "data" takes anything
]


@pytest.mark.parametrize(("kind", "field"), FIELDS)
@given(data=st.data())
def test_a_field_the_schema_refuses_gets_its_documented_error(kind, field, data):
    frame_schema = schema(kind)
    frame = data.draw(from_schema(frame_schema))
    frame[field] = data.draw(violations(frame_schema["properties"][field]))
    assume(json_depth(frame, DEPTH) <= DEPTH)
    assert not is_valid(frame, frame_schema)
    with pytest.raises(RealtimeError) as info:
        answer(dumps(frame))
    assert info.value.code == documented_code(kind, field, frame[field])


@pytest.mark.parametrize("kind", CLIENT_TYPES)
@given(data=st.data())
def test_a_missing_required_field_is_an_invalid_frame(kind, data):
    frame_schema = schema(kind)
    frame = data.draw(from_schema(frame_schema))
    del frame[data.draw(st.sampled_from(frame_schema["required"]))]
    with pytest.raises(RealtimeError) as info:
        answer(dumps(frame))
    assert info.value.code == INVALID_FRAME


@FUZZ
@given(payload=client_payloads)
@example(payload="[" * 50_000 + "]" * 50_000)
@example(payload='{"type": "ping", "id": ' + "[" * 1000 + "]" * 1000 + "}")
@example(payload='{"type": "subscribe", "stream": "public:h", "since": NaN}')
@example(payload='{"type": "subscribe", "stream": "public:h", "since": 1.0}')
@example(payload='{"type": "ping", "id": 1e3}')
@example(payload='{"type": "received", "count": 5, "id": true}')
@example(payload='{"type":"subscribe","stream":"p\\n"}')  # "$" of a schema pattern (ECMA)
def test_any_payload_gets_a_documented_answer_that_agrees_with_the_schemas(payload):
    """The fuzz of tests/e2e/test_hostile.py, in process: the checker and the schemas agree on
    every frame, valid or not, and every refusal has a documented code."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    try:
        parse_client_frame(text)
    except RealtimeError as exc:
        assert exc.code in PARSER_CODES
    try:
        decoded = loads(text)
    except (ValueError, RecursionError):
        return
    valid = (
        isinstance(decoded, dict)
        and decoded.get("type") in CLIENT_TYPES
        and is_valid(decoded, schema(decoded["type"]))
        and json_depth(decoded, DEPTH) <= DEPTH
    )
    try:
        assert answer(text) == decoded
    except RealtimeError:
        assert not valid, decoded
    else:
        assert valid, decoded


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"type": "ping", "id": 1.0}', INVALID_FRAME),  # an integer has no fraction
        ('{"type": "subscribe", "stream": "a", "since": 1e2}', INVALID_FRAME),
        ('{"type": "publish", "stream": "a", "event": "e", "data": ' + "[" * 40 + "]" * 40 + "}",
         TOO_DEEP),
        ('{"type": "publish", "stream": "a", "event": "e", "data": Infinity}', MALFORMED_JSON),
    ],
)  # fmt: skip
def test_what_the_schemas_cannot_say(text, code):
    with pytest.raises(RealtimeError) as info:
        answer(text)
    assert info.value.code == code
