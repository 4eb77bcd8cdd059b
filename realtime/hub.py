"""The per-process fan-out hub.

Each server process (each event loop) has one ``Hub``. It owns one channel-layer channel and
joins a stream's group once, when the first local connection subscribes, so a publish costs
one channel-layer message per process, not one per connection; the hub then hands the
already-encoded frame to every local subscriber (the design of Socket.IO's Redis adapter).

Delivery is exact per subscription. Each ``Subscription`` knows the last seq it delivered:
live events that continue it are sent at once; a duplicate is dropped; a gap — a lost layer
message, a race between two publishers' fan-outs, a resume — switches the subscription to
*syncing*, where history is read from the database page by page while live events are
buffered, until the buffer continues what the database gave. The database is the source of
truth, so nothing in the buffer is ever the only copy.

A reconciler in every hub compares its streams' positions with the database every
``RECONCILE_INTERVAL`` seconds, so even the last event of a burst whose layer message was
lost arrives within two intervals, and the hub keeps delivering (from the database) while
the channel layer is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from typing import Any, Protocol

from channels.layers import get_channel_layer

from realtime import store
from realtime.conf import realtime_settings
from realtime.protocol import SubscribedFrame, dumps, event_frame, format_ts
from realtime.streams import group_name

logger = logging.getLogger("realtime.hub")

# Live events buffered per syncing subscription before the buffer is dropped (the database
# has them all; the sync loop then reads once more instead of trusting the buffer).
MAX_PENDING = 10_000
# Re-add group memberships this often, before the channel layer's group_expiry drops them.
GROUP_REFRESH = 600.0


class Connection(Protocol):
    """What the hub needs of a WebSocket or SSE connection.

    ``deliver`` and ``subscribed`` only queue (they must not await), which is what keeps a
    subscription's frames in order; ``flush`` writes the queue out.
    """

    def deliver(self, sub: Subscription, event: str, frame: str) -> None: ...

    def subscribed(self, sub: Subscription, frame: SubscribedFrame) -> None: ...

    async def flush(self) -> None: ...


class Subscription:
    """One connection's subscription to one stream, and its delivery position."""

    __slots__ = (
        "active",
        "conn",
        "epoch",
        "id",
        "overflowed",
        "pending",
        "position",
        "requested_epoch",
        "since",
        "stream",
        "syncing",
        "task",
    )

    def __init__(
        self,
        conn: Connection,
        stream: str,
        *,
        sub_id: Any = None,
        since: int | None = None,
        epoch: str | None = None,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.id = sub_id
        self.since = since
        self.requested_epoch = epoch
        self.epoch: str | None = None  # None until the hub has read the stream
        self.position = 0
        self.syncing = True
        self.pending: list[dict[str, Any]] = []
        self.overflowed = False
        self.active = True
        self.task: asyncio.Task[None] | None = None

    def offer(self, message: dict[str, Any]) -> bool:
        """Take one live layer message; returns whether a frame was queued.

        Never awaits: the hub calls it for every local subscriber of the stream in turn.
        """
        seq = message["seq"]
        if seq is None:  # ephemeral: best effort, only once the subscription is live
            if self.syncing:
                return False
            self.conn.deliver(self, message["event"], message["frame"])
            return True
        if self.syncing:
            self._buffer(message)
            return False
        if message["epoch"] == self.epoch:
            if seq <= self.position:
                return False
            if seq == self.position + 1:
                self.position = seq
                self.conn.deliver(self, message["event"], message["frame"])
                return True
        self._buffer(message)
        self.start_sync()
        return False

    def _buffer(self, message: dict[str, Any]) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.pending.clear()
            self.overflowed = True
        self.pending.append(message)

    def start_sync(self) -> None:
        """Catch up from the database (no-op if already doing so)."""
        if not self.active or (self.task is not None and not self.task.done()):
            return
        self.syncing = True
        self.task = asyncio.get_running_loop().create_task(self._sync())

    def subscribed_frame(self, head: int, recovered: bool) -> SubscribedFrame:
        assert self.epoch is not None
        return {
            "type": "subscribed",
            "id": self.id,
            "stream": self.stream,
            "epoch": self.epoch,
            "seq": head,
            "recovered": recovered,
        }

    async def _sync(self) -> None:
        delay = 0.1
        while self.active:
            try:
                done = await self._sync_step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Catching up %s from the database failed; retrying.", self.stream)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            await self.conn.flush()
            if done:
                return

    async def _sync_step(self) -> bool:
        """One round of catching up; returns True once the subscription is live."""
        batch = int(realtime_settings.REPLAY_BATCH_SIZE)
        rows, info = await store.aread(self.stream, self.position, batch)
        if not self.active:
            return True
        if info is None or info.epoch != self.epoch:
            # The stream was reset (or deleted) since we last looked: start over.
            if info is None:
                info = await store.astream_info(self.stream, create=True)
                assert info is not None
            self.requested_epoch, self.since = None, 0
            self._start_from(info, force_unrecovered=True)
            return False
        lost = (rows and rows[0].seq != self.position + 1) or (
            not rows and info.trimmed_seq > self.position
        )
        if lost:
            # Retention deleted events this subscription had not delivered yet.
            self.position = (rows[0].seq - 1) if rows else info.trimmed_seq
            self.conn.subscribed(self, self.subscribed_frame(info.last_seq, False))
        for row in rows:
            self.position = row.seq
            self.conn.deliver(
                self,
                row.event,
                event_frame(self.stream, row.seq, row.event, dumps(row.data), format_ts(row.ts)),
            )
        if len(rows) == batch or self.overflowed:
            self.overflowed = False
            return False
        return self._drain()

    def _start_from(self, info: store.StreamInfo, *, force_unrecovered: bool = False) -> None:
        """Decide where delivery starts, and announce it with a ``subscribed`` frame."""
        since, wanted = self.since, self.requested_epoch
        recovered = not force_unrecovered
        if since is None:
            start = info.last_seq  # live only: nothing to recover
        elif (
            (wanted is not None and wanted != info.epoch)
            or since > info.last_seq
            or since < info.trimmed_seq
        ):
            start, recovered = info.trimmed_seq, False
        else:
            start = since
        self.epoch, self.position = info.epoch, start
        self.pending = [m for m in self.pending if m["epoch"] == info.epoch]
        self.conn.subscribed(self, self.subscribed_frame(info.last_seq, recovered))

    def _drain(self) -> bool:
        """Deliver buffered live events that continue the position; True when live again."""
        pending, self.pending = sorted(self.pending, key=lambda m: m["seq"]), []
        for index, message in enumerate(pending):
            seq = message["seq"]
            if message["epoch"] != self.epoch:
                return False  # the database will say which epoch is current
            if seq <= self.position:
                continue
            if seq != self.position + 1:
                self.pending = pending[index:]
                return False
            self.position = seq
            self.conn.deliver(self, message["event"], message["frame"])
        self.syncing = False
        return True

    def close(self) -> None:
        self.active = False
        self.pending = []
        if self.task is not None and not self.task.done():
            self.task.cancel()


class StreamState:
    """A hub's local subscribers of one stream, and its group membership."""

    __slots__ = ("checked_head", "joined", "lock", "subs")

    def __init__(self) -> None:
        self.subs: dict[Subscription, None] = {}  # insertion-ordered set
        self.joined = False
        self.lock = asyncio.Lock()
        self.checked_head = 0


class Hub:
    """One per event loop: see the module docstring. Get it with ``get_hub()``."""

    def __init__(self) -> None:
        self.layer = get_channel_layer(realtime_settings.CHANNEL_LAYER)
        if self.layer is None:
            raise RuntimeError(
                f"realtime needs a channel layer: CHANNEL_LAYERS has no "
                f"{realtime_settings.CHANNEL_LAYER!r} alias."
            )
        self.streams: dict[str, StreamState] = {}
        self.channel: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started: asyncio.Future[None] | None = None
        self._last_refresh = time.monotonic()
        self._last_prune = time.monotonic() + random.uniform(0, 10)

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                self.channel = await self.layer.new_channel("realtime.hub.")
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started = None
                raise
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._read_layer(), name="realtime-hub-reader"),
                loop.create_task(self._maintain(), name="realtime-hub-maintenance"),
            ]
            self._started.set_result(None)
        await asyncio.shield(self._started)

    async def close(self) -> None:
        """Stop the hub's tasks (tests and orderly shutdown)."""
        for state in self.streams.values():
            for sub in state.subs:
                sub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.streams.clear()

    # --- subscriptions ---------------------------------------------------------------
    async def subscribe(
        self,
        conn: Connection,
        stream: str,
        *,
        sub_id: Any = None,
        since: int | None = None,
        epoch: str | None = None,
    ) -> Subscription:
        """Subscribe ``conn`` to ``stream``; frames follow through ``conn``.

        The group is joined *before* history is read, so every event committed after the
        read arrives live: nothing falls between replay and live.
        """
        await self.start()
        sub = Subscription(conn, stream, sub_id=sub_id, since=since, epoch=epoch)
        state = self.streams.get(stream)
        if state is None:
            state = self.streams[stream] = StreamState()
        state.subs[sub] = None
        try:
            await self._join(stream, state)
            # Positioned before returning, so a frame the client sends next (a publish, say)
            # is ordered after the subscription; the replay goes on in the background.
            info = await store.astream_info(stream, create=True)
        except BaseException:
            await self.unsubscribe(sub)
            raise
        assert info is not None
        sub._start_from(info)
        sub.start_sync()
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        state = self.streams.get(sub.stream)
        if state is None:
            return
        state.subs.pop(sub, None)
        if state.subs:
            return
        async with state.lock:
            # New subscribers may arrive while we wait: they find this same state (still in
            # the dict) and re-join after us, under the same lock.
            if state.subs:
                return
            if state.joined:
                state.joined = False
                try:
                    await self.layer.group_discard(group_name(sub.stream), self.channel)
                except Exception:
                    logger.warning("Leaving the group of %s failed.", sub.stream, exc_info=True)
            if not state.subs and self.streams.get(sub.stream) is state:
                del self.streams[sub.stream]

    async def _join(self, stream: str, state: StreamState) -> None:
        if state.joined:
            return
        async with state.lock:
            if state.joined:
                return
            try:
                await self.layer.group_add(group_name(stream), self.channel)
            except Exception:
                # Served from the database by the reconciler until the layer is back.
                logger.warning("Joining the group of %s failed; will retry.", stream, exc_info=True)
                return
            state.joined = True

    # --- receiving -------------------------------------------------------------------
    async def _read_layer(self) -> None:
        assert self.channel is not None
        delay = 0.1
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Channel layer receive failed; retrying.", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                await self._rejoin_all()
                continue
            delay = 0.1
            try:
                await self.dispatch(message)
            except Exception:
                logger.exception("Dispatching a %s message failed.", message.get("type"))

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Hand one layer message to the local subscribers of its stream."""
        state = self.streams.get(message.get("stream", ""))
        if state is None:
            return
        kind = message.get("type")
        if kind == "realtime.event":
            dirty = [sub.conn for sub in list(state.subs) if sub.offer(message)]
            for conn in dirty:
                await conn.flush()
        elif kind == "realtime.reset":
            for sub in list(state.subs):
                sub.start_sync()

    # --- maintenance -----------------------------------------------------------------
    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(float(realtime_settings.RECONCILE_INTERVAL))
            try:
                await self.reconcile()
                now = time.monotonic()
                if now - self._last_refresh > GROUP_REFRESH:
                    self._last_refresh = now
                    await self._rejoin_all()
                if now - self._last_prune > float(realtime_settings.PRUNE_INTERVAL):
                    self._last_prune = now + random.uniform(0, 5)
                    deleted = await store.aprune()
                    if deleted:
                        logger.info("Retention deleted %d events.", deleted)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Hub maintenance failed; retrying next interval.")

    async def reconcile(self) -> None:
        """Catch up every subscription that is behind the database by more than one round."""
        for stream, state in list(self.streams.items()):
            if not state.joined:
                await self._join(stream, state)
        heads = await store.aheads(list(self.streams))
        for stream, state in list(self.streams.items()):
            info = heads.get(stream)
            if info is None:
                continue
            for sub in list(state.subs):
                if sub.syncing:
                    continue
                if sub.epoch != info.epoch or sub.position < state.checked_head:
                    sub.start_sync()
            state.checked_head = info.last_seq

    async def _rejoin_all(self) -> None:
        for stream, state in list(self.streams.items()):
            state.joined = False
            await self._join(stream, state)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
