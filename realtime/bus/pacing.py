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
"""

from __future__ import annotations

# Largest share of its time a process should spend in write passes before holding longer.
BUSY_SHARE = 0.25
# The longest hold, in multiples of FLUSH_INTERVAL.
MAX_HOLD_FACTOR = 3.0
# Weight of the newest pass in the running cost estimate.
SMOOTHING = 0.3


class WritePacer:
    """Decides when the next write pass runs, from when the last started and what passes cost."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.started_at = float("-inf")  # loop time the last pass started
        self.cost = 0.0  # running estimate of one pass's duration, in seconds

    @property
    def hold(self) -> float:
        """Seconds from one pass's start to the next while events keep coming."""
        return min(self.interval * MAX_HOLD_FACTOR, max(self.interval, self.cost / BUSY_SHARE))

    def delay(self, now: float) -> float:
        """Seconds to wait before the next pass, for events queued at loop time ``now``."""
        return max(0.0, self.started_at + self.hold - now)

    def started(self, now: float) -> None:
        self.started_at = now

    def finished(self, duration: float) -> None:
        self.cost += SMOOTHING * (duration - self.cost)
