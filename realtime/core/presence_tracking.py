"""Presence as one process sees it: who of its connections joined where, and delivery.

``PresenceTracker`` owns which of the process's connections are members of which stream's
presence (with their metadata), sends a joining subscriber its snapshot before any change
that follows it, drops presence messages older than one already delivered, sends counts of
counts-only streams at most every ``COUNT_INTERVAL``, and resends the full state after a
channel-layer outage. The rows themselves are ``realtime.presence``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from realtime.bus.messages import PresenceMessage
from realtime.conf import realtime_settings
from realtime.protocol import presence_change_frame, presence_count_frame, presence_state_frame
from realtime.storage import presence

if TYPE_CHECKING:
    from realtime.core.hub import Hub
    from realtime.core.state import HubConnection, StreamState
    from realtime.core.subscription import Subscription

logger = logging.getLogger("realtime.hub")

# Seconds a hub remembers the version of a member that left. Channel layers drop messages
# older than their expiry (60 s by default in channels-redis and the in-memory layer), so a
# message of the member's older than this cannot arrive any more.
DEPARTED_TTL = 90.0
# Occupancy of counts-only streams is sent at most this often.
COUNT_INTERVAL = 1.0


class StreamPresence:
    """A stream's presence versions in this process, and its pending count.

    ``versions`` holds the newest version delivered per member key, so an older message
    that arrives late is dropped. A member that left stays in it (and in ``departed``, with
    when to forget it) for ``DEPARTED_TTL`` only: enough to drop its late messages, while
    members who come and go cannot grow it without bound.
    """

    __slots__ = ("count_task", "departed", "held", "versions")

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.departed: dict[str, float] = {}  # key -> monotonic time to forget it, in order
        self.count_task: asyncio.Task[None] | None = None
        # key -> the timer that shows a draining process's member leaving (see ``hold``)
        self.held: dict[str, asyncio.TimerHandle] = {}

    def saw(self, key: str, version: int, left: bool, now: float) -> bool:
        """Record a presence message's version; False if it is older than one delivered."""
        if version <= self.versions.get(key, 0):
            return False
        self.versions[key] = version
        self.departed.pop(key, None)
        if left:
            self.departed[key] = now + DEPARTED_TTL
        return True

    def forget_departed(self, now: float) -> None:
        for key, until in list(self.departed.items()):
            if until > now:
                break
            del self.departed[key]
            self.versions.pop(key, None)

    def hold(self, key: str, timer: asyncio.TimerHandle) -> None:
        """Show the member's leave when ``timer`` fires, unless it is back before."""
        self.release(key)
        self.held[key] = timer

    def release(self, key: str) -> bool:
        """Cancel the member's held leave; whether there was one."""
        timer = self.held.pop(key, None)
        if timer is not None:
            timer.cancel()
        return timer is not None

    def close(self) -> None:
        if self.count_task is not None:
            self.count_task.cancel()
        for timer in self.held.values():
            timer.cancel()
        self.held.clear()


class PresenceTracker:
    """The presence of one hub's connections (see the module docstring)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._joined: dict[str, dict[str, Any]] = {}  # connection id -> stream -> meta

    # --- membership ------------------------------------------------------------------
    def is_member(self, conn_id: str, stream: str) -> bool:
        return stream in self._joined.get(conn_id, ())

    def forget(self, conn_id: str) -> bool:
        """Drop a released connection; whether it had joined any presence."""
        return bool(self._joined.pop(conn_id, None))

    async def join(self, sub: Subscription, key: str, user_id: Any, meta: Any) -> str:
        """Join (or update) ``sub``'s connection in the stream's presence; returns its ref.

        The joining connection gets ``presence.state`` (or ``presence.count``) before any
        presence frame that follows the snapshot.
        """
        stream, conn = sub.stream, sub.conn
        first = sub.presence_buffer is None and not self.is_member(conn.id, stream)
        if first:
            sub.presence_buffer = []
        try:
            message, ref = await presence.ajoin(stream, key, user_id, conn.id, self.hub.id, meta)
            self._joined.setdefault(conn.id, {})[stream] = meta
            sub.presence_ref = ref
            await self.hub.fan_out_all([message])
            if first:
                await self._send_snapshot(sub, ref)
        finally:
            if first:
                sub.presence_buffer = None
        await conn.flush()
        return ref

    async def _send_snapshot(self, sub: Subscription, ref: str) -> None:
        stream = sub.stream
        if presence.counts_only(stream):
            counts = await presence.acounts(stream)
            sub.conn.presence(sub, "count", presence_count_frame(stream, **counts))
            return
        members, versions = await presence.asnapshot(stream)
        # Not merged into the process-wide versions: only this subscriber got the
        # snapshot, and the others still need the messages it holds (this join's own
        # among them, which may reach the layer reader after this).
        sub.conn.presence(sub, "state", presence_state_frame(stream, ref, members))
        for buffered in sub.presence_buffer or []:
            if buffered["version"] > versions.get(buffered["key"], 0):
                sub.conn.presence(sub, buffered["kind"], presence_frame(buffered))
        sub.presence_seen = dict(versions)

    async def leave(self, conn_id: str, streams: list[str] | None = None) -> None:
        """Leave presence now (no grace): on ``streams``, or on every stream."""
        joined = self._joined.get(conn_id, {})
        names = list(joined) if streams is None else streams
        if not names:
            return
        for name in names:
            joined.pop(name, None)
        if not joined:
            self._joined.pop(conn_id, None)
        await self.hub.fan_out_all(await presence.aleave(conn_id, names))

    async def expire(self, now: float) -> None:
        """Members whose connection went silent for PRESENCE_TIMEOUT leave."""
        timeout = realtime_settings.PRESENCE_TIMEOUT
        for conn in list(self.hub.connections.values()):
            if self._joined.get(conn.id) and now - conn.last_seen > timeout:
                logger.info("Connection %s missed its presence heartbeats.", conn.id)
                await self.leave(conn.id)
        for state in self.hub.streams.values():
            if (presence := state.presence_if_any) is not None:
                presence.forget_departed(now)

    async def rejoin(self, conn: HubConnection) -> None:
        """Record ``conn``'s presence again (its server's lease had been swept)."""
        for stream, meta in list(self._joined.get(conn.id, {}).items()):
            message, _ = await presence.ajoin(
                stream, conn.presence_key, conn.user_id, conn.id, self.hub.id, meta
            )
            await self.hub.fan_out_all([message])

    # --- delivery --------------------------------------------------------------------
    async def deliver(self, state: StreamState, message: PresenceMessage) -> None:
        """A presence message from the layer, to the stream's local subscribers.

        A draining process's leave (``hold``) is shown only after its hold: a member that
        reconnects meanwhile (to any process) shows as an ``update``, never having left.
        """
        key, left = message["key"], message["kind"] == "leave"
        if not state.presence.saw(key, message["version"], left, time.monotonic()):
            return  # older than what this process already delivered
        was_held = state.presence.release(key)
        if presence.counts_only(message["stream"]):
            self.schedule_count(message["stream"], state)
            return
        if left and message.get("hold"):
            loop = asyncio.get_running_loop()
            timer = loop.call_later(message["hold"], self._show_held, state, message)
            state.presence.hold(key, timer)
            return
        if was_held and message["kind"] == "join":
            message = {**message, "kind": "update"}
        await self._offer(state, message)

    def _show_held(self, state: StreamState, message: PresenceMessage) -> None:
        state.presence.held.pop(message["key"], None)
        self.hub.spawn(self._offer(state, message))

    @staticmethod
    async def _offer(state: StreamState, message: PresenceMessage) -> None:
        frame = presence_frame(message)
        dirty = [sub.conn for sub in list(state.subs) if sub.offer_presence(message, frame)]
        for conn in dirty:
            await conn.flush()

    async def resync(self) -> None:
        """Send a fresh ``presence.state`` to every local member (after a layer outage)."""
        for stream, state in list(self.hub.streams.items()):
            members = [
                s for s in state.subs if self.is_member(s.conn.id, stream) and s.sees_presence
            ]
            if not members:
                continue
            if presence.counts_only(stream):
                self.schedule_count(stream, state)
                continue
            try:
                snapshot, versions = await presence.asnapshot(stream)
            except Exception:
                logger.warning("Presence resync of %s failed.", stream, exc_info=True)
                continue
            now = time.monotonic()
            for key, version in versions.items():
                state.presence.saw(key, version, False, now)
            for sub in members:
                frame = presence_state_frame(stream, sub.presence_ref, snapshot)
                sub.conn.presence(sub, "state", frame)
                await sub.conn.flush()

    def schedule_count(self, stream: str, state: StreamState) -> None:
        task = state.presence.count_task
        if task is None or task.done():
            state.presence.count_task = asyncio.get_running_loop().create_task(
                self._send_count(stream, state)
            )

    async def _send_count(self, stream: str, state: StreamState) -> None:
        await asyncio.sleep(COUNT_INTERVAL)
        try:
            counts = await presence.acounts(stream)
        except Exception:
            logger.warning("Counting presence on %s failed.", stream, exc_info=True)
            return
        text = presence_count_frame(stream, **counts)
        conns = {sub.conn: sub for sub in state.subs if sub.sees_presence}
        for conn, sub in conns.items():
            conn.presence(sub, "count", text)
            await conn.flush()


def presence_frame(message: PresenceMessage) -> str:
    """The client frame of a presence layer message."""
    return presence_change_frame(
        message["kind"], message["stream"], message["key"], message.get("metas")
    )
