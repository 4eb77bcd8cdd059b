"""Liveness and flow control of the open connection: when it was last heard from and last
sent to, how many frames arrived and how many were acknowledged
(docs/protocol.md#flow-control); and the rate limit on frames sent. Bookkeeping only: the
connection asks, and sends what is due (the browser client's ``liveness.js``, ``outbox.js``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Liveness:
    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.received = 0  # frames received on this connection, the welcome included
        self.acked = 0
        self.ack_every = 50
        self.last_sent = 0.0
        self.waiting_since: float | None = None  # reading the socket since; None: busy

    def opened(self, window_messages: int | None) -> None:
        """A connection was welcomed; the welcome is its first frame."""
        self.received = 1
        self.acked = 0
        # Every quarter of the window (at most every 100 frames), so the server keeps sending.
        self.ack_every = max(1, min(100, (window_messages or 200) // 4))
        self.last_sent = self.now()
        self.waiting_since = None

    def count(self) -> None:
        """A frame was handled (each frame of a batch counts, the batch itself not)."""
        self.received += 1

    @property
    def ack_due(self) -> bool:
        return self.received - self.acked >= self.ack_every

    @property
    def unacknowledged(self) -> bool:
        return self.received > self.acked

    def acknowledge(self) -> int:
        """Mark everything received as acknowledged; the count to send."""
        self.acked = self.received
        return self.received

    def sent(self) -> None:
        self.last_sent = self.now()

    def quiet_for(self, seconds: float) -> bool:
        return self.now() - self.last_sent >= seconds

    def silent_for(self, seconds: float, last_heard: float) -> bool:
        """Whether nothing arrived for longer than ``seconds`` while the client was reading.

        Time the application spent on a frame does not count: the client was not reading,
        so the server's frames waited in the socket.
        """
        if self.waiting_since is None:
            return False
        return self.now() - max(last_heard, self.waiting_since) > seconds


class RateLimit:
    """A token bucket on frames sent: ``rate`` a second, bursts of ``burst``; kept below the
    server's ``RATE_LIMIT`` (50/100), which drops frames over it."""

    def __init__(self, rate: float, burst: int, now: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate_limit needs rate > 0 and burst >= 1.")
        self.rate, self.burst, self.now = rate, burst, now
        self.tokens = float(burst)
        self.stamp = now()

    def _refill(self) -> None:
        now = self.now()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self) -> None:
        self._refill()
        while self.tokens < 1:
            await asyncio.sleep((1 - self.tokens) / self.rate)
            self._refill()
        self.tokens -= 1
