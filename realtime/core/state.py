"""What the hub keeps per stream, and what it needs of a connection.

``StreamState`` is one stream's local subscribers, group membership and presence versions;
``HubConnection`` declares every member the hub and its helpers use of a connection
(``realtime.endpoints.connection.BaseConnection`` implements it), so they touch nothing else.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from realtime.bus import messages as m
from realtime.core.presence_tracking import StreamPresence
from realtime.core.subscription import Connection, Subscription


class HubConnection(Connection, Protocol):
    """Everything the hub and its helpers use of a connection (``BaseConnection``)."""

    transport: str
    subscriptions: dict[str, Subscription]
    last_seen: float

    @property
    def user_id(self) -> Any: ...

    @property
    def remote_addr(self) -> str: ...

    @property
    def user_agent(self) -> str: ...

    @property
    def presence_key(self) -> str: ...

    @property
    def auth(self) -> dict[str, Any]: ...

    def touch(self) -> None: ...

    def acknowledge(self, count: int) -> None: ...

    def revoked_by(self, message: m.RevokeMessage) -> bool: ...

    async def revoke(self, reason: str, *, streams: str | None = None) -> None: ...

    async def drain(self, delay: float) -> None: ...


class StreamState:
    """A hub's local subscribers of one stream, its group membership and its presence."""

    __slots__ = ("_lock", "_presence", "checked_head", "joined", "subs")

    def __init__(self) -> None:
        self.subs: dict[Subscription, None] = {}  # insertion-ordered set
        self.joined = False
        self.checked_head = 0
        # Made when first needed: a process with a stream per connection (per-user
        # notifications) holds one of these per idle connection, and the two came to
        # 360 of its 490 bytes.
        self._lock: asyncio.Lock | None = None
        self._presence: StreamPresence | None = None

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    @property
    def presence(self) -> StreamPresence:
        if self._presence is None:
            self._presence = StreamPresence()
        return self._presence

    @property
    def presence_if_any(self) -> StreamPresence | None:
        """The stream's presence state, without making one."""
        return self._presence

    def close_presence(self) -> None:
        """Stop what the stream's presence has scheduled, if it has any."""
        if self._presence is not None:
            self._presence.close()

    def sync_behind(self, epoch: str, head: int) -> None:
        """Catch up from the database each subscription (not already catching up) of
        another epoch than ``epoch``, or before ``head``."""
        for sub in list(self.subs):
            if not sub.syncing and (sub.epoch != epoch or sub.position < head):
                sub.start_sync()
