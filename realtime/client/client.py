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
from typing import Any, Self
from urllib.parse import quote

from realtime.client.backoff import Backoff, backoff_delay
from realtime.client.connection import Connection, Options, TransportName, normalize_urls
from realtime.client.errors import ClientClosed, ClientError
from realtime.client.http import post
from realtime.client.items import Event, Gap, PublishResult, Reset, Snapshot, StateChange
from realtime.client.publishing import PublishQueue
from realtime.client.routing import Routing, _Reply
from realtime.client.subscription import Frame, Handler, Subscription

logger = logging.getLogger("realtime.client")


class Client(Routing):
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
        self._flushing = asyncio.Lock()
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
            # One flush at a time, one publish at a time: they leave in the order made.
            async with self._flushing:
                while connection.kind == "websocket" and (entry := self._queue.next()):
                    frame_id = self._id()
                    frame = entry.frame(frame_id)
                    size = len(json.dumps(frame, separators=(",", ":")).encode())
                    if connection.max_frame and size > connection.max_frame:
                        self._queue.waiting.popleft()
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
                    if not await connection.send(frame):
                        self._queue.unsent(entry)  # the next connection sends it
                        return
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
