"""What a slow connection holds back per subscription (``realtime.core.flow.Held``). Pure."""

from __future__ import annotations

import json

from realtime.core.flow import Held


def frame(seq: int | None, key: str) -> str:
    return json.dumps({"type": "event", "seq": seq, "data": {"key": key}})


def test_skip_keeps_the_first_and_last_skipped_seq():
    held = Held()
    for position in (7, 8, 9, 12):
        held.skip(position)
    assert held.skipped == (7, 12)
    assert held.frames() == []


def test_conflate_keeps_the_latest_per_key_in_seq_order():
    held = Held()
    held.conflate(3, "cursor", frame(3, "a"))
    held.conflate(4, "cursor", frame(4, "b"))
    held.conflate(5, "cursor", frame(5, "a"))  # replaces seq 3
    held.conflate(None, "typing", frame(None, "a"))  # ephemeral: before the stored ones
    assert [json.loads(f)["seq"] for _, f in held.frames()] == [None, 4, 5]
    assert held.skipped is None
