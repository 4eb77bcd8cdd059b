"""One connection's subscription to one stream: the exact-delivery state machine.

A subscription is *live* or *syncing*. Live, it takes each layer message that continues its
position, drops duplicates, and on a gap (a lost layer message, two publishers' fan-outs
racing, a reset) turns syncing: history is read from the database page by page while live
messages are buffered, until the buffer continues what the database gave. Everything in the
buffer was committed before it was sent, so the buffer is never the only copy: it may be
dropped (``MAX_PENDING``) and read again.

Presence messages ride along: while the subscription's own ``presence.state`` is being read
they are buffered too, and delivered afterwards unless the snapshot already holds them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, cast

from channels.db import database_sync_to_async

from realtime.bus.messages import EventMessage, PresenceMessage
from realtime.conf import realtime_settings
from realtime.core import snapshots
from realtime.core.stats import stats
from realtime.protocol import (
    SubscribedFrame,
    dumps,
    event_frame,
    format_ts,
    snapshot_frame,
    subscribed_frame,
)
from realtime.storage import epochs, store
from realtime.storage.dbthreads import in_lane

logger = logging.getLogger("realtime.hub")

# Seconds a live subscription waits for a missing message before reading the database.
REORDER_GRACE = 0.05
# Live events buffered per syncing subscription before the buffer is dropped (the database
# has them all; the sync loop then reads once more instead of trusting the buffer).
MAX_PENDING = 10_000


Page = tuple[list[tuple[int, str, str]], "store.StreamInfo | None"]

# History reads in flight in this process, by (event loop, stream, after, limit).
_reads: dict[tuple[int, str, int, int], asyncio.Task[Page]] = {}


async def read_page(stream: str, after: int, limit: int) -> Page:
    """Up to ``limit`` events after ``after`` as ``(seq, event, frame)``, and the position.

    Subscriptions catching up from the same position at once (a reconnect storm, a burst
    the channel layer lost, a lagging process woken by the reconciler) share one query and
    one encoding of each event, instead of one each: catching up costs the database the
    same for one subscriber of a stream as for a thousand.
    """
    loop = asyncio.get_running_loop()
    key = (id(loop), stream, after, limit)
    task = _reads.get(key)
    if task is None:
        task = loop.create_task(_read_page(stream, after, limit))
        _reads[key] = task
        task.add_done_callback(lambda _: _reads.pop(key, None))
    return await asyncio.shield(task)


def _read_frames(stream: str, after: int, limit: int) -> Page:
    # Encoded on the database thread: a page of 500 events is milliseconds of JSON, which
    # would otherwise hold up the event loop (and every connection on it).
    rows, info = store.read(stream, after, limit)
    frames = [
        (
            row.seq,
            row.event,
            event_frame(stream, row.seq, row.event, dumps(row.data), format_ts(row.ts)),
        )
        for row in rows
    ]
    return frames, info


async def _read_page(stream: str, after: int, limit: int) -> Page:
    return await _aread_frames(stream, after, limit)


_aread_frames = in_lane(_read_frames)


class Connection(Protocol):
    """What the hub needs of a WebSocket or SSE connection (``BaseConnection`` implements it).

    ``deliver`` and ``subscribed`` only queue (they must not await), which is what keeps a
    subscription's frames in order; ``flush`` writes the queue out.
    """

    id: str

    def deliver(self, sub: Subscription, event: str, frame: str) -> None: ...

    def subscribed(self, sub: Subscription, frame: SubscribedFrame) -> None: ...

    def presence(self, sub: Subscription, kind: str, frame: str) -> None: ...

    def snapshot(self, sub: Subscription, frame: str) -> None: ...

    def has_room(self) -> bool: ...

    async def wait_for_room(self) -> None: ...

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
        "presence_buffer",
        "presence_ref",
        "presence_seen",
        "requested_epoch",
        "sees_presence",
        "since",
        "snapshot_at",
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
        self.pending: list[EventMessage] = []
        self.overflowed = False
        self.active = True
        self.task: asyncio.Task[None] | None = None
        # While not None, presence frames wait here for this subscription's presence.state.
        self.presence_buffer: list[PresenceMessage] | None = None
        self.presence_ref: str | None = None  # this connection's meta, once joined
        # Per member key, the version the presence.state snapshot sent to this subscriber held.
        self.presence_seen: dict[str, int] | None = None
        self.snapshot_at: int | None = None  # a snapshot is due, taken at this head
        # Whether the policy lets this subscriber see the stream's presence.
        self.sees_presence = True

    def offer(self, message: EventMessage) -> bool:
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
        # Usually only a reordering (two publishers' fan-outs raced): give the missing
        # message a moment to arrive before asking the database.
        self.start_sync(delay=REORDER_GRACE)
        return False

    def _buffer(self, message: EventMessage) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.pending.clear()
            self.overflowed = True
        self.pending.append(message)

    def start_sync(self, delay: float = 0.0) -> None:
        """Catch up from the database (no-op if already doing so).

        With a ``delay``, live messages are buffered meanwhile and the database is read only
        if they still leave a gap after it.
        """
        if not self.active or (self.task is not None and not self.task.done()):
            return
        self.syncing = True
        self.task = asyncio.get_running_loop().create_task(self._sync(delay))
        self.task.add_done_callback(self._sync_done)

    def _sync_done(self, task: asyncio.Task[None]) -> None:
        # A finished task keeps its coroutine (about 550 bytes): drop it, per subscription.
        if self.task is task:
            self.task = None

    def subscribed_frame(self, head: int, recovered: bool) -> SubscribedFrame:
        assert self.epoch is not None
        return subscribed_frame(self.id, self.stream, self.epoch, head, recovered)

    async def _sync(self, grace: float = 0.0) -> None:
        if grace:
            await asyncio.sleep(grace)
            if self.active and not self.overflowed and self._drain():
                await self.conn.flush()
                return
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
        if self.snapshot_at is not None:
            await self._send_snapshot(self.snapshot_at)
        batch = realtime_settings.REPLAY_BATCH_SIZE
        logger.debug("Catching up %s from seq %d.", self.stream, self.position)
        rows, info = await read_page(self.stream, self.position, batch)
        logger.debug("Read %d events of %s (head %s).", len(rows), self.stream, info)
        if not self.active:
            return True
        info = info or store.missing(self.stream)
        if info.epoch != self.epoch:
            assert self.epoch is not None
            if not epochs.carries_over(
                self.stream, self.epoch, self.position, info.epoch, info.trimmed_seq
            ):
                # The stream was reset (or emptied, removed and created again) since we
                # last looked: start over.
                self.requested_epoch, self.since = None, 0
                self._start_from(info, force_unrecovered=True)
                return False
            # Created after this subscriber found it empty: the same history under its
            # row's epoch, which the client needs to resume with.
            self.epoch = info.epoch
            self.conn.subscribed(self, self.subscribed_frame(info.last_seq, True))
        lost = (rows and rows[0][0] != self.position + 1) or (
            not rows and info.trimmed_seq > self.position
        )
        if lost:
            # Retention deleted events this subscription had not delivered yet.
            self.position = (rows[0][0] - 1) if rows else info.trimmed_seq
            self.conn.subscribed(self, self.subscribed_frame(info.last_seq, False))
            if snapshots.find(self.stream) is not None:
                self.snapshot_at = info.last_seq
                return False
        for seq, event, frame in rows:
            if not self.conn.has_room():
                # Replay goes at the client's pace: wait for its acknowledgements.
                await self.conn.flush()
                await self.conn.wait_for_room()
                return False
            self.position = seq
            stats.replayed += 1
            self.conn.deliver(self, event, frame)
        if len(rows) == batch or self.overflowed:
            self.overflowed = False
            return False
        return self._drain()

    def start(self, info: store.StreamInfo) -> bool:
        """Begin delivery from ``info``, the position read after the group was joined.

        Live at once when that leaves nothing to read (the subscriber starts at the head and
        no snapshot is due): every later event arrives live, so a new subscriber of a quiet
        stream costs no more database reads. Otherwise catching up starts in the background.
        Returns whether frames were queued that the caller must flush.
        """
        self._start_from(info)
        if self.position == info.last_seq and self.snapshot_at is None and self._drain():
            return True
        self.start_sync()
        return False

    def _start_from(self, info: store.StreamInfo, *, force_unrecovered: bool = False) -> None:
        """Decide where delivery starts, and announce it with a ``subscribed`` frame."""
        since, wanted = self.since, self.requested_epoch
        recovered = not force_unrecovered
        if since is None:
            start = info.last_seq  # live only: nothing to recover
        elif not store.resumes(info, wanted, since):
            start, recovered = info.trimmed_seq, False
        else:
            start = since
        self.epoch, self.position = info.epoch, start
        self.pending = [m for m in self.pending if m["epoch"] == info.epoch]
        self.conn.subscribed(self, self.subscribed_frame(info.last_seq, recovered))
        if not recovered and snapshots.find(self.stream) is not None:
            self.snapshot_at = info.last_seq

    async def _send_snapshot(self, head: int) -> None:
        """The current state instead of what history is left; delivery goes on after ``head``."""
        func = snapshots.find(self.stream)
        self.snapshot_at = None
        if func is None:
            return
        data = await database_sync_to_async(func)(self.stream, getattr(self.conn, "user", None))
        self.position = max(self.position, head)
        self.conn.snapshot(self, snapshot_frame(self.stream, head, data))

    def _drain(self) -> bool:
        """Deliver buffered live events that continue the position; True when live again."""
        # Only stored events are buffered (offer() delivers ephemeral ones or drops them).
        pending, self.pending = sorted(self.pending, key=lambda m: cast(int, m["seq"])), []
        for index, message in enumerate(pending):
            seq = cast(int, message["seq"])
            if message["epoch"] != self.epoch:
                return False  # the database will say which epoch is current
            if seq <= self.position:
                continue
            if seq != self.position + 1 or not self.conn.has_room():
                self.pending = pending[index:]
                return False
            self.position = seq
            self.conn.deliver(self, message["event"], message["frame"])
        self.syncing = False
        return True

    def offer_presence(self, message: PresenceMessage, frame: str) -> bool:
        """Take one presence message (already encoded as ``frame``); True if queued."""
        if not self.sees_presence:
            return False
        if self.presence_buffer is not None:
            self.presence_buffer.append(message)
            return False
        seen = self.presence_seen
        if seen:
            # Messages the presence.state snapshot already held may still be on their way
            # (this connection's own join among them): drop those, forget the rest.
            if message["version"] <= seen.get(message["key"], 0):
                return False
            seen.pop(message["key"], None)
        self.conn.presence(self, message["kind"], frame)
        return True

    def close(self) -> None:
        self.active = False
        self.pending = []
        if self.task is not None and not self.task.done():
            self.task.cancel()
