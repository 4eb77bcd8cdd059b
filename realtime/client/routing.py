"""Routing: the server's frames to the subscriptions, the publish queue and the requests
waiting for their replies; what the client answers its connection (``connection.Owner``).
A part of ``Client`` (its base class), kept apart so each module has one job."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from realtime.client.connection import Connection, TransportName
from realtime.client.errors import ClientClosed, ClientError, ConnectionRefused, RequestError
from realtime.client.publishing import PublishQueue
from realtime.client.subscription import Frame, Subscription
from realtime.client.transports import CloseInfo
from realtime.protocol import encode_cursor

logger = logging.getLogger("realtime.client")


@dataclass
class _Reply:
    """A request waiting for its reply, by frame id."""

    kind: Literal["subscribe", "presence", "unsubscribe"]
    sub: Subscription
    presence: bool = False  # a subscribe joining presence: its error may follow `subscribed`
    leave: bool = False
    subscribed: bool = False
    future: asyncio.Future[None] | None = None


class Routing:
    """What ``Client`` does with the frames it receives; see the module docstring."""

    subscriptions: dict[str, Subscription]
    on_error: Callable[[ClientError], None] | None
    _connection: Connection
    _queue: PublishQueue
    _replies: dict[int, _Reply]
    _next_id: int
    _drop_cursor: bool

    async def _flush(self) -> None:
        raise NotImplementedError("Client sends the publish queue")

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    async def _send_subscribe(self, sub: Subscription) -> int:
        frame_id = self._id()
        frame = sub.subscribe_frame(frame_id)
        self._replies[frame_id] = _Reply("subscribe", sub, presence="presence" in frame)
        await self._connection.send(frame)
        return frame_id

    async def _repair(self, sub: Subscription) -> None:
        """A gap in a stream: ask for it again from the last seq handed over."""
        if self._connection.kind == "websocket":
            await self._connection.send({"type": "unsubscribe", "stream": sub.stream})
            sub.resync(self._id())
            frame = sub.subscribe_frame(sub._syncing or 0)
            self._replies[frame["id"]] = _Reply(
                "subscribe", sub, presence="presence" in frame, subscribed=True
            )
            await self._connection.send(frame)
        elif self._connection.kind == "sse":
            sub.resync(None)
            await self._connection.reopen()

    # --- what the connection asks of the client (connection.Owner) ---------------------------

    async def opened(self, kind: TransportName) -> None:
        if kind == "websocket":
            for sub in list(self.subscriptions.values()):
                await self._send_subscribe(sub)
        await self._flush()

    def lost(self) -> None:
        self._queue.connection_lost()  # unacknowledged publishes go back to the queue
        for reply in self._replies.values():
            if reply.future is not None and not reply.future.done():
                reply.future.set_result(None)  # unsubscribed: the reconnect does not resubscribe
            if reply.kind == "presence" and reply.leave:
                reply.sub.presence.settle(None)
        self._replies.clear()
        for sub in self.subscriptions.values():
            sub.resync(None)

    def closed(self, error: ClientError) -> None:
        self._queue.reject_all(error)
        for reply in self._replies.values():
            if reply.future is not None and not reply.future.done():
                reply.future.set_exception(error)
                reply.future.exception()
        self._replies.clear()
        normal = isinstance(error, ClientClosed) and error.code == "closed"
        for sub in list(self.subscriptions.values()):
            if normal and sub.ready.done():
                sub.end()
            else:
                sub.fail(error)
        self.subscriptions.clear()

    def event_stream_params(self) -> list[tuple[str, str]] | None:
        """What an event stream asks for: its streams and presence; None: nothing."""
        if not self.subscriptions:
            return None
        params: list[tuple[str, str]] = []
        meta: dict[str, Any] | None = None
        for sub in self.subscriptions.values():
            params.append(("stream", sub.stream))
            if sub.presence.meta is not None:
                params.append(("presence", sub.stream))
                meta = sub.presence.meta  # one meta per SSE request: the last joined
        if meta is not None:
            params.append(("meta", json.dumps(meta)))
        return params

    def event_stream_cursor(self) -> str | None:
        """The positions, as a resume cursor for the next event stream (once after an
        ``invalid_cursor``: none)."""
        positions = {}
        for sub in self.subscriptions.values():
            entry = sub.cursor_entry()
            if entry is not None:
                positions[sub.stream] = entry
        drop, self._drop_cursor = self._drop_cursor, False
        return encode_cursor(positions) if positions and not drop else None

    def refused(self, info: CloseInfo) -> ClientError | bool:
        """An event stream refused with an error body: fatal (the error), or retry (True:
        not the server's fault, do not count it)."""
        status = info.status or 0
        error = dict(info.error or {})
        code = str(error.get("code") or f"http_{status}")
        message = str(error.get("message") or f"The event stream was refused ({status}).")
        if status >= 500 or status == 429:
            return False  # transient: back off and retry (a draining server is 503)
        if code == "invalid_cursor":
            # A cursor too long for the server: start the streams live, as not recovered.
            self._drop_cursor = True
            for sub in self.subscriptions.values():
                sub.forget_position()
            return True
        # A refused stream is named in the message: fail that subscription, keep the others.
        named = [s for s in self.subscriptions.values() if f"'{s.stream}'" in message]
        for sub in named:
            del self.subscriptions[sub.stream]
            sub.fail(RequestError(message, code=code, status=status, stream=sub.stream))
        if named:
            return True  # not the server's fault; the others (if any) go on
        return ConnectionRefused(message, code=code, status=status)

    def presence_joined(self) -> bool:
        return any(sub.presence.joined for sub in self.subscriptions.values())

    async def frame(self, frame: Frame) -> None:
        """One server frame after the welcome, over either transport."""
        kind = frame.get("type")
        stream = frame.get("stream")
        sub = self.subscriptions.get(stream) if isinstance(stream, str) else None
        if kind == "event":
            if sub is not None and not await sub.handle_event(frame):
                await self._repair(sub)
        elif kind == "subscribed":
            reply = self._replies.get(frame["id"]) if isinstance(frame.get("id"), int) else None
            if reply is not None and reply.kind == "subscribe":
                reply.subscribed = True
                if not reply.presence:
                    del self._replies[frame["id"]]
            if sub is not None:
                await sub.handle_subscribed(frame)
        elif kind == "snapshot" and sub is not None:
            await sub.handle_snapshot(frame)
        elif kind == "gap" and sub is not None:
            await sub.handle_gap(frame)
        elif kind == "ack":
            self._ack(frame)
        elif kind == "unsubscribed":
            self._unsubscribed(frame, sub)
        elif kind == "error":
            self._error(frame)
        elif isinstance(kind, str) and kind.startswith("presence.") and sub is not None:
            if kind in ("presence.state", "presence.count"):
                for frame_id, reply in list(self._replies.items()):
                    if reply.kind == "subscribe" and reply.sub is sub and reply.presence:
                        del self._replies[frame_id]
            await sub.handle_presence(frame)

    def _ack(self, frame: Frame) -> None:
        if self._queue.acknowledged(frame):
            return
        reply = self._replies.pop(frame["id"], None) if isinstance(frame.get("id"), int) else None
        if reply is not None and reply.kind == "presence":
            if reply.leave:
                reply.sub.presence.settle(None)
            else:
                reply.sub.presence.joined_as(frame.get("ref"))

    def _unsubscribed(self, frame: Frame, sub: Subscription | None) -> None:
        frame_id = frame.get("id")
        reply = self._replies.pop(frame_id, None) if isinstance(frame_id, int) else None
        if reply is not None and reply.future is not None and not reply.future.done():
            reply.future.set_result(None)
        if frame.get("reason") == "revoked" and sub is not None:
            del self.subscriptions[sub.stream]
            sub.fail(
                RequestError(
                    "Access to this stream was revoked.", code="revoked", stream=sub.stream
                )
            )

    def _error(self, frame: Frame) -> None:
        error = RequestError(str(frame.get("message", "")), code=str(frame.get("code")))
        frame_id = frame.get("id")
        if self._queue.refused(frame_id, error):
            return
        reply = self._replies.pop(frame_id, None) if isinstance(frame_id, int) else None
        if reply is None:
            # Tied to no request: rate_limited, revoked, a failed SSE presence join.
            logger.warning("realtime.client: %s: %s", error.code, error.message)
            if self.on_error is not None:
                self.on_error(error)
            return
        error.stream = reply.sub.stream
        if reply.kind == "subscribe" and not reply.subscribed:
            if self.subscriptions.get(reply.sub.stream) is reply.sub:
                del self.subscriptions[reply.sub.stream]
            reply.sub.fail(error)
        elif reply.kind in ("subscribe", "presence"):
            reply.sub.presence.refused(error, leave=reply.leave)  # the subscription stands
        elif reply.future is not None and not reply.future.done():
            reply.future.set_exception(error)
