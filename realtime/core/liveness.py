"""A process's side of liveness: its lease, its connections' records, the leave grace.

Each server process holds a lease (``realtime.registry``) that it renews every
``PRESENCE_TIMEOUT / 3`` seconds, writing with it the subscription lists of connections
whose subscriptions changed since; expired leases — processes that died — are swept with
what they left. A connection that closes is released after ``PRESENCE_GRACE`` seconds, so a
tab that reconnects within it joins again before its old connection leaves: the other
members see updates, not a leave and a join.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from realtime.conf import realtime_settings
from realtime.core.stats import stats
from realtime.storage import presence, registry

if TYPE_CHECKING:
    from realtime.core.hub import Hub
    from realtime.core.state import HubConnection

logger = logging.getLogger("realtime.hub")


class Liveness:
    """The lease and connection records of one hub (see the module docstring)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._dirty: set[str] = set()  # connections whose subscriptions changed
        self._timers: set[asyncio.TimerHandle] = set()

    def changed(self, conn_id: str) -> None:
        """``conn_id``'s subscriptions changed: recorded with the next renewal."""
        self._dirty.add(conn_id)

    def detached(self, conn: HubConnection) -> None:
        """Release a closed connection after the grace period."""
        self._dirty.discard(conn.id)
        args = (conn.id, conn.user_id)
        grace = realtime_settings.PRESENCE_GRACE
        if grace <= 0:
            self.hub.spawn(self._release(*args))
            return

        def release() -> None:
            self._timers.discard(timer)
            self.hub.spawn(self._release(*args))

        timer = asyncio.get_running_loop().call_later(grace, release)
        self._timers.add(timer)

    async def _release(self, conn_id: str, user_id: Any) -> None:
        if self.hub.presence.forget(conn_id):
            await self.hub.fan_out_all(await presence.aleave(conn_id))
        await registry.aremove_connection(conn_id, user_id)

    async def renew(self) -> None:
        """Renew the lease with the changed subscription lists; sweep dead processes."""
        connections = self.hub.connections
        changed = {
            cid: sorted(connections[cid].subscriptions) for cid in self._dirty if cid in connections
        }
        self._dirty.clear()
        try:
            renewed = await registry.arenew_server(self.hub.id, changed)
        except BaseException:
            self._dirty.update(changed)  # written with the next renewal instead
            raise
        if not renewed:
            self._dirty.update(changed)
            await self._recover()
        await self.sweep()

    async def sweep(self) -> None:
        """Remove what processes whose leases expired left behind."""
        swept = await registry.asweep()
        stats.sweeper_lag = swept.lag  # the latest sweep's, so the alert clears once caught up
        await self.hub.fan_out_all(swept.messages)

    async def _recover(self) -> None:
        """Our lease was swept while this process stalled: record everything again."""
        logger.warning("This process's lease had expired and was swept; re-registering.")
        hub = self.hub
        assert hub.channel is not None
        await registry.aregister_server(hub.id, hub.channel)
        for conn in list(hub.connections.values()):
            await registry.aadd_connection(
                conn.id, hub.id, conn.user_id, conn.transport, conn.remote_addr, conn.user_agent
            )  # re-recorded as it was: no caps
            await hub.presence.rejoin(conn)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()  # the lease's removal removes what they would have
        self._timers.clear()
