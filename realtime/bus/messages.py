"""The messages server processes send each other over the channel layer: shapes and checks.

Every message is one of the ``TypedDict``s below, built by the function of the same name
(``event(...)``, ``revoke(...)``) and checked on arrival by ``parse``, which logs and drops
what it does not know instead of letting a handler fail on a missing key — or, worse,
silently skip it. Values are plain ``str``/``int``/``float``/lists/dicts, so every layer's
serializer (msgpack in channels-redis) carries them unchanged.

Stream messages go to a stream's group (``groups.group_name``) and carry ``t``, the sender's
wall clock, from which hubs time publish-to-fan-out latency. Control messages go to the
control group every hub joins; ``touch`` and the stats reply go to one channel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict, cast

logger = logging.getLogger("realtime.bus")

EVENT = "realtime.event"
EVENTS = "realtime.events"
PRESENCE = "realtime.presence"
# Longest a receiver holds a draining process's presence leave (seconds): bounds what a
# message can make a hub keep.
MAX_HOLD = 120.0
RESET = "realtime.reset"
BATCH = "realtime.batch"
TOUCH = "realtime.touch"
REVOKE = "realtime.revoke"
STATS_REQUEST = "realtime.stats.request"
STATS_REPLY = "realtime.stats.reply"

# Most messages one ``realtime.batch`` carries, counting each event of a ``realtime.events``
# message: keeps one Redis value (and one hub dispatch) small.
BATCH_EVENTS = 100

PresenceKind: TypeAlias = Literal["join", "update", "leave"]


class EventMessage(TypedDict):
    """One event of a stream, with its client frame encoded once by the publisher."""

    type: Literal["realtime.event"]
    stream: str
    epoch: str
    seq: int | None  # None: ephemeral (not stored)
    event: str
    frame: str
    t: NotRequired[float]


class EventsMessage(TypedDict):
    """Consecutive stored events of one stream, in order (``publish_many``, the sender)."""

    type: Literal["realtime.events"]
    stream: str
    events: list[EventMessage]
    t: NotRequired[float]


class PresenceMessage(TypedDict):
    """A member joined, updated or left; ``version`` orders a member's messages."""

    type: Literal["realtime.presence"]
    stream: str
    key: str
    version: int
    kind: PresenceKind
    metas: list[dict[str, Any]]
    # A leave of a draining process's member: receivers show it only after this many
    # seconds, and not at all if the member is back by then (``held``).
    hold: NotRequired[float]
    t: NotRequired[float]


class ResetMessage(TypedDict):
    """The stream's history was cleared: subscribers start again from the new epoch."""

    type: Literal["realtime.reset"]
    stream: str
    epoch: str
    seq: int
    t: NotRequired[float]


StreamMessage: TypeAlias = EventMessage | EventsMessage | PresenceMessage | ResetMessage


class BatchMessage(TypedDict):
    """Several stream messages for one process, in order (``bus.group_send_many``)."""

    type: Literal["realtime.batch"]
    messages: list[StreamMessage]


class TouchMessage(TypedDict):
    """An SSE client's heartbeat (and acknowledgement), for the process holding it."""

    type: Literal["realtime.touch"]
    connection: str
    received: int | None


class RevokeMessage(TypedDict):
    """End the matching connections (or only their subscriptions matching ``streams``)."""

    type: Literal["realtime.revoke"]
    user: str | None
    session: str | None
    token: str | None
    connection: str | None
    streams: str | None
    reason: str


class StatsRequestMessage(TypedDict):
    """Every hub answers on ``reply_to`` with a ``StatsReplyMessage``."""

    type: Literal["realtime.stats.request"]
    reply_to: str


class StatsReplyMessage(TypedDict):
    """One process's ``Hub.describe()``."""

    type: Literal["realtime.stats.reply"]
    server: str
    hostname: str
    pid: int
    stats: dict[str, Any]
    rates: dict[str, float]
    alerts: list[dict[str, Any]]


Message: TypeAlias = (
    StreamMessage
    | BatchMessage
    | TouchMessage
    | RevokeMessage
    | StatsRequestMessage
    | StatsReplyMessage
)


def event(stream: str, epoch: str, seq: int | None, event: str, frame: str) -> EventMessage:
    return {
        "type": "realtime.event",
        "stream": stream,
        "epoch": epoch,
        "seq": seq,
        "event": event,
        "frame": frame,
    }


def events(stream: str, items: list[EventMessage], t: float | None = None) -> EventsMessage:
    message: EventsMessage = {"type": "realtime.events", "stream": stream, "events": items}
    if t is not None:
        message["t"] = t
    return message


def presence(
    stream: str, key: str, version: int, kind: PresenceKind, metas: list[dict[str, Any]]
) -> PresenceMessage:
    return {
        "type": "realtime.presence",
        "stream": stream,
        "key": key,
        "version": version,
        "kind": kind,
        "metas": metas,
    }


def held(message: PresenceMessage, hold: float) -> PresenceMessage:
    """``message`` as sent by a draining process: a leave held ``hold`` seconds by its
    receivers; a join or an update as it is."""
    if hold > 0 and message["kind"] == "leave":
        return {**message, "hold": min(hold, MAX_HOLD)}
    return message


def reset(stream: str, epoch: str) -> ResetMessage:
    return {"type": "realtime.reset", "stream": stream, "epoch": epoch, "seq": 0}


def batch(items: list[StreamMessage]) -> BatchMessage:
    return {"type": "realtime.batch", "messages": items}


def touch(connection: str, received: int | None) -> TouchMessage:
    return {"type": "realtime.touch", "connection": connection, "received": received}


def revoke(
    *,
    user: str | None,
    session: str | None,
    token: str | None,
    connection: str | None,
    streams: str | None,
    reason: str,
) -> RevokeMessage:
    return {
        "type": "realtime.revoke",
        "user": user,
        "session": session,
        "token": token,
        "connection": connection,
        "streams": streams,
        "reason": reason,
    }


def stats_request(reply_to: str) -> StatsRequestMessage:
    return {"type": "realtime.stats.request", "reply_to": reply_to}


def stats_reply(described: Mapping[str, Any]) -> StatsReplyMessage:
    return cast(StatsReplyMessage, {**described, "type": "realtime.stats.reply"})


def stamped(message: StreamMessage, t: float) -> StreamMessage:
    """``message`` with the sender's clock (a copy: the caller's may be sent again)."""
    return cast(StreamMessage, {**message, "t": t})


# --- checking what arrives ---------------------------------------------------------------
_Str = (str,)
_OptStr = (str, type(None))
_Int = (int,)
_OptInt = (int, type(None))
_List = (list,)
_Dict = (dict,)

_FIELDS: dict[str, tuple[tuple[str, tuple[type, ...]], ...]] = {
    EVENT: (("stream", _Str), ("epoch", _Str), ("seq", _OptInt), ("event", _Str), ("frame", _Str)),
    EVENTS: (("stream", _Str), ("events", _List)),
    PRESENCE: (
        ("stream", _Str),
        ("key", _Str),
        ("version", _Int),
        ("kind", _Str),
        ("metas", _List),
    ),
    RESET: (("stream", _Str), ("epoch", _Str), ("seq", _Int)),
    BATCH: (("messages", _List),),
    TOUCH: (("connection", _Str), ("received", _OptInt)),
    REVOKE: (
        ("user", _OptStr),
        ("session", _OptStr),
        ("token", _OptStr),
        ("connection", _OptStr),
        ("streams", _OptStr),
        ("reason", _Str),
    ),
    STATS_REQUEST: (("reply_to", _Str),),
    STATS_REPLY: (("server", _Str), ("hostname", _Str), ("pid", _Int), ("stats", _Dict)),
}
_PRESENCE_KINDS = frozenset(("join", "update", "leave"))
_MISSING = object()


def parse(raw: object) -> Message | None:
    """``raw`` as the message it claims to be, or None (logged) if it is not one.

    Checks the type and every field a handler reads; an ``events`` message's events too.
    """
    kind = raw.get("type") if isinstance(raw, dict) else None
    fields = _FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        logger.warning("Dropped a channel-layer message of unknown type %r.", kind)
        return None
    assert isinstance(raw, dict)
    problem = _problem(raw, fields)
    if problem is None and kind == EVENTS:
        for inner in raw["events"]:
            problem = "an event that is not one" if _bad_event(inner) else None
            if problem:
                break
    elif problem is None and kind == PRESENCE and raw["kind"] not in _PRESENCE_KINDS:
        problem = f"kind {raw['kind']!r}"
    elif problem is None and kind == PRESENCE and not _valid_hold(raw.get("hold", 0)):
        problem = f"hold {raw['hold']!r}"
    if problem is not None:
        logger.warning("Dropped a malformed %s message: %s.", kind, problem)
        return None
    return cast(Message, raw)


def _valid_hold(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_HOLD


def _problem(raw: dict[str, Any], fields: tuple[tuple[str, tuple[type, ...]], ...]) -> str | None:
    for name, types in fields:
        value = raw.get(name, _MISSING)
        if value is _MISSING:
            return f"no {name!r}"
        if not isinstance(value, types) or isinstance(value, bool):
            return f"{name!r} is a {type(value).__name__}"
    return None


def _bad_event(inner: object) -> bool:
    return (
        not isinstance(inner, dict)
        or inner.get("type") != EVENT
        or _problem(inner, _FIELDS[EVENT]) is not None
    )


def batches(items: list[Any]) -> list[Any]:
    """``items`` as layer messages of at most ``BATCH_EVENTS`` events (one alone as itself)."""
    out: list[list[Any]] = []
    weight = 0
    for message in items:
        size = len(message.get("events", ())) or 1
        if not out or weight + size > BATCH_EVENTS:
            out.append([])
            weight = 0
        out[-1].append(message)
        weight += size
    return [chunk[0] if len(chunk) == 1 else batch(chunk) for chunk in out]


def unbatch(message: Message) -> list[Message]:
    """The messages a received layer message carries: a ``realtime.batch``'s, or itself."""
    if message["type"] == "realtime.batch":
        return list(message["messages"])
    return [message]
