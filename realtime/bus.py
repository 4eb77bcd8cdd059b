"""The channel layer's concurrency bound: how many layer calls one event loop has in flight.

channels-redis takes a connection from redis-py's pool for every call, and redis-py 8's
asyncio pool raises ``MaxConnectionsError`` ("Too many connections") once 100 are in use
instead of waiting. Two thousand clients leaving at once made as many ``group_discard``
calls, most of which failed, leaving this process in their groups (it kept receiving those
streams' events until the groups expired). Every layer call of the core takes a slot here
first, so bursts queue for a moment instead of failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# Layer calls in flight per event loop: under the pool's 100, leaving room for the hub's
# receive and for code of the project's own that uses the same layer.
LAYER_CONCURRENCY = 50

_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


@asynccontextmanager
async def slot() -> AsyncIterator[None]:
    """Hold one of the running loop's ``LAYER_CONCURRENCY`` slots for a layer call."""
    loop = asyncio.get_running_loop()
    found = _slots.get(loop)
    if found is None:
        for old in [old for old in _slots if old.is_closed()]:
            del _slots[old]
        found = _slots[loop] = asyncio.Semaphore(LAYER_CONCURRENCY)
    async with found:
        yield
