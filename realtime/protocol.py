"""The wire protocol, in one place: frames, codes, JSON and SSE encoding, resume cursors.

``docs/protocol.md`` is the reader's version of this module, with a JSON Schema per frame.
Every event frame is encoded to JSON text once, where it is published, and that same text
travels through the channel layer and out to every WebSocket and SSE client.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

from django.core.serializers.json import DjangoJSONEncoder

from realtime.conf import realtime_settings
from realtime.exceptions import ProtocolError

PROTOCOL_VERSION = 1

# --- Close codes (WebSocket) -------------------------------------------------------------
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server is shutting down; reconnect and resume
CLOSE_MESSAGE_TOO_BIG = 1009  # sent by the server (realtime.serve): a message over MAX_FRAME_SIZE
CLOSE_INTERNAL_ERROR = 1011  # unexpected server error; reconnect and resume
CLOSE_UNAUTHORIZED = 4401  # access revoked: logout, password change, ``realtime.revoke``...
CLOSE_FORBIDDEN = 4403  # handshake refused (closed before accept: the client sees HTTP 403)
CLOSE_HEARTBEAT_TIMEOUT = 4408  # nothing received for HEARTBEAT_TIMEOUT seconds
CLOSE_SLOW_CONSUMER = 4409  # too much unacknowledged (OUTBOX_WINDOW): reconnect and resume
CLOSE_RATE_LIMITED = 4429  # kept sending far over RATE_LIMIT

# --- Error codes (``error`` frames, SSE ``realtime.error`` events, HTTP error bodies) -----
MALFORMED_JSON = "malformed_json"  # the frame is not UTF-8 JSON text
INVALID_FRAME = "invalid_frame"  # JSON, but not an object with the fields its type needs
UNKNOWN_TYPE = "unknown_type"  # ``type`` is not one of the client frame types
UNSUPPORTED_FRAME = "unsupported_frame"  # a binary WebSocket frame
FRAME_TOO_LARGE = "frame_too_large"  # over MAX_FRAME_SIZE bytes
INVALID_STREAM = "invalid_stream"  # the stream name breaks the naming rules
FORBIDDEN = "forbidden"  # unknown or forbidden stream: the policy said no
INVALID_EVENT = "invalid_event"  # bad event type, or data too large
ALREADY_SUBSCRIBED = "already_subscribed"
NOT_SUBSCRIBED = "not_subscribed"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
INVALID_CURSOR = "invalid_cursor"  # an SSE Last-Event-ID / last_event_id that is not ours
PRESENCE_FULL = "presence_full"  # PRESENCE_MAX_MEMBERS reached: join refused
INVALID_PRESENCE = "invalid_presence"  # metadata not an object, or too large
TOO_DEEP = "too_deep"  # JSON nested deeper than MAX_JSON_DEPTH
RATE_LIMITED = "rate_limited"  # over RATE_LIMIT: the frame was dropped
REVOKED = "revoked"  # the server withdrew this connection's or subscription's access
INTERNAL_ERROR = "internal_error"

ERROR_CODES = (
    MALFORMED_JSON,
    INVALID_FRAME,
    UNKNOWN_TYPE,
    UNSUPPORTED_FRAME,
    FRAME_TOO_LARGE,
    INVALID_STREAM,
    FORBIDDEN,
    INVALID_EVENT,
    ALREADY_SUBSCRIBED,
    NOT_SUBSCRIBED,
    TOO_MANY_SUBSCRIPTIONS,
    INVALID_CURSOR,
    PRESENCE_FULL,
    INVALID_PRESENCE,
    TOO_DEEP,
    RATE_LIMITED,
    REVOKED,
    INTERNAL_ERROR,
)

# --- Handshake refusals (SSE: the HTTP status; WebSocket: closed before accept, which the
# client sees as HTTP 403) ---------------------------------------------------------------
INVALID_CREDENTIALS = "invalid_credentials"  # a token or ticket was sent and is not valid
AUTHENTICATION_REQUIRED = "authentication_required"  # AUTH_REQUIRED and nobody signed in
FORBIDDEN_ORIGIN = "forbidden_origin"  # the Origin is not in ALLOWED_ORIGINS
TOO_MANY_CONNECTIONS = "too_many_connections"  # MAX_CONNECTIONS_PER_USER / _PER_IP
# --- HTTP endpoints (``realtime.urls``) -----------------------------------------------------
UNKNOWN_CONNECTION = "unknown_connection"  # heartbeat for a connection that is gone

# Event types under these prefixes are the protocol's own (SSE system events, presence).
RESERVED_EVENT_PREFIXES = ("realtime.", "presence.")

# SSE event names of the system events.
SSE_SUBSCRIBED = "realtime.subscribed"
SSE_ERROR = "realtime.error"
SSE_WELCOME = "realtime.welcome"
SSE_SNAPSHOT = "realtime.snapshot"
SSE_GAP = "realtime.gap"

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


class ErrorFrame(TypedDict):
    type: Literal["error"]
    id: FrameId | None
    code: str
    message: str


# --- Client frames -----------------------------------------------------------------------
class SubscribeFrame(TypedDict):
    type: Literal["subscribe"]
    id: NotRequired[FrameId]
    stream: str
    since: NotRequired[int]
    epoch: NotRequired[str]


class UnsubscribeFrame(TypedDict):
    type: Literal["unsubscribe"]
    id: NotRequired[FrameId]
    stream: str


class PublishFrame(TypedDict):
    type: Literal["publish"]
    id: NotRequired[FrameId]
    stream: str
    event: str
    data: NotRequired[Any]
    ephemeral: NotRequired[bool]
    key: NotRequired[str]  # idempotency key: a re-sent publish is stored once


class ReceivedFrame(TypedDict):
    type: Literal["received"]
    count: int  # frames received on this connection so far, welcome included


class PingFrame(TypedDict):
    type: Literal["ping"]
    id: NotRequired[FrameId]


class PresenceFrame(TypedDict):
    type: Literal["presence"]
    id: NotRequired[FrameId]
    stream: str
    meta: NotRequired[dict[str, Any]]
    leave: NotRequired[bool]


CLIENT_TYPES = ("subscribe", "unsubscribe", "publish", "presence", "ping", "received")


# --- JSON --------------------------------------------------------------------------------
def dumps(value: Any) -> str:
    """Compact JSON; datetimes, UUIDs and Decimals become strings (DjangoJSONEncoder)."""
    return json.dumps(
        value, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """Strict JSON: ``NaN`` and ``Infinity``, which Python accepts, are errors."""
    return json.loads(text, parse_constant=_no_constants)


def format_ts(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-11-27T21:00:00.123Z``."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def normalize(data: Any) -> tuple[Any, str]:
    """``data`` as plain JSON values, and its encoded text — what every subscriber sees."""
    try:
        text = dumps(data)
        text.encode()  # a lone surrogate ("\ud800") survives json but not UTF-8
    except (TypeError, ValueError) as exc:
        from realtime.exceptions import InvalidEvent

        raise InvalidEvent(f"Event data is not JSON-serialisable: {exc}") from exc
    return json.loads(text), text


def event_frame(stream: str, seq: int | None, event: str, data_json: str, ts: str) -> str:
    """The ``event`` frame as JSON text, built around already-encoded ``data``."""
    seq_part = "" if seq is None else f',"seq":{seq}'
    return (
        f'{{"type":"event","stream":{json.dumps(stream)}{seq_part},'
        f'"event":{json.dumps(event)},"data":{data_json},"ts":"{ts}"}}'
    )


def batch_frame(frames: list[str]) -> str:
    """The ``batch`` frame holding already-encoded frames, in order (joined, not re-encoded)."""
    return '{"type":"batch","frames":[' + ",".join(frames) + "]}"


def error_frame(code: str, message: str, frame_id: FrameId | None = None) -> ErrorFrame:
    return {"type": "error", "id": frame_id, "code": code, "message": message}


def _check_id(frame: dict[str, Any]) -> None:
    frame_id = frame.get("id")
    if frame_id is not None and (
        isinstance(frame_id, bool)
        or not isinstance(frame_id, str | int)
        or (isinstance(frame_id, str) and len(frame_id) > 64)
    ):
        raise ProtocolError("'id' must be a string (up to 64 characters) or an integer.")


def json_depth(value: Any, stop: int) -> int:
    """Nesting depth of a decoded JSON value, counting no further than ``stop + 1``."""
    depth, level = 0, [(value, 1)]
    while level:
        item, d = level.pop()
        if isinstance(item, dict | list):
            depth = max(depth, d)
            if depth > stop:
                return depth
            children = item.values() if isinstance(item, dict) else item
            level.extend((child, d + 1) for child in children if isinstance(child, dict | list))
    return depth


def parse_client_frame(text: str) -> dict[str, Any]:
    """Decode one client frame, checking the fields its ``type`` needs.

    Raises ``ProtocolError`` whose ``code`` is ``malformed_json``, ``invalid_frame`` or
    ``unknown_type``; stream names and policy are checked by the consumer.
    """
    try:
        frame = loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("Frame is not valid JSON.", code=MALFORMED_JSON) from exc
    if not isinstance(frame, dict):
        raise ProtocolError("Frame must be a JSON object.")
    _check_id(frame)
    try:
        _check_fields(frame)
    except ProtocolError as exc:
        exc.frame_id = frame.get("id")
        raise
    return frame


def _check_fields(frame: dict[str, Any]) -> None:
    limit = int(realtime_settings.MAX_JSON_DEPTH)
    if json_depth(frame, limit) > limit:
        raise ProtocolError(f"Frame nests deeper than {limit} levels.", code=TOO_DEEP)
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("Frame needs a string 'type'.")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(f"Unknown frame type {kind[:40]!r}.", code=UNKNOWN_TYPE)
    if kind in ("subscribe", "unsubscribe", "publish", "presence") and not isinstance(
        frame.get("stream"), str
    ):
        raise ProtocolError(f"'{kind}' needs a string 'stream'.")
    if kind == "subscribe":
        since = frame.get("since")
        if since is not None and (
            isinstance(since, bool) or not isinstance(since, int) or since < 0
        ):
            raise ProtocolError("'since' must be a non-negative integer.")
        epoch = frame.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 64):
            raise ProtocolError("'epoch' must be a string.")
        if not isinstance(frame.get("presence", {}), dict | None):
            raise ProtocolError("'presence' must be an object (the member's metadata).")
    elif kind == "presence":
        if not isinstance(frame.get("meta", {}), dict):
            raise ProtocolError("'meta' must be an object.")
        if not isinstance(frame.get("leave", False), bool):
            raise ProtocolError("'leave' must be a boolean.")
    elif kind == "received":
        count = frame.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ProtocolError("'received' needs a non-negative integer 'count'.")
    elif kind == "publish":
        if not isinstance(frame.get("event"), str):
            raise ProtocolError("'publish' needs a string 'event'.")
        if not isinstance(frame.get("ephemeral", False), bool):
            raise ProtocolError("'ephemeral' must be a boolean.")


# --- SSE ---------------------------------------------------------------------------------
def _sse_field(value: str) -> str:
    # A CR, LF or NUL inside a field would end it early or be dropped by the browser.
    return value.replace("\r", " ").replace("\n", " ").replace("\0", " ")


def sse_message(data: str, *, event: str | None = None, id: str | None = None) -> str:
    """One SSE message; ``data`` spanning lines becomes several ``data:`` lines."""
    parts = []
    if id is not None:
        parts.append(f"id: {_sse_field(id)}\n")
    if event is not None:
        parts.append(f"event: {_sse_field(event)}\n")
    for line in data.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "").split("\n"):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts)


def sse_comment(text: str) -> str:
    return f": {_sse_field(text)}\n\n"


# --- Resume cursors ----------------------------------------------------------------------
CURSOR_PREFIX = "1."


# Browsers send the cursor back in a header, and servers cap header lines (Twisted, under
# daphne, at 16 KiB): an event stream whose cursor could outgrow this is refused up front.
MAX_CURSOR_LENGTH = 8192


def max_cursor_length() -> int:
    return MAX_CURSOR_LENGTH


def largest_cursor(streams: list[str]) -> int:
    """The length of the longest cursor an event stream of ``streams`` can carry."""
    return len(encode_cursor({stream: ("f" * 32, 2**63 - 1) for stream in streams}))


Position = tuple[str, int]  # (epoch, seq)


def encode_cursor(positions: dict[str, Position]) -> str:
    """An opaque SSE ``id`` holding each stream's (epoch, seq)."""
    payload = json.dumps(
        [[stream, epoch, seq] for stream, (epoch, seq) in positions.items()],
        separators=(",", ":"),
    ).encode()
    return CURSOR_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> dict[str, Position]:
    """Inverse of ``encode_cursor``; ``ProtocolError(invalid_cursor)`` for anything else."""
    invalid = ProtocolError("The resume cursor is not one this server issued.", code=INVALID_CURSOR)
    if len(cursor) > max_cursor_length() or not cursor.startswith(CURSOR_PREFIX):
        raise invalid
    body = cursor[len(CURSOR_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        entries = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise invalid from None
    if not isinstance(entries, list):
        raise invalid
    positions: dict[str, Position] = {}
    for entry in entries:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or not isinstance(entry[1], str)
            or isinstance(entry[2], bool)
            or not isinstance(entry[2], int)
            or entry[2] < 0
        ):
            raise invalid
        positions[entry[0]] = (entry[1], entry[2])
    return positions
