"""Sending: many groups' messages at once, a stream's messages, control messages.

``group_send_many`` sends a list of ``(group, message)`` pairs — a group commit's events over
many streams, what the process's sender queued, the hub's presence sweep — in as few round
trips as the layer allows: on channels-redis that is ``realtime.bus.redis``, where several
messages for one server process travel as one ``realtime.batch`` message that its hub
unpacks in order. Any other layer (in-memory, pub/sub, a subclass that overrides
``group_send``) gets its own ``group_send`` per message: each group's messages in order,
groups concurrently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from realtime.bus import redis
from realtime.bus.groups import CONTROL_GROUP, group_name
from realtime.bus.layer import Layer, layer, slot
from realtime.bus.messages import RevokeMessage, StatsRequestMessage, StreamMessage, stamped

Pair = tuple[str, Any]  # (group, message)


async def group_send_many(items: Sequence[Pair]) -> None:
    """Send each ``(group, message)``; messages to one group arrive in the order given."""
    if not items:
        return
    found = layer()
    if redis.batchable(found):
        async with slot():
            await redis.send_many(found, items)
        return
    by_group: dict[str, list[Any]] = {}
    for group, message in items:
        by_group.setdefault(group, []).append(message)
    await asyncio.gather(*(_send_in_order(found, g, ms) for g, ms in by_group.items()))


async def _send_in_order(found: Layer, group: str, messages: list[Any]) -> None:
    for message in messages:
        async with slot():
            await found.group_send(group, message)


async def fan_out(*messages: StreamMessage) -> None:
    """Send each message to its stream's group: one layer message per server process."""
    # The hubs time publish-to-fan-out latency from here (wall clocks: keep them in sync).
    now = time.time()
    await group_send_many(
        [(group_name(message["stream"]), stamped(message, now)) for message in messages]
    )


async def control_send(message: RevokeMessage | StatsRequestMessage) -> None:
    """Send ``message`` to every hub (the control group)."""
    async with slot():
        await layer().group_send(CONTROL_GROUP, message)
