"""NATS as the backplane (``REALTIME["BACKPLANE"] = "nats://host:4222"``), on nats-py.

Core NATS subjects, no JetStream: a group is the subject ``realtime.<prefix>.g.<group>``, a
channel ``realtime.<prefix>.c.<channel>`` (dots of the names as ``~``: one token each). A
process subscribes once per group it joins, so the server sends it one copy of each message,
as a channel-layer group does. NATS keeps one connection's messages to one subject in order,
which is the order the hub needs; it keeps nothing for a subscriber that is away, which the
hub's reconciler repairs from the database.

One connection per event loop, closed with its loop, and msgpack bodies
(``realtime.bus.backends.links``). nats-py reconnects by itself
(``max_reconnect_attempts=-1``) and subscribes again; what is published meanwhile waits in
its buffer (``pending_size``, 2 MB; past it a send fails, logged, and the reconciler
delivers). After a reconnect each channel's ``receive`` raises
``BackplaneInterrupted`` once, in order with its messages, so the hub re-joins its groups
and re-sends presence, as after a channel-layer failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack  # type: ignore[import-untyped]
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError

from realtime.bus.backends.base import Pair
from realtime.bus.backends.links import INTERRUPTED, LinkedBackplane
from realtime.bus.messages import BATCH, EVENTS, batches, events

logger = logging.getLogger("realtime.bus")

# Seconds a first connection may take (nats-py would otherwise retry for ever).
CONNECT_TIMEOUT = 5.0
# Seconds between reconnect attempts to one server.
RECONNECT_WAIT = 0.5
# A silent connection is found dead after PING_INTERVAL * (MAX_OUTSTANDING_PINGS + 1) s.
PING_INTERVAL = 10
MAX_OUTSTANDING_PINGS = 2
# Seconds a send waits for the server to confirm what it wrote (a PING's PONG).
FLUSH_TIMEOUT = 2


@dataclass
class _Link:
    """A loop's connection, its channels' queues and its subscriptions."""

    client: Client
    queues: dict[str, asyncio.Queue[bytes]] = field(default_factory=dict)
    inboxes: dict[str, Subscription] = field(default_factory=dict)
    joined: dict[tuple[str, str], Subscription | None] = field(default_factory=dict)


class NatsBackplane(LinkedBackplane[_Link]):
    """Core NATS subjects; see the module docstring."""

    label = "NATS backplane"

    def __init__(self, servers: list[str], prefix: str = "default") -> None:
        super().__init__(prefix)
        self.servers = servers

    @classmethod
    def from_url(cls, url: str) -> NatsBackplane:
        """``nats://a:4222,nats://b:4222?prefix=name`` (credentials as
        ``nats://user:password@host:4222`` or ``nats://token@host:4222``). TLS is used when
        the server requires it (``tls://`` says so), verified against the system's CAs."""
        parts = urlsplit(url)
        servers = [
            part if "://" in part else f"{parts.scheme}://{part}"
            for part in url.split("?", 1)[0].split(",")
            if part.strip()
        ]
        prefix = parse_qs(parts.query).get("prefix", ["default"])[-1]
        return cls(servers, prefix)

    # --- connections ---------------------------------------------------------------------
    async def _connect(self) -> _Link:
        link: _Link | None = None

        async def reconnected() -> None:
            logger.warning("NATS backplane reconnected to %s.", client.connected_url)
            for queue in link.queues.values() if link is not None else ():
                queue.put_nowait(INTERRUPTED)

        async def disconnected() -> None:
            if not client.is_closed:
                logger.warning("NATS backplane disconnected; reconnecting.")

        async def error(exc: Exception) -> None:
            if isinstance(exc, SlowConsumerError):
                # The reconciler delivers what was dropped.
                logger.warning("NATS dropped a message for %s: this process lags.", exc.subject)
            else:
                logger.debug("NATS backplane: %s", exc)

        client = Client()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await client.connect(
                    self.servers,
                    name=f"realtime {socket.gethostname()} {os.getpid()}",
                    reconnected_cb=reconnected,
                    disconnected_cb=disconnected,
                    error_cb=error,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]
                    ping_interval=PING_INTERVAL,
                    max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                    connect_timeout=2,
                )
        except BaseException as exc:
            await client.close()
            if isinstance(exc, TimeoutError):
                raise ConnectionError(
                    f"NATS backplane: no server of {self.servers} answered within "
                    f"{CONNECT_TIMEOUT:g} s."
                ) from None
            raise
        link = _Link(client)
        return link

    async def _disconnect(self, link: _Link) -> None:
        await link.client.close()

    # --- channels ------------------------------------------------------------------------
    async def _queue(self, link: _Link, channel: str) -> asyncio.Queue[bytes]:
        queue = link.queues.get(channel)
        if queue is None:
            subject = self.channel_subject(channel)
            queue = link.queues[channel] = asyncio.Queue()
            try:
                link.inboxes[channel] = await link.client.subscribe(subject, cb=_into(queue))
            except BaseException:
                del link.queues[channel]
                raise
        return queue

    async def new_channel(self, prefix: str) -> str:
        channel = f"{prefix}.{uuid.uuid4().hex}"
        await self._queue(await self._link(), channel)
        return channel

    async def receive(self, channel: str) -> dict[str, Any]:
        queue = await self._queue(await self._link(), channel)
        return self.unpack(await queue.get())

    async def close_channel(self, channel: str) -> None:
        link = self._current()
        if link is None:
            return
        link.queues.pop(channel, None)
        subs = [link.inboxes.pop(channel, None)]
        for key in [key for key in link.joined if key[1] == channel]:
            subs.append(link.joined.pop(key))
        for sub in subs:
            if sub is not None and not link.client.is_closed:
                await sub.unsubscribe()

    # --- groups --------------------------------------------------------------------------
    async def group_add(self, group: str, channel: str) -> None:
        subject = self.group_subject(group)
        link = await self._link()
        key = (group, channel)
        if key in link.joined:
            return
        link.joined[key] = None  # taken: a concurrent add of the same pair returns above
        try:
            queue = await self._queue(link, channel)
            link.joined[key] = await link.client.subscribe(subject, cb=_into(queue))
        except BaseException:
            link.joined.pop(key, None)
            raise

    async def group_discard(self, group: str, channel: str) -> None:
        link = await self._link()
        sub = link.joined.pop((group, channel), None)
        if sub is not None:
            await sub.unsubscribe()

    # --- sending -------------------------------------------------------------------------
    async def send(self, channel: str, message: Any) -> None:
        link = await self._link()
        await self._publish(link.client, self.channel_subject(channel), message)
        await _flushed(link.client)

    async def group_send_many(self, items: Sequence[Pair]) -> None:
        if not items:
            return
        link = await self._link()
        by_group: dict[str, list[Any]] = {}
        for group, message in items:
            by_group.setdefault(group, []).append(message)
        for group, messages in by_group.items():
            subject = self.group_subject(group)
            for payload in batches(messages):
                await self._publish(link.client, subject, payload)
        await _flushed(link.client)

    async def _publish(self, client: Client, subject: str, message: Any) -> None:
        """Publish ``message``, split where it is over the server's ``max_payload``."""
        data = msgpack.packb(message)
        if len(data) <= client.max_payload:
            await client.publish(subject, data)
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == BATCH and len(message["messages"]) > 1:
            for inner in message["messages"]:
                await self._publish(client, subject, inner)
        elif kind == EVENTS and len(message["events"]) > 1:
            half = len(message["events"]) // 2
            stream, sent = message["stream"], message.get("t")
            for part in (message["events"][:half], message["events"][half:]):
                await self._publish(client, subject, events(stream, part, sent))
        else:  # stored: the reconciler delivers it
            logger.warning(
                "A %s message of %d bytes is over NATS's max_payload (%d); not sent.",
                kind,
                len(data),
                client.max_payload,
            )


def _into(queue: asyncio.Queue[bytes]) -> Callable[[Msg], Coroutine[Any, Any, None]]:
    async def deliver(msg: Msg) -> None:
        queue.put_nowait(msg.data)

    return deliver


async def _flushed(client: Client) -> None:
    """Wait until the server has what was published (a PING's PONG); while reconnecting,
    nats-py holds it in its buffer and sends it on reconnect."""
    if client.is_connected:
        await client.flush(FLUSH_TIMEOUT)


__all__ = ["NatsBackplane"]
