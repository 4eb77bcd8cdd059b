"""The naive Channels fan-out that ``bench.fanout`` measures the app against.

Written the way the Channels tutorial teaches it: one consumer per connection, each joining
the stream's group with ``group_add``, and a publisher calling ``group_send``. Every
connection thus has its own channel, its own receive loop and its own JSON encoding of every
event. It is served by ``bench.naive_asgi`` at ``/naive/ws/``; its wire format mirrors the
app's (``subscribe`` → ``subscribed``, ``event`` frames with a ``seq``, ``ping`` → ``pong``) so
that one load client drives both. It stores nothing and checks no permission, which only
flatters it in the comparison.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer

_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def group_name(stream: str) -> str:
    """The group of ``stream``: group names allow only ``[A-Za-z0-9_.-]``."""
    return "naive." + _GROUP_UNSAFE.sub("_", stream)[:90]


async def apublish(stream: str, event: str, data: Any, seq: int) -> None:
    """Send one event to every subscriber of ``stream`` (the caller numbers the events)."""
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    await layer.group_send(
        group_name(stream),
        {
            "type": "naive.event",
            "stream": stream,
            "seq": seq,
            "event": event,
            "data": data,
            "ts": datetime.now(UTC).isoformat(),
        },
    )


class NaiveConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """One WebSocket connection: subscribes to streams with ``group_add``."""

    async def connect(self) -> None:
        self.streams: set[str] = set()
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "subscribe" and isinstance(content.get("stream"), str):
            stream = content["stream"]
            await self.channel_layer.group_add(group_name(stream), self.channel_name)
            self.streams.add(stream)
            await self.send_json({"type": "subscribed", "id": content.get("id"), "stream": stream})
        elif kind == "ping":
            await self.send_json({"type": "pong"})

    async def disconnect(self, code: int) -> None:
        for stream in getattr(self, "streams", ()):
            await self.channel_layer.group_discard(group_name(stream), self.channel_name)

    async def naive_event(self, message: dict[str, Any]) -> None:
        await self.send_json(
            {
                "type": "event",
                "stream": message["stream"],
                "seq": message["seq"],
                "event": message["event"],
                "data": message["data"],
                "ts": message["ts"],
            }
        )
