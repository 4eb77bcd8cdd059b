"""What WebSocket and SSE connections share: an ordered outbox and their subscriptions.

A transport subclasses ``BaseConnection`` and implements ``encode_event``,
``encode_subscribed`` and ``write``. Frames are queued synchronously (so a subscription's
frames can never be reordered by an ``await``) and written by ``flush``.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from typing import Any

from realtime.conf import realtime_settings
from realtime.exceptions import PermissionDenied, RealtimeError
from realtime.hub import Hub, Subscription, get_hub
from realtime.policy import Action, get_policy
from realtime.protocol import TOO_MANY_SUBSCRIPTIONS, SubscribedFrame
from realtime.streams import validate_stream_name

logger = logging.getLogger("realtime.connection")


class BaseConnection:
    transport = "?"

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.id = uuid.uuid4().hex
        self.subscriptions: dict[str, Subscription] = {}
        self.closed = False
        self._outbox: deque[str] = deque()
        self._flushing = False
        self._hub: Hub | None = None
        self.settings = realtime_settings

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            self._hub = get_hub()
        return self._hub

    @property
    def user(self) -> Any:
        return self.scope.get("user")

    # --- hub callbacks (queue only) ----------------------------------------------------
    def deliver(self, sub: Subscription, event: str, frame: str) -> None:
        if not self.closed:
            self._outbox.append(self.encode_event(sub, event, frame))

    def subscribed(self, sub: Subscription, frame: SubscribedFrame) -> None:
        if not self.closed:
            self._outbox.append(self.encode_subscribed(sub, frame))

    def queue(self, text: str) -> None:
        if not self.closed:
            self._outbox.append(text)

    async def flush(self) -> None:
        """Write queued frames in order; concurrent callers leave it to the one writing."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._outbox and not self.closed:
                await self.write(self._outbox.popleft())
        except Exception:
            # The peer is gone; the receive loop will see the disconnect and clean up.
            logger.debug("Write to connection %s failed.", self.id, exc_info=True)
            self.closed = True
        finally:
            self._flushing = False
            if self.closed:
                self._outbox.clear()

    # --- transport hooks ---------------------------------------------------------------
    def encode_event(self, sub: Subscription, event: str, frame: str) -> str:
        raise NotImplementedError

    def encode_subscribed(self, sub: Subscription, frame: SubscribedFrame) -> str:
        raise NotImplementedError

    async def write(self, text: str) -> None:
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
        sub = await self.hub.subscribe(self, stream, sub_id=sub_id, since=since, epoch=epoch)
        self.subscriptions[stream] = sub
        return sub

    async def unsubscribe(self, stream: str) -> None:
        sub = self.subscriptions.pop(stream, None)
        if sub is not None:
            await self.hub.unsubscribe(sub)

    async def unsubscribe_all(self) -> None:
        for stream in list(self.subscriptions):
            try:
                await self.unsubscribe(stream)
            except Exception:
                logger.exception("Unsubscribing %s from %s failed.", self.id, stream)
