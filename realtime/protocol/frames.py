"""The server's frames, each built in exactly one place: here.

Every function returns the frame's JSON text (``subscribed_frame`` its dict: transports add
their own bookkeeping before encoding it). ``schemas/server/*.json`` describe what these
build, and ``tests/e2e/test_schemas.py`` calls each one and validates the result.

An event frame is encoded once, where it is published, and that same text travels through
the channel layer and out to every WebSocket and SSE client: ``event_frame`` builds it
around already-encoded ``data`` rather than encoding the payload again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from realtime.protocol.codes import PROTOCOL_VERSION, REVOKED
from realtime.protocol.jsontext import dumps
from realtime.protocol.types import FrameId, SubscribedFrame


def welcome_frame(
    connection_id: str, *, heartbeat: float, window: tuple[int, int], batch: bool, max_frame: int
) -> str:
    """The first frame of a connection; ``window`` is (messages, bytes)."""
    return dumps(
        {
            "type": "welcome",
            "connection_id": connection_id,
            "protocol": PROTOCOL_VERSION,
            "heartbeat": heartbeat,
            "window": {"messages": window[0], "bytes": window[1]},
            "batch": batch,
            "max_frame": max_frame,
        }
    )


def subscribed_frame(
    frame_id: FrameId | None, stream: str, epoch: str, head: int, recovered: bool
) -> SubscribedFrame:
    """A subscription starts (or starts over) at ``head``: the one frame built as a dict."""
    return {
        "type": "subscribed",
        "id": frame_id,
        "stream": stream,
        "epoch": epoch,
        "seq": head,
        "recovered": recovered,
    }


def event_frame(stream: str, seq: int | None, event: str, data_json: str, ts: str) -> str:
    """The ``event`` frame as JSON text, built around already-encoded ``data``."""
    seq_part = "" if seq is None else f',"seq":{seq}'
    return (
        f'{{"type":"event","stream":{json.dumps(stream)}{seq_part},'
        f'"event":{json.dumps(event)},"data":{data_json},"ts":"{ts}"}}'
    )


def unsubscribed_frame(frame_id: FrameId | None, stream: str, *, revoked: bool = False) -> str:
    """Reply to ``unsubscribe``; ``revoked``: the server ended the subscription itself."""
    if revoked:
        return dumps({"type": "unsubscribed", "id": None, "stream": stream, "reason": REVOKED})
    return dumps({"type": "unsubscribed", "id": frame_id, "stream": stream})


def publish_ack_frame(frame_id: FrameId | None, seq: int | None, duplicate: bool = False) -> str:
    """The ``ack`` of a ``publish``: the stored seq (``None`` if ephemeral)."""
    ack: dict[str, Any] = {"type": "ack", "id": frame_id, "seq": seq}
    if duplicate:
        ack["duplicate"] = True
    return dumps(ack)


def presence_ack_frame(frame_id: FrameId | None, ref: str | None) -> str:
    """The ``ack`` of a ``presence`` frame: this connection's ``ref``, none after leaving."""
    if ref is None:
        return dumps({"type": "ack", "id": frame_id})
    return dumps({"type": "ack", "id": frame_id, "ref": ref})


def pong_frame(ping: Mapping[str, Any]) -> str:
    """Reply to ``ping``: its ``id`` if it had one (even ``null``), no ``id`` otherwise."""
    if "id" in ping:
        return dumps({"type": "pong", "id": ping["id"]})
    return dumps({"type": "pong"})


def error_frame(code: str, message: str, frame_id: FrameId | None = None) -> str:
    return dumps({"type": "error", "id": frame_id, "code": code, "message": message})


def snapshot_frame(stream: str, seq: int, data: Any) -> str:
    """A stream's current state as of ``seq``, when its history could not be recovered."""
    return dumps({"type": "snapshot", "stream": stream, "seq": seq, "data": data})


def gap_frame(stream: str, first: int, last: int) -> str:
    """Seqs ``first`` to ``last`` of ``stream`` were skipped (a slow ``skip`` stream)."""
    return dumps({"type": "gap", "stream": stream, "from": first, "to": last})


def presence_state_frame(stream: str, ref: str | None, members: Mapping[str, Any]) -> str:
    """Everyone present on ``stream``, for the connection whose entry is ``ref``."""
    return dumps({"type": "presence.state", "stream": stream, "ref": ref, "members": members})


def presence_change_frame(
    kind: Literal["join", "update", "leave"] | str,
    stream: str,
    key: str,
    metas: list[dict[str, Any]] | None = None,
) -> str:
    """``presence.join`` / ``update`` (with the member's full ``metas``) or ``leave``."""
    frame: dict[str, Any] = {"type": f"presence.{kind}", "stream": stream, "key": key}
    if kind != "leave":
        frame["metas"] = metas
    return dumps(frame)


def presence_count_frame(stream: str, members: int, connections: int) -> str:
    """Occupancy of a counts-only stream (``PRESENCE_COUNTS_ONLY``)."""
    return dumps(
        {"type": "presence.count", "stream": stream, "members": members, "connections": connections}
    )


def batch_frame(frames: list[str]) -> str:
    """The ``batch`` frame holding already-encoded frames, in order (joined, not re-encoded)."""
    return '{"type":"batch","frames":[' + ",".join(frames) + "]}"


def restart_reason(delay_ms: int) -> str:
    """The reason of a close with ``CLOSE_SERVICE_RESTART``: when to reconnect, as JSON.

    Milliseconds, like SSE's ``retry:`` field; a close reason holds at most 123 bytes.
    """
    return dumps({"retry": int(delay_ms)})
