"""The reconnect policy: full-jitter exponential backoff, capped; when to give up; the delay
a draining server asks for. Counters only, no timers and no I/O (the browser client's
``client/policy.js``, in seconds instead of milliseconds).
"""

from __future__ import annotations

import json
import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from realtime.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_RATE_LIMITED,
    CLOSE_SERVICE_RESTART,
    CLOSE_UNAUTHORIZED,
)

# Close codes after which retrying cannot help: the client closes instead.
FATAL_CLOSE_CODES = frozenset({CLOSE_UNAUTHORIZED})


@dataclass(frozen=True)
class Backoff:
    """Reconnect timing, in seconds: retry *n* (from 0) waits a random time in
    ``[0, min(cap, base * 2**n))``; a connection open for ``stable_after`` resets *n*;
    ``max_attempts`` failed retries in a row close the client (``None``: never)."""

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int | None = None
    stable_after: float = 5.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.stable_after < 0:
            raise ValueError("Backoff needs 0 < base <= cap and stable_after >= 0 (seconds).")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("Backoff.max_attempts must be None or >= 0.")


def backoff_delay(attempt: int, backoff: Backoff, random: Callable[[], float]) -> float:
    """The delay before retry number ``attempt`` (0 for the first): full jitter, capped."""
    return float(random() * min(backoff.cap, backoff.base * 2 ** min(attempt, 62)))


def restart_delay(code: int, reason: str) -> float | None:
    """The reconnect delay (seconds) a close with 1012 carries in its reason
    (``{"retry": <milliseconds>}``, ``realtime.protocol.restart_reason``); None otherwise."""
    if code != CLOSE_SERVICE_RESTART:
        return None
    try:
        retry = json.loads(reason).get("retry")
    except (ValueError, AttributeError):
        return None
    if isinstance(retry, bool) or not isinstance(retry, int | float) or not retry >= 0:
        return None
    return float(retry) / 1000


@dataclass(frozen=True)
class Retry:
    attempt: int  # the retry's number in this run of failures, from 0
    delay: float  # seconds to wait before it


class ReconnectPolicy:
    """How long to wait before the next attempt, and whether to make one at all."""

    def __init__(self, backoff: Backoff, random: Callable[[], float] = _random.random) -> None:
        self.backoff = backoff
        self.random = random
        self.attempt = 0  # failed attempts in a row: the backoff exponent

    def stable(self) -> None:
        """The connection stayed open ``stable_after``: the next failure starts over."""
        self.attempt = 0

    def forgive(self) -> None:
        """The last failure was not the server's (a refused stream): do not count it."""
        self.attempt = max(0, self.attempt - 1)

    @staticmethod
    def is_fatal(code: int) -> bool:
        return code in FATAL_CLOSE_CODES

    def retry(self, code: int, after: float | None = None) -> Retry | None:
        """The next retry after a close with ``code``, counted; None: give up.

        ``after``: the delay a draining server asked for (1012). It replaces the backoff and
        does not raise its exponent: the server spread its clients itself, and waiting
        longer would only keep them away.
        """
        if code == CLOSE_RATE_LIMITED:
            self.attempt = max(self.attempt, 4)
        limit = self.backoff.max_attempts
        if limit is not None and self.attempt >= limit:
            return None
        if after is not None:
            attempt = self.attempt
            self.attempt += 1
            return Retry(attempt, after)
        # A server going away (a deploy) closes every client at once: spread them wider.
        if code == CLOSE_GOING_AWAY:
            self.attempt = max(self.attempt, 2)
        attempt = self.attempt
        delay = backoff_delay(attempt, self.backoff, self.random)
        self.attempt += 1
        return Retry(attempt, delay)
