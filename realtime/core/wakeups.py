"""Wake-ups: subscribers hear at once of events that a database trigger stored.

Events written by PostgreSQL's capture triggers (``realtime.live.triggers``: raw SQL, other
programs) have no channel-layer message: their only copy is in the database. The reconciler
(``maintenance.reconcile_streams``) would deliver them within two ``RECONCILE_INTERVAL``\\ s;
``run`` listens for the triggers' notifications (``storage.notify``) and catches up, now,
the local subscriptions of the streams named, a burst of notifications in one read of the
streams' heads. Without PostgreSQL it returns at once. A lost connection is retried with a
backoff; meanwhile the reconciler still delivers everything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from realtime.storage import notify, store

if TYPE_CHECKING:
    from realtime.core.hub import Hub

logger = logging.getLogger("realtime.hub")

# How long a burst of notifications is gathered before the streams are read.
GATHER = 0.005
RETRY_MAX = 30.0


async def wake(hub: Hub, names: set[str]) -> None:
    """Catch up the local subscriptions of ``names`` that are behind the database."""
    watched = [name for name in names if name in hub.streams]
    if not watched:
        return
    heads = await store.aheads(watched)
    for name in watched:
        state, info = hub.streams.get(name), heads.get(name)
        if state is not None and info is not None:
            state.sync_behind(info.epoch, info.last_seq)


async def run(hub: Hub) -> None:
    """Listen and wake until cancelled (the hub's task while it runs)."""
    if not notify.available():
        return
    pending: set[str] = set()
    ready = asyncio.Event()

    async def waker() -> None:
        while True:
            await ready.wait()
            await asyncio.sleep(GATHER)
            names = set(pending)
            pending.clear()
            ready.clear()
            try:
                await wake(hub, names)
            except Exception:
                logger.warning(
                    "Waking subscribers of %d streams failed.", len(names), exc_info=True
                )

    task = asyncio.get_running_loop().create_task(waker(), name="realtime-hub-waker")
    delay = 1.0
    try:
        while True:
            try:
                async for stream in notify.listen():
                    delay = 1.0
                    pending.add(stream)
                    ready.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("LISTEN %s: %s; retrying in %.0f s.", notify.CHANNEL, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
    finally:
        task.cancel()
