"""The Channels layer as a backplane (the default): channels-redis, its Sentinel, TLS and
sharded setups, the in-memory layer, or any other Channels layer.

The layer is the one named by ``REALTIME["CHANNEL_LAYER"]``, looked up on every call (tests
swap it). On channels-redis' ``RedisChannelLayer`` many groups' messages go in two scripts
per host and concurrent joins share one (``realtime.bus.redis``, ``realtime.bus.joins``);
other layers get a ``group_send`` per message, each group's in order, groups concurrently.
Every call holds one of the loop's layer slots (``realtime.bus.layer.slot``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from channels.layers import InMemoryChannelLayer

from realtime.bus import joins, redis
from realtime.bus.backends.base import Backplane, Pair
from realtime.bus.layer import Layer, layer, slot


class ChannelLayerBackplane(Backplane):
    """Delegates to the channel layer; see the module docstring."""

    @property
    def loop_bound(self) -> bool:
        return isinstance(layer(), InMemoryChannelLayer)

    @property
    def layer(self) -> Layer:
        return layer()

    async def new_channel(self, prefix: str) -> str:
        return await layer().new_channel(prefix)

    async def receive(self, channel: str) -> dict[str, Any]:
        # Not slotted: the hub's receive waits for as long as the process is idle.
        return await layer().receive(channel)

    async def send(self, channel: str, message: Any) -> None:
        async with slot():
            await layer().send(channel, message)

    async def group_add(self, group: str, channel: str) -> None:
        await joins.group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        async with slot():
            await layer().group_discard(group, channel)

    async def group_send(self, group: str, message: Any) -> None:
        async with slot():
            await layer().group_send(group, message)

    async def group_send_many(self, items: Sequence[Pair]) -> None:
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
