"""What WebSocket and SSE connections share: identity, an ordered outbox, subscriptions and
presence.

A transport subclasses ``BaseConnection`` and implements ``encode_event``,
``encode_subscribed``, ``encode_presence`` and ``write``. Frames are queued synchronously (so
a subscription's frames can never be reordered by an ``await``) and written by ``flush``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import markcoroutinefunction

from realtime.bus.messages import RevokeMessage
from realtime.conf import realtime_settings
from realtime.core import flow
from realtime.core.hub import DRAINING, Hub, get_hub
from realtime.core.policy import Action, get_policy
from realtime.core.stats import stats
from realtime.core.subscription import Subscription
from realtime.exceptions import PermissionDenied, RealtimeError
from realtime.protocol import (
    AUTHENTICATION_REQUIRED,
    INVALID_CREDENTIALS,
    NOT_SUBSCRIBED,
    SERVER_DRAINING,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_SUBSCRIPTIONS,
    SubscribedFrame,
    gap_frame,
    welcome_frame,
)
from realtime.storage.presence import ANONYMOUS_PREFIX, check_meta
from realtime.storage.registry import GONE
from realtime.streams import compile_pattern, validate_stream_name

logger = logging.getLogger("realtime.connection")

# What ASGI servers raise from ``send`` once the peer is gone, besides ``OSError`` (which the
# ASGI spec asks for, and uvicorn's ``ClientDisconnected`` is): hypercorn's
# ``UnexpectedMessageError`` (a send in the closed state), granian's ``ClientDisconnected``.
DISCONNECT_ERRORS = frozenset({"UnexpectedMessageError", "ClientDisconnected"})


def is_disconnect(exc: BaseException) -> bool:
    """Whether a failed write means the peer went away (not a bug of ours)."""
    return isinstance(exc, OSError) or type(exc).__name__ in DISCONNECT_ERRORS


CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Refusal code (logs, ``realtime_auth_failures_total``) of a handshake the client or the
# server (daphne's --websocket_connect_timeout) gave up on before it was admitted.
CLIENT_GONE = "client_gone"


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Most frames and bytes (about) joined into one write by ``flush``.
BATCH_FRAMES = 1000
BATCH_BYTES = 256 * 1024


class BaseConnection:
    transport = "?"
    # Whether ``encode_event`` returns the event's frame as published (WebSocket), so the
    # hot path may skip the call.
    events_as_published = False
    # Frames ``flush`` may join into one ``write_many``; 1 writes each on its own.
    batch_frames = 1

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.id = uuid.uuid4().hex
        self.settings = realtime_settings
        self.subscriptions: dict[str, Subscription] = {}
        self.closed = False
        self.last_seen = time.monotonic()
        # Exists only while frames wait to be written: an idle connection keeps no deque.
        self._outbox: deque[str] | None = None
        self._flushing = False
        self._hub: Hub | None = None
        self._attached = False
        self.window = flow.Window.from_settings()
        self._room: asyncio.Event | None = None  # set when a full window is relieved
        self.slow = False
        # While slow, what each subscription's SLOW_CONSUMERS policy holds back (flow.Held).
        self._held: dict[Subscription, flow.Held] = {}
        self._disconnecting = False

    @classmethod
    def as_asgi(cls) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """The ASGI application to route to, like a Channels consumer's ``as_asgi()``."""

        def app(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            # The connection's own coroutine, not one awaiting it: a frame less per connection.
            return cls(scope, receive, send).run()

        # Still an ASGI 3 (single-callable) application to asgiref's checks.
        return markcoroutinefunction(app)

    async def run(self) -> None:
        raise NotImplementedError

    @property
    def query(self) -> dict[str, list[str]]:
        """The query parameters, parsed when asked (rarely): not kept per idle connection."""
        return parse_qs(
            bytes(self.scope.get("query_string", b"")).decode("utf-8", "replace"),
            keep_blank_values=True,
        )

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            self._hub = get_hub()
        return self._hub

    # --- who is on the other end ---------------------------------------------------------
    @property
    def user(self) -> Any:
        return self.scope.get("user")

    @property
    def user_id(self) -> Any:
        user = self.user
        return user.pk if user is not None and user.is_authenticated else None

    @property
    def client_id(self) -> str:
        """The ``client_id`` query parameter (one per browser, kept by the client), if valid."""
        value = (self.query.get("client_id") or [""])[0]
        return value if CLIENT_ID_RE.fullmatch(value) else self.id

    @property
    def presence_key(self) -> str:
        """Presence member key: the user's pk, or ``anon:<client id>`` for anonymous clients."""
        user_id = self.user_id
        return str(user_id) if user_id is not None else f"{ANONYMOUS_PREFIX}{self.client_id}"

    @property
    def remote_addr(self) -> str:
        client = self.scope.get("client")
        return str(client[0]) if client else ""

    @property
    def user_agent(self) -> str:
        return self.header(b"user-agent") or ""

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope.get("headers", []):
            if key == name:
                return bytes(value).decode("latin-1")
        return None

    @property
    def auth(self) -> dict[str, Any]:
        """How the client authenticated (``realtime.auth``): method, session, token, error."""
        return self.scope.get("realtime.auth") or {}

    def welcome_frame(self, batch: bool) -> str:
        """The first frame of the connection (``batch``: whether it may get batch frames)."""
        return welcome_frame(
            self.id,
            heartbeat=self.settings.HEARTBEAT_INTERVAL,
            window=(self.window.limit_messages, self.window.limit_bytes),
            batch=batch,
            max_frame=int(self.settings.MAX_FRAME_SIZE),
        )

    def credentials_refusal(self) -> tuple[int, str, str] | None:
        """Why the credentials cannot connect: (HTTP status, code, message), or None."""
        if self.auth.get("error"):
            return 401, INVALID_CREDENTIALS, "The token or ticket sent is not valid (any more)."
        if self.settings.AUTH_REQUIRED and self.user_id is None:
            return 401, AUTHENTICATION_REQUIRED, "Sign in first: this server needs a user."
        return None

    async def admit(self, gone: Callable[[], bool] | None = None) -> tuple[int, str, str] | None:
        """Let the connection in and record it, or say why not: (HTTP status, code, message).

        Checked before the WebSocket is accepted or the SSE response starts. ``gone()`` tells
        whether the client has left meanwhile (then nothing is recorded).
        """
        refusal = self.credentials_refusal()
        if refusal is not None:
            return refusal
        cap = await self.hub.attach(self, gone)  # recorded here, unless over a cap
        if cap == GONE:
            return 499, CLIENT_GONE, "The client left before it was admitted."
        if cap == DRAINING:
            return 503, SERVER_DRAINING, "This server is shutting down: connect again."
        if cap is not None:
            return 429, TOO_MANY_CONNECTIONS, f"Too many open connections for this {cap}."
        self._attached = True
        stats.connections[self.transport] += 1
        return None

    def revoked_by(self, message: RevokeMessage) -> bool:
        """Whether a ``realtime.revoke`` message names this connection."""
        wanted = {
            "user": self.user_id,
            "session": self.auth.get("session"),
            "token": self.auth.get("token"),
            "connection": self.id,
        }
        given = {
            "user": message["user"],
            "session": message["session"],
            "token": message["token"],
            "connection": message["connection"],
        }
        named = [field for field, value in given.items() if value is not None]
        return bool(named) and all(str(given[field]) == str(wanted[field]) for field in named)

    async def revoke(self, reason: str, *, streams: str | None = None) -> None:
        """End this connection (or only its subscriptions matching ``streams``)."""
        raise NotImplementedError

    async def drain(self, delay: float) -> None:
        """The process is shutting down: tell the client to reconnect (to another process)
        after ``delay`` seconds, and end the connection. Called by ``Hub.drain``."""
        raise NotImplementedError

    async def revoke_streams(self, pattern: str) -> list[str]:
        """Unsubscribe every stream matching ``pattern``; returns them."""
        regex = compile_pattern(pattern)
        gone = [stream for stream in self.subscriptions if regex.fullmatch(stream)]
        for stream in gone:
            await self.unsubscribe(stream)
        return gone

    def touch(self) -> None:
        """The client was heard from (any frame, or an HTTP heartbeat)."""
        self.last_seen = time.monotonic()

    # --- lifecycle ---------------------------------------------------------------------
    async def detach(self) -> None:
        """Drop subscriptions now; presence and the record go after the grace period."""
        self.closed = True
        await self.unsubscribe_all()
        if self._attached:
            self._attached = False
            stats.connections[self.transport] -= 1
            self.hub.detach(self)

    # --- hub callbacks (queue only) ----------------------------------------------------
    def deliver(self, sub: Subscription, event: str, frame: str) -> None:
        # The hot path: once per event per subscriber, so ``_queue`` and ``_push`` are
        # inlined here, and ``encode_event`` skipped where it would return ``frame``.
        if self.closed:
            return
        window = self.window
        if self.slow or window.full():
            self._slow(sub, event, frame)
            return
        stats.deliveries += 1
        text = frame if self.events_as_published else self.encode_event(sub, event, frame)
        window.add(len(text))
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        outbox.append(text)

    def _slow(self, sub: Subscription, event: str, frame: str) -> None:
        """The client is not keeping up: apply the stream's SLOW_CONSUMERS policy."""
        if not self.slow:
            self.slow = True
            stats.slow_consumer_drops += 1
            logger.info(
                "Connection %s is slow (%d frames in flight).", self.id, self.window.in_flight
            )
        policy = flow.policy_for(sub.stream)
        if policy == "skip":
            self._held.setdefault(sub, flow.Held()).skip(sub.position)
        elif policy == "conflate":
            seq = sub.position if json.loads(frame).get("seq") is not None else None
            self._held.setdefault(sub, flow.Held()).conflate(seq, event, frame)
        elif not self._disconnecting:
            self._disconnecting = True
            self.hub.spawn(self.drop_slow())

    async def drop_slow(self) -> None:
        """Close a slow connection; the client resumes from history (transport-specific)."""
        raise NotImplementedError

    def has_room(self) -> bool:
        """Whether the window takes another frame (replays check before each event)."""
        return not self.window.full()

    async def wait_for_room(self) -> None:
        """Wait until the client acknowledges enough to go on replaying.

        A client that sends no acknowledgement within HEARTBEAT_TIMEOUT (a plain EventSource,
        say) is dropped like a slow consumer: it resumes from its cursor when it reconnects.
        """
        if self._room is None:
            self._room = asyncio.Event()
        self._room.clear()
        try:
            async with asyncio.timeout(float(self.settings.HEARTBEAT_TIMEOUT)):
                await self._room.wait()
        except TimeoutError:
            if not self._disconnecting:
                self._disconnecting = True
                stats.slow_consumer_drops += 1
                self.hub.spawn(self.drop_slow())

    def acknowledge(self, count: int) -> None:
        """The client has received ``count`` frames; a slow connection may be caught up."""
        self.window.ack(count)
        if self._room is not None and self.window.relieved():
            self._room.set()
        if self.slow and not self._disconnecting and self.window.relieved():
            self.slow = False
            for sub in list(self.subscriptions.values()):
                held = self._held.pop(sub, None)
                if held is None:
                    continue
                if held.skipped is not None:
                    first, last = held.skipped
                    self._queue(self.encode_gap(sub, gap_frame(sub.stream, first, last)))
                for event, frame in held.frames():
                    stats.deliveries += 1
                    self._queue(self.encode_event(sub, event, frame))
            self._held.clear()  # of subscriptions that ended meanwhile
            self.hub.spawn(self.flush())

    def subscribed(self, sub: Subscription, frame: SubscribedFrame) -> None:
        if not self.closed:
            self._queue(self.encode_subscribed(sub, frame))

    def presence(self, sub: Subscription, kind: str, frame: str) -> None:
        if not self.closed and not self.window.full():
            self._queue(self.encode_presence(sub, kind, frame))

    def snapshot(self, sub: Subscription, frame: str) -> None:
        if not self.closed:
            self._queue(self.encode_snapshot(sub, frame))

    def queue(self, text: str, *, counted: bool = True) -> None:
        """Queue a frame; ``counted=False`` for what the client does not count (comments)."""
        if self.closed:
            return
        if counted:
            self._queue(text)
        else:
            self._push(text)

    def _queue(self, text: str) -> None:
        self.window.add(len(text))
        self._push(text)

    def _push(self, text: str) -> None:
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(text)

    async def flush(self) -> None:
        """Write queued frames in order; concurrent callers leave it to the one writing.

        Frames queued together go out in one write where the transport can join them (SSE
        always, WebSocket when the client asked for ``batch`` frames): at high event rates
        the per-write cost of the server, not the per-event one, is what limits throughput.
        """
        outbox = self._outbox
        if self._flushing or outbox is None:
            return
        self._flushing = True
        try:
            while outbox and not self.closed:
                if len(outbox) == 1 or self.batch_frames <= 1:
                    await self.write(outbox.popleft())
                    continue
                frames = [outbox.popleft()]
                size = len(frames[0])
                while outbox and len(frames) < self.batch_frames and size < BATCH_BYTES:
                    frames.append(outbox.popleft())
                    size += len(frames[-1])
                await self.write_many(frames)
        except Exception as exc:
            # Usually the peer is gone, and the receive loop will see the disconnect and clean
            # up; anything else is a bug (an encoder's, say) and must not look like one.
            if is_disconnect(exc):
                logger.debug("Write to connection %s failed.", self.id, exc_info=True)
            else:
                logger.warning(
                    "Writing to connection %s failed; closing it.", self.id, exc_info=True
                )
            self.closed = True
        finally:
            self._flushing = False
            if self.closed or not outbox:
                self._outbox = None

    # --- transport hooks ---------------------------------------------------------------
    def encode_event(self, sub: Subscription, event: str, frame: str) -> str:
        raise NotImplementedError

    def encode_subscribed(self, sub: Subscription, frame: SubscribedFrame) -> str:
        raise NotImplementedError

    def encode_presence(self, sub: Subscription, kind: str, frame: str) -> str:
        raise NotImplementedError

    def encode_snapshot(self, sub: Subscription, frame: str) -> str:
        raise NotImplementedError

    def encode_gap(self, sub: Subscription, frame: str) -> str:
        raise NotImplementedError

    async def write(self, text: str) -> None:
        raise NotImplementedError

    async def write_many(self, frames: list[str]) -> None:
        """Write several queued frames at once (only called when ``batch_frames`` > 1)."""
        raise NotImplementedError

    # --- subscriptions -----------------------------------------------------------------
    async def check(self, action: Action, stream: str) -> str:
        """Validate ``stream`` and ask the policy; raises ``RealtimeError`` subclasses."""
        validate_stream_name(stream)
        if not await get_policy().has_permission(action, self.user, stream):
            raise PermissionDenied(f"Not allowed to {action} {stream!r}.")
        return stream

    async def subscribe(
        self, stream: str, *, sub_id: Any = None, since: int | None = None, epoch: str | None = None
    ) -> Subscription:
        if len(self.subscriptions) >= int(self.settings.MAX_SUBSCRIPTIONS):
            raise RealtimeError(
                f"At most {self.settings.MAX_SUBSCRIPTIONS} subscriptions per connection.",
                code=TOO_MANY_SUBSCRIPTIONS,
            )
        sees_presence = await get_policy().has_permission("presence", self.user, stream)
        sub = await self.hub.subscribe(self, stream, sub_id=sub_id, since=since, epoch=epoch)
        sub.sees_presence = sees_presence
        self.subscriptions[stream] = sub
        self.hub.changed(self)
        stats.subscriptions += 1
        if since is not None:
            stats.resumes += 1
        return sub

    async def unsubscribe(self, stream: str) -> None:
        sub = self.subscriptions.pop(stream, None)
        if sub is None:
            return
        stats.subscriptions -= 1
        self.hub.changed(self)
        if self.hub.presence.is_member(self.id, stream) and not self.closed:
            await self.hub.presence.leave(self.id, [stream])
        await self.hub.unsubscribe(sub)

    async def unsubscribe_all(self) -> None:
        for stream in list(self.subscriptions):
            try:
                await self.unsubscribe(stream)
            except Exception:
                logger.exception("Unsubscribing %s from %s failed.", self.id, stream)

    # --- presence ----------------------------------------------------------------------
    async def leave_presence(self, stream: str) -> None:
        if stream not in self.subscriptions:
            raise RealtimeError(f"Not subscribed to {stream!r}.", code=NOT_SUBSCRIBED)
        await self.hub.presence.leave(self.id, [stream])

    async def join_presence(self, stream: str, meta: Any) -> str:
        """Join (or update metadata in) the presence of a subscribed stream; returns the ref."""
        sub = self.subscriptions.get(stream)
        if sub is None:
            raise RealtimeError(
                f"Subscribe to {stream!r} before joining its presence.", code=NOT_SUBSCRIBED
            )
        await self.check("presence", stream)
        meta = check_meta(meta)
        return await self.hub.presence.join(sub, self.presence_key, self.user_id, meta)
