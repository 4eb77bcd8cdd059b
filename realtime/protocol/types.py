"""Every frame of protocol 1 as a ``TypedDict``: the static view of ``schemas/``.

The schema files are the source; ``tests/e2e/test_schemas.py`` checks that each class here has
the fields of its schema, required and optional alike.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

FrameId = str | int


# --- Server frames -----------------------------------------------------------------------
class WindowInfo(TypedDict):
    messages: int
    bytes: int


class WelcomeFrame(TypedDict):
    type: Literal["welcome"]
    connection_id: str
    protocol: int
    heartbeat: float
    window: WindowInfo
    batch: bool
    max_frame: int


class SubscribedFrame(TypedDict):
    type: Literal["subscribed"]
    id: FrameId | None
    stream: str
    epoch: str
    seq: int
    recovered: bool


class EventFrame(TypedDict):
    type: Literal["event"]
    stream: str
    seq: NotRequired[int]  # absent on ephemeral events
    event: str
    data: Any
    ts: str


class UnsubscribedFrame(TypedDict):
    type: Literal["unsubscribed"]
    id: FrameId | None
    stream: str
    reason: NotRequired[Literal["revoked"]]


class AckFrame(TypedDict):
    type: Literal["ack"]
    id: FrameId | None
    seq: NotRequired[int | None]  # publish: the stored seq, None if ephemeral
    ref: NotRequired[str]  # presence join or update: this connection's ref
    duplicate: NotRequired[Literal[True]]


class PongFrame(TypedDict):
    type: Literal["pong"]
    id: NotRequired[FrameId | None]


class ErrorFrame(TypedDict):
    type: Literal["error"]
    id: FrameId | None
    code: str
    message: str


class SnapshotFrame(TypedDict):
    type: Literal["snapshot"]
    stream: str
    seq: int
    data: Any


GapFrame = TypedDict("GapFrame", {"type": Literal["gap"], "stream": str, "from": int, "to": int})


class MetaEntry(TypedDict):
    ref: str
    meta: dict[str, Any]


class MemberMetas(TypedDict):
    metas: list[MetaEntry]


class PresenceStateFrame(TypedDict):
    type: Literal["presence.state"]
    stream: str
    ref: str
    members: dict[str, MemberMetas]


class PresenceJoinFrame(TypedDict):
    type: Literal["presence.join"]
    stream: str
    key: str
    metas: list[MetaEntry]


class PresenceUpdateFrame(TypedDict):
    type: Literal["presence.update"]
    stream: str
    key: str
    metas: list[MetaEntry]


class PresenceLeaveFrame(TypedDict):
    type: Literal["presence.leave"]
    stream: str
    key: str


class PresenceCountFrame(TypedDict):
    type: Literal["presence.count"]
    stream: str
    members: int
    connections: int


class BatchFrame(TypedDict):
    type: Literal["batch"]
    frames: list[dict[str, Any]]


# --- Client frames -----------------------------------------------------------------------
class SubscribeFrame(TypedDict):
    type: Literal["subscribe"]
    id: NotRequired[FrameId | None]
    stream: str
    since: NotRequired[int | None]
    epoch: NotRequired[str | None]
    presence: NotRequired[dict[str, Any] | None]  # join the stream's presence with this meta


class UnsubscribeFrame(TypedDict):
    type: Literal["unsubscribe"]
    id: NotRequired[FrameId | None]
    stream: str


class PublishFrame(TypedDict):
    type: Literal["publish"]
    id: NotRequired[FrameId | None]
    stream: str
    event: str
    data: NotRequired[Any]
    ephemeral: NotRequired[bool]
    key: NotRequired[str | None]  # idempotency key: a re-sent publish is stored once


class ReceivedFrame(TypedDict):
    type: Literal["received"]
    id: NotRequired[FrameId | None]
    count: int  # frames received on this connection so far, welcome included


class PingFrame(TypedDict):
    type: Literal["ping"]
    id: NotRequired[FrameId | None]


class PresenceFrame(TypedDict):
    type: Literal["presence"]
    id: NotRequired[FrameId | None]
    stream: str
    meta: NotRequired[dict[str, Any]]
    leave: NotRequired[bool]
