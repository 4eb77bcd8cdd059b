"""Limits that keep one client from hurting the others: frame rate and connection counts."""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async

from realtime.conf import realtime_settings
from realtime.models import Connection


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


@database_sync_to_async
def connection_limit_reached(user_id: Any, remote_addr: str) -> str | None:
    """Which cap a new connection would break ("user" or "ip"), counting every process."""
    per_user = realtime_settings.MAX_CONNECTIONS_PER_USER
    if (
        user_id is not None
        and per_user is not None
        and Connection.objects.filter(user_id=user_id).count() >= int(per_user)
    ):
        return "user"
    per_ip = realtime_settings.MAX_CONNECTIONS_PER_IP
    if (
        remote_addr
        and per_ip is not None
        and Connection.objects.filter(remote_addr=remote_addr).count() >= int(per_ip)
    ):
        return "ip"
    return None
