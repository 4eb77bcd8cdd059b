"""The WebSocket endpoint (``/realtime/ws/``): protocol 1, JSON text frames.

A plain ASGI application rather than a Channels consumer: it needs no channel of its own
(the hub receives for every connection of the process), it must answer pings while a
subscription replays history, and it enforces the heartbeat timeout with one timer per
``receive``. Before accepting, it checks the Origin (``ALLOWED_ORIGINS``), the credentials
``realtime.auth.RealtimeAuthMiddlewareStack`` resolved, and the connection caps; a refused
handshake never sees a frame.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from realtime.core.limits import TokenBucket
from realtime.core.publishing import apublish, validate_event_type
from realtime.core.stats import stats
from realtime.core.subscription import Subscription
from realtime.endpoints.auth import SUBPROTOCOL, offered_subprotocols, origin_allowed
from realtime.endpoints.connection import (
    BATCH_FRAMES,
    CLIENT_GONE,
    BaseConnection,
    Receive,
    Scope,
    Send,
)
from realtime.exceptions import RealtimeError
from realtime.protocol import (
    ALREADY_SUBSCRIBED,
    CLOSE_FORBIDDEN,
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_INTERNAL_ERROR,
    CLOSE_RATE_LIMITED,
    CLOSE_SERVICE_RESTART,
    CLOSE_SLOW_CONSUMER,
    CLOSE_UNAUTHORIZED,
    FORBIDDEN_ORIGIN,
    FRAME_TOO_LARGE,
    INTERNAL_ERROR,
    NOT_SUBSCRIBED,
    RATE_LIMITED,
    REVOKED,
    UNSUPPORTED_FRAME,
    FrameId,
    SubscribedFrame,
    batch_frame,
    dumps,
    error_frame,
    parse_client_frame,
    pong_frame,
    presence_ack_frame,
    publish_ack_frame,
    restart_reason,
    unsubscribed_frame,
)

logger = logging.getLogger("realtime.websocket")


class WebSocketConnection(BaseConnection):
    """One WebSocket client, from ``websocket.connect`` to disconnect."""

    transport = "websocket"
    events_as_published = True

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self.bucket = TokenBucket.from_settings()
        self.dropped = 0  # frames dropped in a row by the rate limit
        if self.query.get("batch") == ["1"]:  # the client reads ``batch`` frames
            self.batch_frames = BATCH_FRAMES

    # --- transport hooks ---------------------------------------------------------------
    def encode_event(self, sub: Subscription, event: str, frame: str) -> str:
        return frame

    def encode_subscribed(self, sub: Subscription, frame: SubscribedFrame) -> str:
        return dumps(frame)

    def encode_presence(self, sub: Subscription, kind: str, frame: str) -> str:
        return frame

    def encode_snapshot(self, sub: Subscription, frame: str) -> str:
        return frame

    def encode_gap(self, sub: Subscription, frame: str) -> str:
        return frame

    async def drop_slow(self) -> None:
        await self.close(CLOSE_SLOW_CONSUMER)

    async def write(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def write_many(self, frames: list[str]) -> None:
        await self.write(batch_frame(frames))

    async def reply(self, frame: str) -> None:
        """Send one frame's JSON text (built by ``realtime.protocol.frames``) now."""
        self.queue(frame)
        await self.flush()

    async def error(self, code: str, message: str, frame_id: FrameId | None = None) -> None:
        stats.errors[code] += 1
        await self.reply(error_frame(code, message, frame_id))

    async def close(self, code: int, reason: str | None = None) -> None:
        if not self.closed:
            await self.flush()
            self.closed = True
            message: dict[str, Any] = {"type": "websocket.close", "code": code}
            if reason is not None:
                message["reason"] = reason  # ASGI 2.3; realtime.serve sends it with daphne
            await self.send(message)

    async def drain(self, delay: float) -> None:
        await self.close(CLOSE_SERVICE_RESTART, restart_reason(round(delay * 1000)))

    async def revoke(self, reason: str, *, streams: str | None = None) -> None:
        if streams is not None:
            for stream in await self.revoke_streams(streams):
                await self.reply(unsubscribed_frame(None, stream, revoked=True))
            return
        await self.error(REVOKED, reason)
        await self.close(CLOSE_UNAUTHORIZED)

    # --- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        message = await self.receive()
        if message["type"] != "websocket.connect":
            return
        refusal = None if origin_allowed(self.scope) else (403, FORBIDDEN_ORIGIN, "")
        if not self.settings.WEBSOCKET_ENABLED:
            refusal = (403, "websocket_disabled", "")
        refusal = refusal or await self.admit_unless_gone()
        if refusal is not None:
            # Closing before accepting makes the server answer the handshake with HTTP 403:
            # the client learns nothing, and no frame is ever sent on this connection.
            logger.info("Refused WebSocket %s: %s.", self.remote_addr, refusal[1])
            stats.auth_failures[refusal[1]] += 1
            await self.send({"type": "websocket.close", "code": CLOSE_FORBIDDEN})
            return
        if self.closed:
            # Drained between its admission and here: the 1012 went out as the refusal.
            await self.detach()
            return
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if SUBPROTOCOL in offered_subprotocols(self.scope):
            accept["subprotocol"] = SUBPROTOCOL  # never echo the ticket
        await self.send(accept)
        self.bucket = TokenBucket.from_settings()
        try:
            await self.reply(self.welcome_frame(batch=self.batch_frames > 1))
            await self.serve()
        except Exception:
            logger.exception("WebSocket connection %s failed.", self.id)
            await self.close(CLOSE_INTERNAL_ERROR)
        finally:
            await self.detach()

    async def admit_unless_gone(self) -> tuple[int, str, str] | None:
        """``admit``, watching for the handshake to be dropped meanwhile (daphne's
        ``--websocket_connect_timeout``, or the client gave up): in a reconnect storm, the
        queued database work of clients nobody waits for would delay those still waiting."""
        # Before the accept, the only message that can arrive is the disconnect.
        left = asyncio.ensure_future(self.receive())
        try:
            refusal = await self.admit(left.done)
        finally:
            left.cancel()  # a pending receive gives its message up to the next one
        if left.done() and not left.cancelled():
            left.exception()  # retrieved; a message or an error alike means the client left
            if refusal is None:
                await self.detach()  # recorded just before the client went: forget it again
                return 499, CLIENT_GONE, "The client left before it was admitted."
        return refusal

    async def serve(self) -> None:
        timeout = float(self.settings.HEARTBEAT_TIMEOUT)
        while True:
            try:
                async with asyncio.timeout(timeout):
                    message = await self.receive()
            except TimeoutError:
                await self.close(CLOSE_HEARTBEAT_TIMEOUT)
                return
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] == "websocket.receive":
                self.touch()
                await self.on_frame(message)

    async def on_frame(self, message: dict[str, Any]) -> None:
        if not self.bucket.take():
            self.dropped += 1
            if self.dropped > self.bucket.burst:
                await self.close(CLOSE_RATE_LIMITED)
            elif self.dropped == 1:
                await self.error(RATE_LIMITED, "Too many frames: slow down; frames are dropped.")
            return
        self.dropped = 0
        text = message.get("text")
        if text is None:
            await self.error(UNSUPPORTED_FRAME, "Binary frames are not supported; send JSON text.")
            return
        limit = int(self.settings.MAX_FRAME_SIZE)
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            await self.error(FRAME_TOO_LARGE, f"Frames are limited to {limit} bytes.")
            return
        frame_id: FrameId | None = None
        try:
            frame = parse_client_frame(text)
            frame_id = frame.get("id")
            handler = getattr(self, f"on_{frame['type']}")
            await handler(frame)
        except RealtimeError as exc:
            await self.error(
                exc.code, exc.message, frame_id if frame_id is not None else exc.frame_id
            )
        except Exception:
            logger.exception("Handling a frame on connection %s failed.", self.id)
            await self.error(INTERNAL_ERROR, "Internal server error.", frame_id)

    # --- client frames -----------------------------------------------------------------
    async def on_received(self, frame: dict[str, Any]) -> None:
        self.acknowledge(frame["count"])

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self.reply(pong_frame(frame))

    async def on_subscribe(self, frame: dict[str, Any]) -> None:
        stream = await self.check("subscribe", frame["stream"])
        if frame.get("since") is not None:
            await self.check("history", stream)
        if stream in self.subscriptions:
            raise RealtimeError(f"Already subscribed to {stream!r}.", code=ALREADY_SUBSCRIBED)
        await self.subscribe(
            stream, sub_id=frame.get("id"), since=frame.get("since"), epoch=frame.get("epoch")
        )
        if frame.get("presence") is not None:
            await self.join_presence(stream, frame["presence"])

    async def on_presence(self, frame: dict[str, Any]) -> None:
        stream = frame["stream"]
        if frame.get("leave"):
            await self.leave_presence(stream)
            await self.reply(presence_ack_frame(frame.get("id"), None))
            return
        ref = await self.join_presence(stream, frame.get("meta", {}))
        await self.reply(presence_ack_frame(frame.get("id"), ref))

    async def on_unsubscribe(self, frame: dict[str, Any]) -> None:
        stream = frame["stream"]
        if stream not in self.subscriptions:
            raise RealtimeError(f"Not subscribed to {stream[:200]!r}.", code=NOT_SUBSCRIBED)
        await self.unsubscribe(stream)
        await self.reply(unsubscribed_frame(frame.get("id"), stream))

    async def on_publish(self, frame: dict[str, Any]) -> None:
        stream = await self.check("publish", frame["stream"])
        validate_event_type(frame["event"])
        stored = await apublish(
            stream,
            frame["event"],
            frame.get("data"),
            ephemeral=frame.get("ephemeral", False),
            idempotency_key=frame.get("key"),
        )
        await self.reply(publish_ack_frame(frame.get("id"), stored.seq, stored.duplicate))
