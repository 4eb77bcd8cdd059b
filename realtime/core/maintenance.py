"""The hub's periodic jobs, and the schedule they run on (``realtime.core.jobs``).

* ``reconcile`` compares the hub's streams' positions with the database every
  ``RECONCILE_INTERVAL`` seconds, so even the last event of a burst whose layer message was
  lost arrives within two intervals, and delivery goes on from the database while the
  channel layer is down; it also re-joins groups whose join failed;
* ``presence`` ends the presence of connections gone silent, and ``lease`` renews the
  process's lease and sweeps dead processes' (``realtime.core.liveness``), every
  ``PRESENCE_TIMEOUT / 3`` seconds;
* ``stats`` reports figures (``realtime.core.reporting``), ``reauth`` re-checks credentials,
  ``refresh`` re-adds group memberships before the layer's expiry drops them, ``prune``
  applies retention.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from realtime.conf import realtime_settings
from realtime.core import revocation
from realtime.core.jobs import Job
from realtime.storage import cleanup, registry, store

if TYPE_CHECKING:
    from realtime.core.hub import Hub

logger = logging.getLogger("realtime.hub")

# Re-add group memberships this often, before the channel layer's group_expiry drops them.
GROUP_REFRESH = 600.0


def jobs(hub: Hub) -> list[Job]:
    """The hub's jobs, in the order they run within a tick."""
    conf = realtime_settings

    async def reconcile() -> None:
        await reconcile_streams(hub)

    async def expire_presence() -> None:
        await hub.presence.expire(time.monotonic())

    async def reauth() -> None:
        await reauthenticate(hub)

    async def prune() -> None:
        await prune_history(hub)

    return [
        Job("reconcile", lambda: conf.RECONCILE_INTERVAL, reconcile, first_now=True),
        Job("presence", registry.lease_interval, expire_presence),
        Job("lease", registry.lease_interval, hub.liveness.renew, jitter=True, first_now=True),
        Job("stats", lambda: conf.STATS_INTERVAL, hub.reporter.report),
        Job("reauth", lambda: conf.REAUTH_INTERVAL, reauth, jitter=True),
        Job("refresh", lambda: GROUP_REFRESH, hub.rejoin_all),
        Job("prune", lambda: conf.PRUNE_INTERVAL, prune, jitter=True),
    ]


async def reconcile_streams(hub: Hub) -> None:
    """Catch up every subscription that is behind the database by more than one round."""
    for stream, state in list(hub.streams.items()):
        if not state.joined:
            await hub.join_group(stream, state)
    heads = await store.aheads(list(hub.streams))
    for stream, state in list(hub.streams.items()):
        info = heads.get(stream)
        if info is None:
            continue
        state.sync_behind(info.epoch, state.checked_head)
        state.checked_head = info.last_seq


async def reauthenticate(hub: Hub) -> None:
    """Close local connections whose session, user or token is no longer valid."""
    checked = [
        {
            "id": conn.id,
            "user": conn.user_id,
            "session": conn.auth.get("session"),
            "token": conn.auth.get("token"),
        }
        for conn in list(hub.connections.values())
        if conn.user_id is not None
    ]
    if not checked:
        return
    for conn_id in await revocation.arecheck(checked):
        conn = hub.connections.get(conn_id)
        if conn is not None:
            logger.info("Connection %s: credentials no longer valid; closing.", conn_id)
            hub.spawn(conn.revoke("Credentials no longer valid."))


async def prune_history(hub: Hub) -> None:
    """Apply retention to the hub's streams (and the tables' other old rows)."""
    pruned = await cleanup.aprune(list(hub.streams))
    if any(pruned.values()):
        logger.info("Retention deleted %s.", ", ".join(f"{n} {k}" for k, n in pruned.items()))
