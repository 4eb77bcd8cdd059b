"""Reading client frames: the hand-written checker that runs on every WebSocket message.

It checks what ``schemas/client/*.json`` say about each field's JSON type and bounds, in a
few microseconds; validating with ``jsonschema`` costs two to eight times as much per frame.
Stream names, event types and idempotency keys (``pattern`` in the schemas) are checked by
the consumer, with their own error codes. ``tests/unit/test_parsing.py`` generates frames from
the schemas and proves the two agree.
"""

from __future__ import annotations

from typing import Any

from realtime.conf import realtime_settings
from realtime.exceptions import ProtocolError
from realtime.protocol.codes import CLIENT_TYPES, MALFORMED_JSON, TOO_DEEP, UNKNOWN_TYPE
from realtime.protocol.jsontext import json_depth, loads


def _check_id(frame: dict[str, Any]) -> None:
    frame_id = frame.get("id")
    if frame_id is not None and (
        isinstance(frame_id, bool)
        or not isinstance(frame_id, str | int)
        or (isinstance(frame_id, str) and len(frame_id) > 64)
    ):
        raise ProtocolError("'id' must be a string (up to 64 characters) or an integer.")


def parse_client_frame(text: str) -> dict[str, Any]:
    """Decode one client frame, checking the fields its ``type`` needs.

    Raises ``ProtocolError`` whose ``code`` is ``malformed_json``, ``invalid_frame``,
    ``unknown_type`` or ``too_deep``; stream names and policy are checked by the consumer.
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
