"""The layer messages (``realtime.bus.messages``): built and checked in one place.

Pure: no server, database or channel layer.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from realtime.bus import messages as m

BUILT: list[Any] = [
    m.event("s", "e1", 3, "moved", '{"type":"event"}'),
    m.event("s", "e1", None, "typing", "{}"),
    m.events("s", [m.event("s", "e1", 1, "a", "{}"), m.event("s", "e1", 2, "b", "{}")], 1.5),
    m.presence("room", "user:1", 7 << 32 | 2, "join", [{"ref": "r", "meta": {}}]),
    m.presence("room", "user:1", 9, "leave", []),
    m.reset("s", "e2"),
    m.batch([m.event("s", "e1", 1, "a", "{}"), m.reset("t", "e3")]),
    m.touch("c" * 32, 12),
    m.touch("c1", None),
    m.revoke(user="7", session=None, token=None, connection=None, streams="a:*", reason="x"),
    m.stats_request("realtime.hub.abc!def"),
    m.stats_reply(
        {"server": "s1", "hostname": "h", "pid": 1, "stats": {}, "rates": {}, "alerts": []}
    ),
]


@pytest.mark.parametrize("message", BUILT, ids=lambda message: message["type"])
def test_every_built_message_parses_as_itself(message):
    assert m.parse(message) is message
    assert m.parse(m.stamped(message, 1.0) if "stream" in message else message) is not None


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        ("not a dict", "unknown type None"),
        ({"stream": "s"}, "unknown type None"),
        ({"type": "realtime.nope"}, "unknown type 'realtime.nope'"),
        ({**m.event("s", "e", 1, "a", "{}"), "frame": None}, "'frame' is a NoneType"),
        ({k: v for k, v in m.reset("s", "e").items() if k != "epoch"}, "no 'epoch'"),
        ({**m.touch("c", 1), "received": True}, "'received' is a bool"),
        ({**m.presence("r", "k", 1, "join", []), "kind": "wave"}, "kind 'wave'"),
        (m.events("s", [{"type": "realtime.event", "stream": "s"}]), "an event that is not one"),
        (m.events("s", [m.reset("s", "e")]), "an event that is not one"),
        (
            {
                **m.revoke(
                    user=None, session="x", token=None, connection=None, streams=None, reason="r"
                ),
                "reason": 5,
            },
            "'reason' is a int",
        ),
    ],
)
def test_unknown_or_malformed_messages_are_logged_and_dropped(raw, logged, caplog):
    with caplog.at_level(logging.WARNING, logger="realtime.bus"):
        assert m.parse(raw) is None
    assert logged in caplog.text


def test_batches_keep_order_and_bound_the_events_per_message():
    singles = [m.event("s", "e", n, "a", "{}") for n in range(1, 151)]
    many = m.events("t", [m.event("t", "e", n, "a", "{}") for n in range(1, 81)])
    out = m.batches([*singles[:50], many, *singles[50:]])
    unpacked = [inner for message in out for inner in m.unbatch(message)]
    assert unpacked == [*singles[:50], many, *singles[50:]]
    for message in out:
        weight = sum(len(inner.get("events", ())) or 1 for inner in m.unbatch(message))
        assert weight <= m.BATCH_EVENTS
    assert m.batches([singles[0]]) == [singles[0]]  # one alone travels as itself


def test_a_held_leave_carries_a_bounded_hold_and_a_bad_one_is_dropped(caplog):
    leave = m.presence("s", "k", 2, "leave", [])
    assert m.held(leave, 3.5)["hold"] == 3.5
    assert m.held(leave, 10_000)["hold"] == m.MAX_HOLD  # a receiver keeps it bounded
    assert "hold" not in m.held(m.presence("s", "k", 1, "join", [{}]), 3.5)
    assert "hold" not in m.held(leave, 0)
    assert m.parse(m.held(leave, 3.5)) is not None
    for bad in (-1, m.MAX_HOLD + 1, True, "3"):
        with caplog.at_level(logging.WARNING, logger="realtime.bus"):
            assert m.parse({**leave, "hold": bad}) is None
    assert "hold" in caplog.text
