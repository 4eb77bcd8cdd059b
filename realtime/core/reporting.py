"""What a process tells about itself: figures, rates, alerts, and its connections' churn.

Every ``STATS_INTERVAL`` the hub checks the alert thresholds and publishes its figures to
the staff-only stream the admin dashboard watches, and the connections opened and closed
since to the one the connections page watches (ephemeral events: not stored).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, cast

from asgiref.sync import sync_to_async

from realtime.core import alerts
from realtime.core.stats import stats

if TYPE_CHECKING:
    from realtime.core.hub import Hub

logger = logging.getLogger("realtime.hub")

# Connection ids kept for the admin's next connections.changed while publishing it fails
# (the channel layer is down); beyond it the lists are dropped and the page told to reload.
MAX_CHANGES = 1000
# Staff-only streams the admin pages watch (``realtime:*`` is staff-only in RulesPolicy).
ADMIN_STATS_STREAM = "realtime:admin:stats"
ADMIN_CONNECTIONS_STREAM = "realtime:admin:connections"
RATES = ("published", "received", "deliveries", "replayed", "slow_consumer_drops")


class Reporter:
    """One hub's figures and connection churn (see the module docstring)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.opened: list[str] = []  # connections opened and closed since the last report
        self.closed: list[str] = []
        self.changes_lost = False  # more than MAX_CHANGES of them: lists dropped
        self._last: tuple[float, dict[str, Any]] | None = None

    def connection_opened(self, conn_id: str) -> None:
        self._note(self.opened, conn_id)

    def connection_closed(self, conn_id: str) -> None:
        self._note(self.closed, conn_id)

    def _note(self, ids: list[str], conn_id: str) -> None:
        if len(ids) < MAX_CHANGES:
            ids.append(conn_id)
        else:
            self.changes_lost = True

    def describe(self) -> dict[str, Any]:
        """This process: identity, counters, rates since the last report, active alerts."""
        return {
            "server": self.hub.id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "stats": stats.snapshot(),
            "rates": self._rates(),
            "alerts": alerts.active(),
        }

    def _rates(self) -> dict[str, float]:
        if self._last is None:
            return {}
        then, before = self._last
        elapsed = max(time.monotonic() - then, 1e-6)
        now = stats.snapshot()
        return {
            f"{name}_per_second": (cast(int, now[name]) - cast(int, before[name])) / elapsed
            for name in RATES
        }

    async def report(self) -> None:
        """Check alert thresholds; tell the admin pages (staff streams)."""
        from realtime.core.publishing import apublish

        described = self.describe()
        self._last = (time.monotonic(), stats.snapshot())
        # Alert receivers may use the ORM or block: not on the event loop.
        await sync_to_async(alerts.evaluate, thread_sensitive=False)(self.hub.id, described)
        described["alerts"] = alerts.active()
        try:
            await apublish(ADMIN_STATS_STREAM, "server.stats", described, ephemeral=True)
            if self.opened or self.closed or self.changes_lost:
                change: dict[str, Any] = {
                    "server": self.hub.id,
                    "opened": self.opened,
                    "closed": self.closed,
                }
                if self.changes_lost:
                    change.update(opened=[], closed=[], reload=True)
                self.opened, self.closed, self.changes_lost = [], [], False
                await apublish(
                    ADMIN_CONNECTIONS_STREAM, "connections.changed", change, ephemeral=True
                )
        except Exception:
            logger.debug("Publishing stats failed.", exc_info=True)
