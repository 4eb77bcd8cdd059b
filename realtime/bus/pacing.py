"""When to start the next pass of queued work: at once, or held by load.

The hub paces its write passes with it (``FLUSH_INTERVAL``), the sync sender its layer sends
(``sender.SEND_HOLD``).

Each write pass costs the process about the same whatever it carries (a ``batch`` frame or an
SSE chunk per connection), so the rule is about passes, not events:

* a process that has not started a pass for ``hold`` seconds writes at once: an idle stream
  pays no added latency;
* otherwise the next pass starts ``hold`` seconds after the last one started, and everything
  that arrived meanwhile leaves in it.

``hold`` is ``FLUSH_INTERVAL`` (20 ms) while passes are cheap, and grows with what they cost
— ``cost / BUSY_SHARE``, so passes take at most about a quarter of the process's time — up to
``MAX_HOLD_FACTOR * FLUSH_INTERVAL`` (60 ms). A fixed interval alone leaves a valley: at
40 to 100 events/s the events arrive just over an interval apart, each is written on its own,
and a process with hundreds of subscribers spends its whole core writing them one by one.

Behind, it holds longer. When events reach the process later than they used to — their
publish-to-arrival time, over its lowest of the last minute or so (``FLOOR_WINDOW``, which
also cancels the publisher's clock offset) — the process, or the machine it shares, is not
keeping up, and every pass it makes is work its backlog waits behind. The hold then grows to
half of that excess (``BEHIND_SHARE``), up to ``MAX_BEHIND_HOLD`` (250 ms): fewer, fuller
writes, for the process and for its clients, until it has caught up. A late event waits at
most half as long again for it; one on time is not held any longer than before. (Measured on
the 2-core benchmark machine, docs/performance.md: at 400 events/s to 500 subscribers the
fixed 60 ms cap fell behind by seconds, with clients and servers sharing the cores.)
"""

from __future__ import annotations

import time

# Largest share of its time a process should spend in write passes before holding longer.
BUSY_SHARE = 0.25
# The longest hold, in multiples of FLUSH_INTERVAL.
MAX_HOLD_FACTOR = 3.0
# Weight of the newest pass in the running cost and lag estimates.
SMOOTHING = 0.3
# Behind: the hold grows to this share of how much later than usual events arrive ...
BEHIND_SHARE = 0.5
# ... up to this many seconds.
MAX_BEHIND_HOLD = 0.25
# Seconds over which the lowest publish-to-arrival time ("usual") is kept.
FLOOR_WINDOW = 30.0


class WritePacer:
    """Decides when the next write pass runs, from when the last started and what passes cost."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.started_at = float("-inf")  # loop time the last pass started
        self.cost = 0.0  # running estimate of one pass's duration, in seconds
        self.lag = 0.0  # running estimate of the publish-to-arrival time of a pass's events
        self._lags = 0.0  # sum and count of those times since the last pass started
        self._count = 0
        # The lowest publish-to-arrival time of this window and of the one before it.
        self._floors = [float("inf"), float("inf")]
        self._window_ends = float("-inf")

    @property
    def behind(self) -> float:
        """Seconds by which events now arrive later than they usually do."""
        return max(0.0, self.lag - min(self._floors))

    @property
    def hold(self) -> float:
        """Seconds from one pass's start to the next while events keep coming."""
        busy = min(self.interval * MAX_HOLD_FACTOR, max(self.interval, self.cost / BUSY_SHARE))
        return max(busy, min(MAX_BEHIND_HOLD, self.behind * BEHIND_SHARE))

    def arrived(self, lag: float) -> None:
        """An event for the next pass reached the process ``lag`` seconds after its publish."""
        self._lags += lag
        self._count += 1
        now = time.monotonic()
        if now > self._window_ends:
            self._floors = [self._floors[1], lag]
            self._window_ends = now + FLOOR_WINDOW
        elif lag < self._floors[1]:
            self._floors[1] = lag

    def delay(self, now: float) -> float:
        """Seconds to wait before the next pass, for events queued at loop time ``now``."""
        return max(0.0, self.started_at + self.hold - now)

    def started(self, now: float) -> None:
        self.started_at = now
        if self._count:
            self.lag += SMOOTHING * (self._lags / self._count - self.lag)
            self._lags, self._count = 0.0, 0

    def finished(self, duration: float) -> None:
        self.cost += SMOOTHING * (duration - self.cost)
