"""Redis Cluster as the backplane (``REALTIME["BACKPLANE"] = "redis-cluster://h:7000,h:7001"``):
sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``, Redis 7) on redis-py's async ``RedisCluster``.

A group is the shard channel ``realtime.<prefix>.g.<group>``, a process's channel
``realtime.<prefix>.c.<channel>``: each hashes to a slot, so the channels spread over the
cluster's primaries and a message travels only to the node that owns its slot and from there
to the processes subscribed. A process subscribes once per group; the hub's channels of one
event loop share that subscription. Redis keeps one connection's messages to one shard channel
in order; it keeps nothing for a subscriber that is away, which the hub's reconciler repairs
from the database.

One ``RedisCluster`` client and one ``ClusterPubSub`` per event loop, opened on first use and
closed with the loop, and msgpack bodies (``realtime.bus.backends.links``). One reader task
per loop polls the pub/sub (``get_sharded_message``) and hands each message to its
channels' queues. redis-py follows the slots: a node that stops and comes back, or a slot
that moves, gets its subscriptions again by itself; a publish to a node that is down fails
(logged by the caller: the reconciler delivers it). When every node failed a poll, the
reader tells each channel (``BackplaneInterrupted``, once) when reading works again, so the
hub re-joins and re-sends presence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster

from realtime.bus.backends.base import Pair
from realtime.bus.backends.links import INTERRUPTED, LinkedBackplane
from realtime.bus.messages import batches

logger = logging.getLogger("realtime.bus")

# Seconds a poll of the pub/sub waits: a message for another node waits at most this long
# behind an idle node's poll (redis-py splits the wait over the nodes).
POLL = 0.02
# Seconds between reads after a poll failed on every node.
RETRY = 0.5


@dataclass
class _Link:
    """A loop's client, pub/sub and reader, and who receives what."""

    client: RedisCluster
    pubsub: ClusterPubSub
    queues: dict[str, asyncio.Queue[bytes]] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)  # subject -> channels
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # (un)subscribes in turn
    joined: asyncio.Event = field(default_factory=asyncio.Event)  # set while subscribed
    reader: asyncio.Task[None] | None = None


class RedisClusterBackplane(LinkedBackplane[_Link]):
    """Sharded pub/sub on Redis Cluster; see the module docstring."""

    label = "Redis Cluster backplane"

    def __init__(self, nodes: list[tuple[str, int]], prefix: str = "default") -> None:
        super().__init__(prefix)
        self.nodes = nodes

    @classmethod
    def from_url(cls, url: str) -> RedisClusterBackplane:
        """``redis-cluster://host:7000,host:7001?prefix=name``: a few nodes to start from."""
        nodes = []
        for part in url.split("://", 1)[1].split("?", 1)[0].split(","):
            found = urlsplit(f"redis://{part.strip()}")
            if not found.hostname:
                raise ImproperlyConfigured(f"REALTIME['BACKPLANE']: no host in {part!r}.")
            nodes.append((found.hostname, found.port or 6379))
        prefix = parse_qs(urlsplit(url).query).get("prefix", ["default"])[-1]
        return cls(nodes, prefix)

    # --- connections ---------------------------------------------------------------------
    async def _connect(self) -> _Link:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            socket_connect_timeout=2,
        )
        try:
            await client.initialize()
        except BaseException:
            await client.aclose()
            raise
        link = _Link(client, client.pubsub())
        link.reader = asyncio.get_running_loop().create_task(self._read(link))
        return link

    async def _read(self, link: _Link) -> None:
        failing = False
        while True:
            if not link.members:
                # Nothing to poll (a loop that only publishes: the sync sender's).
                link.joined.clear()
                await link.joined.wait()
                continue
            try:
                message = await link.pubsub.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=POLL
                )
            except Exception:
                if not failing:
                    logger.warning("Redis Cluster backplane: reading failed; retrying.")
                failing = True
                await asyncio.sleep(RETRY)
                continue
            if failing:
                failing = False
                logger.warning("Redis Cluster backplane: reading again.")
                for queue in link.queues.values():
                    queue.put_nowait(INTERRUPTED)
            if message is None or message.get("type") != "smessage":
                continue
            subject = message["channel"].decode()
            for channel in link.members.get(subject, ()):
                found = link.queues.get(channel)
                if found is not None:
                    found.put_nowait(message["data"])

    async def _disconnect(self, link: _Link) -> None:
        if link.reader is not None:
            link.reader.cancel()
            with contextlib.suppress(BaseException):
                await link.reader
        with contextlib.suppress(Exception):
            await link.pubsub.aclose()
        await link.client.aclose()

    # --- membership ----------------------------------------------------------------------
    async def _join(self, link: _Link, subject: str, channel: str) -> None:
        async with link.lock:
            members = link.members.get(subject)
            if members is not None and channel in members:
                return
            if members is None:
                await link.pubsub.ssubscribe(subject)
                members = link.members[subject] = set()
            members.add(channel)
            link.joined.set()

    async def _leave(self, link: _Link, subject: str, channel: str) -> None:
        async with link.lock:
            members = link.members.get(subject)
            if members is None or channel not in members:
                return
            members.discard(channel)
            if not members:
                del link.members[subject]
                await link.pubsub.sunsubscribe(subject)

    def _queue(self, link: _Link, channel: str) -> asyncio.Queue[bytes]:
        return link.queues.setdefault(channel, asyncio.Queue())

    async def new_channel(self, prefix: str) -> str:
        channel = f"{prefix}.{uuid.uuid4().hex}"
        link = await self._link()
        self._queue(link, channel)
        await self._join(link, self.channel_subject(channel), channel)
        return channel

    async def receive(self, channel: str) -> dict[str, Any]:
        subject = self.channel_subject(channel)
        link = await self._link()
        queue = self._queue(link, channel)
        if channel not in link.members.get(subject, ()):
            await self._join(link, subject, channel)
        return self.unpack(await queue.get())

    async def close_channel(self, channel: str) -> None:
        link = self._current()
        if link is None:
            return
        link.queues.pop(channel, None)
        for subject in [s for s, members in link.members.items() if channel in members]:
            with contextlib.suppress(Exception):
                await self._leave(link, subject, channel)

    async def group_add(self, group: str, channel: str) -> None:
        subject = self.group_subject(group)
        link = await self._link()
        self._queue(link, channel)
        await self._join(link, subject, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await self._leave(await self._link(), self.group_subject(group), channel)

    # --- sending -------------------------------------------------------------------------
    async def send(self, channel: str, message: Any) -> None:
        link = await self._link()
        await link.client.spublish(self.channel_subject(channel), msgpack.packb(message))

    async def group_send_many(self, items: Sequence[Pair]) -> None:
        if not items:
            return
        link = await self._link()
        by_group: dict[str, list[Any]] = {}
        for group, message in items:
            by_group.setdefault(group, []).append(message)
        subjects = {group: self.group_subject(group) for group in by_group}  # names checked

        async def in_order(group: str, messages: list[Any]) -> None:
            for payload in batches(messages):
                await link.client.spublish(subjects[group], msgpack.packb(payload))

        # Groups concurrently (their slots are on different nodes), each group's in order.
        await asyncio.gather(*(in_order(group, ms) for group, ms in by_group.items()))


__all__ = ["RedisClusterBackplane"]
