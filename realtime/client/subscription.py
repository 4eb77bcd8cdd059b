"""One subscription: a stream's position ``(epoch, seq)``, its events (iterated or given to
callbacks), and its presence. It applies the frames of its stream: each event once and in
order, duplicates dropped, gaps reported for repair, unrecoverable streams announced as a
``Reset`` in the order of the events (the browser client's ``client/subscription.js``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from realtime.client.errors import ClientError
from realtime.client.items import Event, Gap, Item, PublishResult, Reset, Snapshot

logger = logging.getLogger("realtime.client")
T = TypeVar("T")
Handler = Callable[[T], Awaitable[None] | None]
Frame = Mapping[str, Any]


class Requests(Protocol):
    """What a subscription asks of its client."""

    async def publish(
        self, stream: str, event: str, data: Any = None, *, key: str | None = None,
        ephemeral: bool = False,
    ) -> PublishResult: ...  # fmt: skip

    async def _unsubscribe(self, sub: Subscription) -> None: ...

    async def _presence(self, sub: Subscription, meta: dict[str, Any] | None) -> None: ...


async def _call(handler: Handler[T] | None, value: T) -> None:
    """Run an application's handler; its exceptions are logged and do not stop the client."""
    if handler is None:
        return
    try:
        result = handler(value)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("realtime.client: a handler failed on %r", value)


class _End:
    """Ends the iteration of a subscription's queue."""


_END = _End()


class Presence:
    """Who is on the stream: ``members`` maps a member's key to its ``metas``
    (``[{"ref", "meta"}, ...]``, one per joined connection); ``ref`` is this connection's
    entry; ``count`` is ``(members, connections)`` on a counts-only stream."""

    def __init__(self, sub: Subscription, meta: dict[str, Any] | None) -> None:
        self._sub = sub
        self.meta = meta  # what the client joins with (again after every reconnect); None: not
        self.members: dict[str, list[dict[str, Any]]] = {}
        self.ref: str | None = None
        self.count: tuple[int, int] | None = None
        self._waiters: list[asyncio.Future[str | None]] = []

    @property
    def joined(self) -> bool:
        return self.meta is not None

    async def join(self, meta: Mapping[str, Any] | None = None) -> str | None:
        """Join (or, joined, change the metadata); returns this connection's ``ref`` once
        the server acknowledged. Raises ``RequestError`` (``presence_full``, ``forbidden``,
        ``invalid_presence``...). The client joins again after every reconnect."""
        self.meta = dict(meta or {})
        waiter: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await self._sub._requests._presence(self._sub, self.meta)
        return await waiter

    update = join

    async def leave(self) -> None:
        """Leave now (no grace period); others see a ``presence.leave``."""
        self.meta = None
        self.ref = None
        self.settle(None, ClientError("Left before the join completed.", code="left"))
        await self._sub._requests._presence(self._sub, None)

    # --- for the client --------------------------------------------------------------------

    def settle(self, ref: str | None, error: ClientError | None = None) -> None:
        for waiter in self._waiters:
            if waiter.done():
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(ref)
        self._waiters.clear()

    def refused(self, error: ClientError, leave: bool = False) -> None:
        if not leave:
            self.meta = None
        self.settle(None, error)

    def joined_as(self, ref: str | None) -> None:
        self.ref = ref
        self.settle(ref)

    def apply(self, frame: Frame) -> bool:
        """A ``presence.*`` frame of the stream; False if it is not one."""
        kind = str(frame.get("type", "")).removeprefix("presence.")
        if kind == "state":
            self.ref = frame.get("ref")
            members = frame.get("members") or {}
            self.members = {key: list(value.get("metas", [])) for key, value in members.items()}
            self.settle(self.ref)
        elif kind in ("join", "update"):
            self.members[frame["key"]] = list(frame.get("metas", []))
        elif kind == "leave":
            self.members.pop(frame["key"], None)
        elif kind == "count":
            self.count = (int(frame["members"]), int(frame["connections"]))
        else:
            return False
        return True


class Subscription:
    """One stream. Iterate it (``async for item in sub``) for its events in order, with the
    ``Reset``, ``Snapshot`` and ``Gap`` notices where they happen; or give callbacks to
    ``Client.subscribe`` (``on_event`` replaces the iteration).

    ``position`` is ``(epoch, seq)``: the last event handed over. Pass it back as ``since``
    and ``epoch`` to resume elsewhere.
    """

    def __init__(
        self,
        requests: Requests,
        stream: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        presence: Mapping[str, Any] | None = None,
        buffer: int = 10_000,
        on_event: Handler[Event] | None = None,
        on_reset: Handler[Reset] | None = None,
        on_snapshot: Handler[Snapshot] | None = None,
        on_gap: Handler[Gap] | None = None,
        on_presence: Handler[Frame] | None = None,
    ) -> None:
        if since is not None and (
            isinstance(since, bool) or not isinstance(since, int) or since < 0
        ):
            raise ClientError(
                "'since' must be a non-negative integer or None.", code="invalid_frame"
            )
        if buffer < 1:
            raise ValueError("buffer must be at least 1.")
        self._requests = requests
        self.stream = stream
        self.epoch = epoch
        self.seq = since  # the last seq handed over; None: start live
        self.state = "pending"  # "active" after the first subscribed, "closed" at the end
        self.recovered: bool | None = None
        self.duplicates = 0  # events dropped because they were already handed over
        self.presence = Presence(self, dict(presence) if presence is not None else None)
        self.on_event, self.on_reset, self.on_snapshot = on_event, on_reset, on_snapshot
        self.on_gap, self.on_presence = on_gap, on_presence
        self._floating = False  # after recovered: false, the next event starts the position
        self._syncing: int | None = None  # a resubscribe repairing a gap: events wait for it
        self._lost = False
        self._queue: asyncio.Queue[Item | _End] = asyncio.Queue(buffer)
        self._done = False
        self._error: ClientError | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<Subscription {self.stream!r} {self.state} epoch={self.epoch} seq={self.seq}>"

    @property
    def position(self) -> tuple[str | None, int | None]:
        return self.epoch, (0 if self._floating else self.seq)

    async def publish(
        self, event: str, data: Any = None, *, key: str | None = None, ephemeral: bool = False
    ) -> PublishResult:
        """``Client.publish`` on this stream."""
        return await self._requests.publish(self.stream, event, data, key=key, ephemeral=ephemeral)

    async def unsubscribe(self) -> None:
        """Stop receiving (and leave presence); the iteration ends after what is buffered."""
        await self._requests._unsubscribe(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        if self._done and self._queue.empty():
            return self._stop()
        item = await self._queue.get()
        if isinstance(item, _End):
            return self._stop()
        return item

    def _stop(self) -> Item:
        if self._queue.empty():
            self._queue.put_nowait(_END)  # wake any other reader
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    # --- for the client ----------------------------------------------------------------------

    def subscribe_frame(self, frame_id: int) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "id": frame_id, "stream": self.stream}
        if self.seq is not None:
            frame["since"] = 0 if self._floating else self.seq
            if self.epoch is not None:
                frame["epoch"] = self.epoch
        if self.presence.meta is not None:
            frame["presence"] = self.presence.meta
        return frame

    def cursor_entry(self) -> tuple[str, int] | None:
        """This stream's ``(epoch, seq)`` in an SSE resume cursor; None: start live."""
        if self.seq is None:
            return None
        return self.epoch or "", 0 if self._floating else self.seq

    def resync(self, frame_id: int | None) -> None:
        """Events wait for the reply to resubscribe ``frame_id`` (a gap being repaired)."""
        self._syncing = frame_id

    def forget_position(self) -> None:
        """The server refused the position (a cursor too long): start live, as lost."""
        self._lost = self.seq is not None
        self.seq = None
        self._floating = False

    async def handle_subscribed(self, frame: Frame) -> None:
        if self._syncing is not None and frame.get("id") != self._syncing:
            return  # the reply to the subscribe a repair replaced
        self._syncing = None
        held = (self.seq is not None and self.seq > 0 and not self._floating) or self._lost
        recovered = bool(frame.get("recovered")) and not self._lost
        self._lost = False
        if self.seq is None:
            self.seq = int(frame["seq"])  # live from the head
            self._floating = False
        elif not recovered:
            self.seq = 0
            self._floating = True
        self.epoch = str(frame["epoch"])
        self.recovered = recovered
        if self.state == "pending":
            self.state = "active"
        if not self.ready.done():
            self.ready.set_result(None)
        if not recovered and held:
            reset = Reset(self.stream, self.epoch, int(frame["seq"]))
            await _call(self.on_reset, reset)
            await self._put(reset)

    async def handle_event(self, frame: Frame) -> bool:
        """Hand over an event frame; False: it shows a gap the client must repair."""
        if self._syncing is not None:
            return True
        seq = frame.get("seq")
        event = Event(self.stream, seq, frame["event"], frame.get("data"), frame.get("ts", ""))
        if seq is not None:
            if self._floating or self.seq is None:
                self._floating = False
            elif seq <= self.seq:
                self.duplicates += 1
                return True
            elif seq != self.seq + 1:
                return False
            self.seq = seq
        if self.on_event is not None:
            await _call(self.on_event, event)
        else:
            await self._put(event)
        return True

    async def handle_snapshot(self, frame: Frame) -> None:
        if self._syncing is not None:
            return
        seq = int(frame["seq"])
        self.seq = max(0 if self._floating else (self.seq or 0), seq)
        self._floating = False
        snapshot = Snapshot(self.stream, seq, frame.get("data"))
        await _call(self.on_snapshot, snapshot)
        await self._put(snapshot)

    async def handle_gap(self, frame: Frame) -> None:
        """The server skipped seqs (a ``skip`` stream): move past them, and say so."""
        if self._syncing is not None:
            return
        gap = Gap(self.stream, int(frame["from"]), int(frame["to"]))
        if self.seq is not None and not self._floating:
            self.seq = max(self.seq, gap.last)
        await _call(self.on_gap, gap)
        await self._put(gap)

    async def handle_presence(self, frame: Frame) -> None:
        if self.presence.apply(frame):
            await _call(self.on_presence, frame)

    async def _put(self, item: Item) -> None:
        # Waits while the buffer is full: the client stops reading, the server's window
        # fills, and a slow consumer is cut (4409) and resumes: memory stays bounded.
        if self.on_event is None and not self._done:
            await self._queue.put(item)

    def fail(self, error: ClientError) -> None:
        """Refused or ended by the server (or the client closed for good)."""
        self.state = "closed"
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: nobody may be waiting for it
        self.presence.settle(None, error)
        self._error = error
        self.end()

    def end(self) -> None:
        """No more items: iteration stops once the buffer is empty."""
        self.state = "closed"
        self._done = True
        if self._queue.empty():
            self._queue.put_nowait(_END)
