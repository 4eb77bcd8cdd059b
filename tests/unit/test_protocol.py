"""The wire format: frames, SSE encoding, resume cursors, stream names."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from channels.layers import BaseChannelLayer

from realtime.bus.groups import group_name
from realtime.exceptions import InvalidStream, ProtocolError
from realtime.protocol import (
    decode_cursor,
    encode_cursor,
    event_frame,
    format_ts,
    parse_client_frame,
    sse_message,
)
from realtime.streams import compile_pattern, matches, validate_stream_name


def test_event_frame_is_the_json_envelope():
    text = event_frame(
        "chat:1", 7, "message.created", '{"a":[1,"\\n"]}', "2026-01-01T00:00:00.000Z"
    )
    assert json.loads(text) == {
        "type": "event",
        "stream": "chat:1",
        "seq": 7,
        "event": "message.created",
        "data": {"a": [1, "\n"]},
        "ts": "2026-01-01T00:00:00.000Z",
    }
    assert "\n" not in text


def test_ephemeral_event_frame_has_no_seq():
    frame = json.loads(event_frame("c", None, "cursor.moved", "null", "2026-01-01T00:00:00.000Z"))
    assert "seq" not in frame


def test_format_ts_is_utc_with_milliseconds():
    value = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)
    assert format_ts(value) == "2026-03-04T05:06:07.891Z"
    # Other zones are converted; whole seconds keep their milliseconds; years keep 4 digits.
    plus_two = timezone(timedelta(hours=2))
    assert format_ts(datetime(2026, 1, 1, 1, 30, tzinfo=plus_two)) == "2025-12-31T23:30:00.000Z"
    assert format_ts(datetime(812, 5, 6, 7, 8, 9, 999, tzinfo=UTC)) == "0812-05-06T07:08:09.000Z"
    naive = datetime(2026, 3, 4, 5, 6, 7, 891234)  # local time, as ``astimezone`` reads it
    assert format_ts(naive) == format_ts(naive.astimezone(UTC))


@pytest.mark.parametrize(
    "positions",
    [{}, {"a": ("e1", 0)}, {"chat:1": ("abc", 5), "public:x/y=z+": ("ff", 12345678901)}],
)
def test_cursor_round_trip(positions):
    cursor = encode_cursor(positions)
    assert cursor.startswith("1.")
    assert "\n" not in cursor and "=" not in cursor
    assert decode_cursor(cursor) == positions


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "abc",
        "2.W10",
        "1.!!!",
        "1." + "QQ",  # "A": not JSON
        "1.e30",  # {}: not a list
        "1.W1siYSIsImUiLC0xXV0",  # negative seq
        "1.W1siYSIsImUiLHRydWVdXQ",  # boolean seq
        "1.W1siYSIsImUiXV0",  # two fields
        "1." + "A" * 9000,
    ],
)
def test_garbage_cursors_are_rejected(cursor):
    with pytest.raises(ProtocolError) as info:
        decode_cursor(cursor)
    assert info.value.code == "invalid_cursor"


def test_sse_message_cannot_be_split_by_its_fields():
    text = sse_message("line1\nline2\r\nline3\0", event="evil\nevent: x", id="1\r2")
    assert text == ("id: 1 2\nevent: evil event: x\ndata: line1\ndata: line2\ndata: line3\n\n")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nope", "malformed_json"),
        ("[" * 100_000 + "]" * 100_000, "malformed_json"),
        ("[1]", "invalid_frame"),
        ('{"stream": "a"}', "invalid_frame"),
        ('{"type": "nope"}', "unknown_type"),
        ('{"type": "subscribe"}', "invalid_frame"),
        ('{"type": "subscribe", "stream": "a", "since": -1}', "invalid_frame"),
        ('{"type": "subscribe", "stream": "a", "since": true}', "invalid_frame"),
        ('{"type": "subscribe", "stream": "a", "epoch": 5}', "invalid_frame"),
        ('{"type": "publish", "stream": "a"}', "invalid_frame"),
        ('{"type": "publish", "stream": "a", "event": "e", "ephemeral": 1}', "invalid_frame"),
        ('{"type": "ping", "id": {"x": 1}}', "invalid_frame"),
        ('{"type": "ping", "id": "' + "x" * 65 + '"}', "invalid_frame"),
    ],
)
def test_bad_client_frames_get_stable_codes(text, code):
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(text)
    assert info.value.code == code


def test_good_client_frame():
    frame = parse_client_frame('{"type":"subscribe","id":3,"stream":"a","since":0,"epoch":"e"}')
    assert frame == {"type": "subscribe", "id": 3, "stream": "a", "since": 0, "epoch": "e"}


@pytest.mark.parametrize(
    "name", ["a", "chat:42", "public:room-1", "user:17/inbox", "x.y_z@h=1+2", "A" * 200]
)
def test_valid_stream_names(name):
    assert validate_stream_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ":a", "-a", "a b", "a\nb", "ä", "a*", "a?", "a#b", "A" * 201, None, 5]
)
def test_invalid_stream_names(name):
    with pytest.raises(InvalidStream):
        validate_stream_name(name)


def test_group_names_are_valid_and_distinct():
    layer = BaseChannelLayer()
    names = ["a", "A" * 200, "chat:1", "chat_1", "chat.1", "chat/1", "x=1", "x+1"]
    groups = {group_name(n) for n in names}
    assert len(groups) == len(names)
    for group in groups:
        assert layer.require_valid_group_name(group)


@pytest.mark.parametrize(
    ("pattern", "stream", "matched"),
    [
        ("chat:*", "chat:1", True),
        ("chat:*", "chats", False),
        ("a?c", "abc", True),
        ("user:{user_id}:inbox", "user:42:inbox", True),
        ("user:{user_id}:inbox", "user:4/2:inbox", False),
        ("log[1]", "log[1]", True),  # literal: one syntax, not fnmatch's sets
        ("log[1]", "log1", False),
    ],
)
def test_one_stream_pattern_syntax(pattern, stream, matched):
    assert matches(stream, pattern) is matched
    assert (compile_pattern(pattern).fullmatch(stream) is not None) is matched
