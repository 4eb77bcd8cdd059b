"""Flow control: how much a connection may have in flight before it counts as slow.

Daphne buffers every write without limit and tells the application nothing, so the bound is
kept here, with a window the client acknowledges: it reports how many frames it has received
(``{"type": "received", "count": N}`` over WebSocket; ``"received"`` in the HTTP heartbeat for
SSE) at least every half window. A connection with ``OUTBOX_WINDOW`` frames or bytes
unacknowledged is *slow*, and each of its subscriptions gets its stream's
``SLOW_CONSUMERS`` policy:

* ``disconnect`` (default): the connection is closed (WebSocket 4409; SSE ends the response)
  and the client resumes from history when it reconnects — nothing is lost;
* ``skip``: events are dropped until the client catches up, then it gets a ``gap`` frame
  naming the seqs it missed (to fetch from history if it cares);
* ``conflate``: only the latest event per key is kept (key: the event type, plus
  ``data["key"]`` when present) and sent when the client catches up — for cursors and tickers.

Memory per connection is therefore bounded by the window, whatever the client does.
"""

from __future__ import annotations

import json
from typing import Any

from realtime.conf import realtime_settings
from realtime.streams import matches


class Window:
    """Frames and bytes sent but not yet acknowledged by the client."""

    __slots__ = (
        "acked",
        "acked_bytes",
        "limit_bytes",
        "limit_messages",
        "marks",
        "sent",
        "sent_bytes",
    )

    def __init__(self, messages: int, size: int) -> None:
        self.limit_messages, self.limit_bytes = messages, size
        self.sent = self.sent_bytes = self.acked = self.acked_bytes = 0
        # sent_bytes after each unacknowledged frame. A list, not a deque: an idle connection
        # holds two or three marks, which a list keeps in 80 bytes and a deque in 760.
        self.marks: list[int] = []

    @classmethod
    def from_settings(cls) -> Window:
        config = realtime_settings.OUTBOX_WINDOW
        return cls(int(config["messages"]), int(config["bytes"]))

    def add(self, size: int) -> None:
        self.sent += 1
        self.sent_bytes += size
        self.marks.append(self.sent_bytes)

    def ack(self, count: int) -> None:
        """The client has received ``count`` frames in all (counts only go up)."""
        count = min(count, self.sent)
        if count > self.acked:
            done = count - self.acked
            self.acked_bytes = self.marks[done - 1]
            del self.marks[:done]
            self.acked = count

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked

    @property
    def in_flight_bytes(self) -> int:
        return self.sent_bytes - self.acked_bytes

    def full(self) -> bool:
        # Asked once per delivery: the arithmetic inline, not through the properties.
        return (
            self.sent - self.acked >= self.limit_messages
            or self.sent_bytes - self.acked_bytes >= self.limit_bytes
        )

    def relieved(self) -> bool:
        """Back under half the window: a slow connection may be sent to again."""
        return (
            self.in_flight <= self.limit_messages // 2
            and self.in_flight_bytes <= self.limit_bytes // 2
        )


def policy_for(stream: str) -> str:
    for pattern, policy in realtime_settings.SLOW_CONSUMERS.items():
        if matches(stream, pattern):
            return str(policy)
    return "disconnect"


def conflation_key(event: str, frame: str) -> tuple[str, Any]:
    data = json.loads(frame).get("data")
    key = data.get("key") if isinstance(data, dict) else None
    return event, json.dumps(key, sort_keys=True) if key is not None else None


class Held:
    """What a slow connection holds back for one subscription until the client catches up:
    the range of seqs it skipped (``skip``), or the latest frame per conflation key
    (``conflate``). The connection owns these, one per subscription while it is slow."""

    __slots__ = ("conflated", "skipped")

    def __init__(self) -> None:
        self.skipped: tuple[int, int] | None = None
        self.conflated: dict[Any, tuple[int | None, str, str]] = {}

    def skip(self, position: int) -> None:
        first = position if self.skipped is None else self.skipped[0]
        self.skipped = (first, position)

    def conflate(self, seq: int | None, event: str, frame: str) -> None:
        self.conflated[conflation_key(event, frame)] = (seq, event, frame)

    def frames(self) -> list[tuple[str, str]]:
        """The conflated ``(event, frame)`` pairs, in seq order (ephemeral ones first)."""
        kept = sorted(self.conflated.values(), key=lambda item: item[0] or 0)
        return [(event, frame) for _, event, frame in kept]
