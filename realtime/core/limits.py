"""The per-connection frame rate limit (connection caps are counted in ``registry``)."""

from __future__ import annotations

import time

from realtime.conf import realtime_settings


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``; each frame takes one."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    @classmethod
    def from_settings(cls) -> TokenBucket:
        config = realtime_settings.RATE_LIMIT
        return cls(config["rate"], config["burst"])

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
