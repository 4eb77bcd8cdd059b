"""Sending: many groups' messages at once, a stream's messages, control messages.

``group_send_many`` sends a list of ``(group, message)`` pairs — a group commit's events over
many streams, what the process's sender queued, the hub's presence sweep — through the
backplane (``realtime.bus.backends``) in as few round trips as it allows: on channels-redis
that is ``realtime.bus.redis``, where several messages for one server process travel as one
``realtime.batch`` message that its hub unpacks in order; on NATS one publish per group and
batch. Any other channel layer (in-memory, pub/sub, a subclass that overrides ``group_send``)
gets its own ``group_send`` per message: each group's messages in order, groups concurrently.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from realtime.bus.backends import backplane
from realtime.bus.backends.base import Pair
from realtime.bus.groups import CONTROL_GROUP, group_name
from realtime.bus.messages import RevokeMessage, StatsRequestMessage, StreamMessage, stamped


async def group_send_many(items: Sequence[Pair]) -> None:
    """Send each ``(group, message)``; messages to one group arrive in the order given."""
    if items:
        await backplane().group_send_many(items)


async def fan_out(*messages: StreamMessage) -> None:
    """Send each message to its stream's group: one layer message per server process."""
    # The hubs time publish-to-fan-out latency from here (wall clocks: keep them in sync).
    now = time.time()
    await group_send_many(
        [(group_name(message["stream"]), stamped(message, now)) for message in messages]
    )


async def control_send(message: RevokeMessage | StatsRequestMessage) -> None:
    """Send ``message`` to every hub (the control group)."""
    await backplane().group_send(CONTROL_GROUP, message)
