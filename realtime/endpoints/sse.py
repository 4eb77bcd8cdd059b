"""The Server-Sent Events endpoint (``/realtime/sse/?stream=a&stream=b``).

A plain ASGI application, not Channels' ``AsyncHttpConsumer``: that consumer stops when
``handle()`` returns and dispatches one message at a time, so a streaming response written
on it never sees ``http.disconnect`` or channel-layer events while it streams
(django/channels#1302, #1249, #1747). Here the hub writes events as they come and the
request task only waits for the disconnect, sending keep-alive comments meanwhile.

The response bypasses Django's middleware (it is routed before Django), so GZip cannot
buffer it; ``X-Accel-Buffering: no`` tells nginx-style proxies not to either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from realtime.core.stats import stats
from realtime.core.subscription import Subscription
from realtime.endpoints.auth import origin_allowed
from realtime.endpoints.connection import BATCH_FRAMES, BaseConnection, Receive, Scope, Send
from realtime.exceptions import RealtimeError
from realtime.protocol import (
    FORBIDDEN_ORIGIN,
    INVALID_FRAME,
    INVALID_PRESENCE,
    MAX_CURSOR_LENGTH,
    REVOKED,
    SERVER_DRAINING,
    SSE_ERROR,
    SSE_GAP,
    SSE_SNAPSHOT,
    SSE_SUBSCRIBED,
    SSE_WELCOME,
    TOO_MANY_SUBSCRIPTIONS,
    Position,
    SubscribedFrame,
    decode_cursor,
    dumps,
    encode_cursor,
    error_frame,
    largest_cursor,
    loads,
    sse_comment,
    sse_message,
    sse_retry,
)
from realtime.storage.presence import check_meta

logger = logging.getLogger("realtime.sse")


STATUS_FOR_CODE = {"forbidden": 403}


class SSEConnection(BaseConnection):
    """One EventSource, from the request to the disconnect."""

    transport = "sse"
    batch_frames = BATCH_FRAMES  # SSE messages simply follow each other in the body

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self.positions: dict[str, Position] = {}
        self._ended = asyncio.Event()
        self._streaming = False  # the response has started

    # --- transport hooks ---------------------------------------------------------------
    def encode_event(self, sub: Subscription, event: str, frame: str) -> str:
        assert sub.epoch is not None
        self.positions[sub.stream] = (sub.epoch, sub.position)
        return sse_message(frame, event=event, id=encode_cursor(self.positions))

    def encode_subscribed(self, sub: Subscription, frame: SubscribedFrame) -> str:
        assert sub.epoch is not None
        self.positions[sub.stream] = (sub.epoch, sub.position)
        return sse_message(dumps(frame), event=SSE_SUBSCRIBED, id=encode_cursor(self.positions))

    def encode_presence(self, sub: Subscription, kind: str, frame: str) -> str:
        return sse_message(frame, event=f"presence.{kind}")

    def encode_gap(self, sub: Subscription, frame: str) -> str:
        return sse_message(frame, event=SSE_GAP)

    async def drop_slow(self) -> None:
        # The EventSource reconnects by itself, with the cursor of the last event it got.
        self._ended.set()

    async def drain(self, delay: float) -> None:
        self._ended.set()
        if self._streaming:
            # The ``retry:`` field sets when the EventSource comes back (with its cursor).
            self.queue(sse_retry(round(delay * 1000)), counted=False)
            await self.flush()

    def encode_snapshot(self, sub: Subscription, frame: str) -> str:
        assert sub.epoch is not None
        self.positions[sub.stream] = (sub.epoch, sub.position)
        return sse_message(frame, event=SSE_SNAPSHOT, id=encode_cursor(self.positions))

    async def write(self, text: str) -> None:
        await self.send({"type": "http.response.body", "body": text.encode(), "more_body": True})

    async def write_many(self, frames: list[str]) -> None:
        await self.write("".join(frames))

    # --- request -----------------------------------------------------------------------
    async def respond_error(
        self, status: int, code: str, message: str, *, allow: bytes | None = None
    ) -> None:
        stats.errors[code] += 1
        body = dumps({"error": {"code": code, "message": message}}).encode()
        extra = [(b"allow", allow)] if allow else []
        if status == 401:
            # Session cookie, or one of these in the Authorization header.
            extra.append((b"www-authenticate", b'Ticket, Token, Bearer realm="realtime"'))
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *extra,
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": body})

    async def parse(self) -> tuple[list[str], dict[str, Position], dict[str, Any]]:
        """Streams, resume positions and presence asked for; raises ``RealtimeError``."""
        query = self.query
        streams = list(dict.fromkeys(query.get("stream", [])))
        if not streams:
            raise RealtimeError("Name at least one stream: ?stream=NAME.", code=INVALID_FRAME)
        limit = int(self.settings.MAX_SUBSCRIPTIONS)
        if len(streams) > limit:
            raise RealtimeError(
                f"At most {limit} streams per connection.", code=TOO_MANY_SUBSCRIPTIONS
            )
        if largest_cursor(streams) > MAX_CURSOR_LENGTH:
            raise RealtimeError(
                "These streams' names are too long for one event stream: its resume cursor "
                f"would not fit in {MAX_CURSOR_LENGTH} characters. Open several.",
                code=TOO_MANY_SUBSCRIPTIONS,
            )
        for stream in streams:
            await self.check("subscribe", stream)
        # The browser's own reconnect sends the header, which is newer than the query
        # parameter of the page that opened the EventSource.
        cursor = self.header(b"last-event-id") or (query.get("last_event_id") or [""])[0]
        positions = decode_cursor(cursor) if cursor else {}
        for stream in [s for s in streams if s in positions]:
            await self.check("history", stream)
        joins: dict[str, Any] = {}
        wanted = list(dict.fromkeys(query.get("presence", [])))
        if wanted:
            try:
                meta = loads((query.get("meta") or ["{}"])[0])
            except ValueError:
                raise RealtimeError("'meta' is not valid JSON.", code=INVALID_PRESENCE) from None
            meta = check_meta(meta)
            for stream in wanted:
                if stream not in streams:
                    raise RealtimeError(
                        f"presence={stream!r} names a stream that is not subscribed.",
                        code=INVALID_FRAME,
                    )
                await self.check("presence", stream)
                joins[stream] = meta
        return streams, positions, joins

    async def run(self) -> None:
        if self.scope["type"] != "http":
            return
        if self.scope.get("method") != "GET":
            await self.respond_error(405, INVALID_FRAME, "Use GET.", allow=b"GET")
            return
        refusal = None
        if not origin_allowed(self.scope):
            refusal = (403, FORBIDDEN_ORIGIN, "This origin may not open event streams here.")
        refusal = refusal or self.credentials_refusal()
        if refusal is None:
            try:
                streams, positions, joins = await self.parse()
            except RealtimeError as exc:
                status = STATUS_FOR_CODE.get(exc.code, 400)
                if status == 403 and self.user_id is None:
                    status = 401  # signing in might help
                await self.respond_error(status, exc.code, exc.message)
                return
            refusal = await self.admit()  # records the connection, unless over a cap
        if refusal is not None:
            stats.auth_failures[refusal[1]] += 1
            await self.respond_error(*refusal)
            return
        if self._ended.is_set():
            # Drained between its admission and here: refused like a handshake that came late.
            await self.detach()
            await self.respond_error(503, SERVER_DRAINING, "This server is shutting down.")
            return
        self._streaming = True
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache, no-transform"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        try:
            # SSE never sends batch frames: its messages simply follow each other.
            self.queue(
                f"retry: {int(self.settings.SSE_RETRY)}\n"
                + sse_message(self.welcome_frame(batch=False), event=SSE_WELCOME)
            )
            await self.flush()
            for stream in streams:
                epoch, since = positions.get(stream, (None, None))
                await self.subscribe(stream, since=since, epoch=epoch)
            for stream, meta in joins.items():
                try:
                    await self.join_presence(stream, meta)
                except RealtimeError as exc:
                    self.queue(sse_message(error_frame(exc.code, exc.message), event=SSE_ERROR))
                    await self.flush()
            await self.wait_for_disconnect()
        finally:
            await self.detach()

    async def wait_for_disconnect(self) -> None:
        """Send keep-alives until the client leaves or the server ends the stream."""
        interval = float(self.settings.HEARTBEAT_INTERVAL)
        receiving = asyncio.ensure_future(self.receive())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {receiving, ended}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
                if ended in done:
                    await self.send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                if receiving in done:
                    if receiving.result()["type"] == "http.disconnect":
                        return
                    receiving = asyncio.ensure_future(self.receive())
                    continue
                # A comment is no event for the client to count: not in the window either.
                self.queue(sse_comment("keep-alive"), counted=False)
                await self.flush()
                if self.closed:
                    return
        finally:
            receiving.cancel()
            ended.cancel()

    async def revoke(self, reason: str, *, streams: str | None = None) -> None:
        if streams is not None:
            gone = await self.revoke_streams(streams)
            for stream in gone:
                frame = error_frame(REVOKED, f"{reason} ({stream})")
                self.queue(sse_message(frame, event=SSE_ERROR))
            await self.flush()
            if self.subscriptions:
                return
        else:
            self.queue(sse_message(error_frame(REVOKED, reason), event=SSE_ERROR))
            await self.flush()
        self._ended.set()
