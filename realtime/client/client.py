"""``Client``: the API — subscribe, publish, presence, reconnect, close — over one
``Connection``. Keeps the subscriptions and the publish queue, sends their requests and
routes the server's frames (and the replies to its requests) to them (the browser client's
``client/client.js``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random as _random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import quote

from realtime.client.backoff import Backoff, backoff_delay
from realtime.client.connection import Connection, Options, TransportName, normalize_urls
from realtime.client.errors import ClientClosed, ClientError, ConnectionRefused, RequestError
from realtime.client.items import Event, Gap, PublishResult, Reset, Snapshot, StateChange
from realtime.client.publishing import PublishQueue, post
from realtime.client.subscription import Frame, Handler, Subscription
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


class Client:
    """One connection to a ``realtime`` server, kept open until ``close()``.

    ::

        async with Client("https://example.com", token="...") as client:
            sub = await client.subscribe("chat:42", since=0)
            async for item in sub:
                ...

    ``url`` is the server's origin (``http``/``https``; ``ws``/``wss`` work too), or several:
    after a failed attempt or a draining server's 1012 the client tries the next one. The
    options are those of the browser client, in seconds; see docs/python-client.md.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        prefix: str = "/realtime/",
        transport: TransportName = "websocket",
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        ticket: Callable[[], Awaitable[str | None]] | None = None,
        origin: str | None = None,
        client_id: str | None = None,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        batch: bool = True,
        max_queue: int = 100,
        rate_limit: tuple[float, int] | None = (40.0, 80),
        random: Callable[[], float] = _random.random,
        on_state: Callable[[StateChange], None] | None = None,
        on_error: Callable[[ClientError], None] | None = None,
    ) -> None:
        if transport not in ("websocket", "sse"):
            raise ValueError('transport is "websocket" or "sse".')
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Token {token}"
        if cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        self.options = Options(
            urls=normalize_urls(url),
            prefix="/" + prefix.strip("/") + "/" if prefix.strip("/") else "/",
            transport=transport,
            headers=all_headers,
            origin=origin,
            client_id=client_id,
            ticket=ticket,
            backoff=backoff or Backoff(),
            connect_timeout=connect_timeout,
            batch=batch,
            rate_limit=rate_limit,
            random=random,
            on_state=on_state,
        )
        self.on_error = on_error
        self.subscriptions: dict[str, Subscription] = {}
        self._queue = PublishQueue(max_queue)
        self._replies: dict[int, _Reply] = {}
        self._next_id = 1
        self._drop_cursor = False
        self._poster: asyncio.Task[None] | None = None
        self._connection = Connection(self.options, self)

    # --- what the application reads ------------------------------------------------------------

    @property
    def state(self) -> str:
        """``connecting``, ``open``, ``reconnecting`` or ``closed`` (``idle`` before start)."""
        return self._connection.state

    @property
    def transport(self) -> TransportName | None:
        return self._connection.kind

    @property
    def connection_id(self) -> str | None:
        return self._connection.connection_id

    @property
    def url(self) -> str | None:
        """The server of the open connection, or of the attempt under way."""
        return self._connection.url

    # --- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> Self:
        """Start, and wait until the connection is open (retrying as the backoff says)."""
        self._connection.start()
        await self._connection.wait_open()
        return self

    async def __aenter__(self) -> Self:
        try:
            return await self.connect()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_open(self) -> None:
        await self._connection.wait_open()

    def reconnect(self) -> None:
        """Connect now if waiting to retry."""
        self._connection.reconnect()

    async def drop(self) -> None:
        """Lose the connection as a network failure would; the client reconnects and resumes."""
        await self._connection.drop()

    async def close(self) -> None:
        """Close for good: waiting publishes fail with ``closed``, iterations end. Leaves no
        task running. Do not call it from a handler (``on_event``...) and wait for it there."""
        poster, self._poster = self._poster, None
        if poster is not None:
            poster.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poster
        await self._connection.close()

    # --- subscribing -----------------------------------------------------------------------------

    async def subscribe(
        self,
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
    ) -> Subscription:
        """Subscribe to ``stream`` and wait for the server's ``subscribed``.

        ``since`` absent: live from now; ``0``: all retained history, then live; ``n``: what
        came after seq *n* (of ``epoch``). ``presence``: join the stream's presence with this
        metadata. Raises ``RequestError`` if the server refuses (``forbidden``,
        ``invalid_stream``, ``too_many_subscriptions``...).
        """
        if self.state == "closed":
            raise self._connection.error or ClientClosed("The client is closed.")
        if stream in self.subscriptions:
            raise ClientError(f"Already subscribed to {stream!r}.", code="already_subscribed")
        sub = Subscription(
            self,
            stream,
            since=since,
            epoch=epoch,
            presence=presence,
            buffer=buffer,
            on_event=on_event,
            on_reset=on_reset,
            on_snapshot=on_snapshot,
            on_gap=on_gap,
            on_presence=on_presence,
        )
        self.subscriptions[stream] = sub
        self._connection.start()
        if self._connection.kind == "websocket":
            await self._send_subscribe(sub)
        elif self.options.transport == "sse":
            await self._connection.reopen()
        try:
            await asyncio.shield(sub.ready)
        except asyncio.CancelledError:
            if self.subscriptions.get(sub.stream) is sub:
                await self._unsubscribe(sub)
            raise
        return sub

    def subscription(self, stream: str) -> Subscription | None:
        return self.subscriptions.get(stream)

    # --- publishing ------------------------------------------------------------------------------

    async def publish(
        self,
        stream: str,
        event: str,
        data: Any = None,
        *,
        key: str | None = None,
        ephemeral: bool = False,
    ) -> PublishResult:
        """Publish; returns once the server stored it (or, ephemeral, passed it on).

        Every stored publish carries an idempotency ``key`` (random unless given): one
        re-sent after a lost acknowledgement is stored once, and its result says
        ``duplicate``. While disconnected it waits (at most ``max_queue`` of them:
        ``queue_full``); an ephemeral one fails at once (``disconnected``).
        """
        if self.state == "closed":
            raise self._connection.error or ClientClosed("The client is closed.")
        self._connection.start()
        entry = self._queue.add(
            stream, event, data, key=key, ephemeral=ephemeral,
            connected=self._connection.kind is not None,
        )  # fmt: skip
        await self._flush()
        return await asyncio.shield(entry.future)

    async def _flush(self) -> None:
        connection = self._connection
        if connection.kind == "websocket":
            for entry in self._queue.take():
                frame_id = self._id()
                frame = entry.frame(frame_id)
                size = len(json.dumps(frame, separators=(",", ":")).encode())
                if connection.max_frame and size > connection.max_frame:
                    entry.reject(
                        ClientError(
                            f"This publish is {size} bytes; the server accepts frames of "
                            f"{connection.max_frame}.",
                            code="frame_too_large",
                            stream=entry.stream,
                        )
                    )
                    continue
                self._queue.sent(entry, frame_id)
                await connection.send(frame)  # if it fails, the entry goes back on loss
        elif connection.kind == "sse" and (self._poster is None or self._poster.done()):
            self._poster = asyncio.get_running_loop().create_task(self._post_queue())

    async def _post_queue(self) -> None:
        """Publishes over HTTP while on SSE, one at a time so they are stored in order."""
        connection = self._connection
        while self._queue.waiting and connection.kind == "sse":
            entry = self._queue.waiting[0]
            url = connection.endpoint(f"api/streams/{quote(entry.stream, safe='')}/events/")
            if await post(connection.http(), url, entry, {}) == "retry":
                await asyncio.sleep(
                    backoff_delay(2, self.options.backoff, self.options.random) + 0.25
                )
                continue
            if self._queue.waiting and self._queue.waiting[0] is entry:
                self._queue.waiting.popleft()

    # --- requests of subscriptions -----------------------------------------------------------

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    async def _send_subscribe(self, sub: Subscription) -> int:
        frame_id = self._id()
        frame = sub.subscribe_frame(frame_id)
        self._replies[frame_id] = _Reply("subscribe", sub, presence="presence" in frame)
        await self._connection.send(frame)
        return frame_id

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self.subscriptions.get(sub.stream) is not sub:
            return
        del self.subscriptions[sub.stream]
        sub.end()
        if self._connection.kind == "sse":
            await self._connection.reopen()
        elif self._connection.kind == "websocket":
            frame_id = self._id()
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._replies[frame_id] = _Reply("unsubscribe", sub, future=future)
            if await self._connection.send(
                {"type": "unsubscribe", "id": frame_id, "stream": sub.stream}
            ):
                await future

    async def _presence(self, sub: Subscription, meta: dict[str, Any] | None) -> None:
        if self.subscriptions.get(sub.stream) is not sub:
            raise ClientError("Not subscribed.", code="not_subscribed", stream=sub.stream)
        if self._connection.kind == "sse":
            await self._connection.reopen()  # the new request joins (or not) with the meta
        elif self._connection.kind == "websocket":
            frame_id = self._id()
            self._replies[frame_id] = _Reply("presence", sub, leave=meta is None)
            frame: dict[str, Any] = {"type": "presence", "id": frame_id, "stream": sub.stream}
            frame.update({"leave": True} if meta is None else {"meta": meta})
            await self._connection.send(frame)
        # Not connected: the resubscribe after the reconnect carries it.

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
        if not self.subscriptions:
            return None
        params: list[tuple[str, str]] = []
        meta: dict[str, Any] | None = None
        positions = {}
        for sub in self.subscriptions.values():
            params.append(("stream", sub.stream))
            if sub.presence.meta is not None:
                params.append(("presence", sub.stream))
                meta = sub.presence.meta  # one meta per SSE request: the last joined
            entry = sub.cursor_entry()
            if entry is not None:
                positions[sub.stream] = entry
        if meta is not None:
            params.append(("meta", json.dumps(meta)))
        if positions and not self._drop_cursor:
            params.append(("last_event_id", encode_cursor(positions)))
        self._drop_cursor = False
        return params

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
