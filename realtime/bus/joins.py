"""Joining groups: a process's concurrent ``group_add`` calls share a round trip.

A storm of handshakes on streams of their own (per-user notification streams, say) joins as
many groups, and channels-redis spends two round trips on each (``ZADD``, ``EXPIRE``): about
a tenth of a handshake's CPU in the server (docs/performance.md). Joins that arrive while
one batch is on its way form the next, as group commit does for publishes: an idle process
joins at once, a busy one joins what queued meanwhile together, in one script per Redis
host (``redis.add_many``). Any other layer, or a channels-redis subclass that overrides
``group_add``, gets its own ``group_add`` per join. Each caller gets its own result or
exception.
"""

from __future__ import annotations

import asyncio

from realtime.bus import redis
from realtime.bus.layer import layer, loop_local, slot

# Joins per batch: bounds one script's size.
MAX_BATCH = 500


class Joiner:
    """Batches awaits of ``group_add`` on one event loop, a batch at a time."""

    def __init__(self) -> None:
        self._queue: list[tuple[str, str, asyncio.Future[None]]] = []
        self._running: asyncio.Task[None] | None = None

    async def add(self, group: str, channel: str) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append((group, channel, future))
        if self._running is None or self._running.done():
            self._running = loop.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        # No await between finding the queue empty and returning: a join queued meanwhile
        # finds this task done and starts the next one.
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                errors = await _add_all([(group, channel) for group, channel, _ in batch])
            except asyncio.CancelledError:
                for *_, future in batch + self._queue:
                    future.cancel()
                raise
            except Exception as exc:
                errors = [exc] * len(batch)
            for (*_, future), error in zip(batch, errors, strict=True):
                if future.done():
                    continue  # its caller was cancelled
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)


async def _add_all(pairs: list[tuple[str, str]]) -> list[BaseException | None]:
    found = layer()
    if redis.joinable(found):
        errors: list[BaseException | None] = []
        for group, channel in pairs:
            try:  # as group_add checks them: a bad name fails its own caller only
                found.require_valid_group_name(group)
                found.require_valid_channel_name(channel)
                errors.append(None)
            except TypeError as exc:
                errors.append(exc)
        valid = [pair for pair, error in zip(pairs, errors, strict=True) if error is None]
        if valid:
            async with slot():
                await redis.add_many(found, valid)
        return errors

    async def one(group: str, channel: str) -> None:
        async with slot():
            await found.group_add(group, channel)

    results = await asyncio.gather(*(one(g, c) for g, c in pairs), return_exceptions=True)
    return [result if isinstance(result, BaseException) else None for result in results]


_joiners: dict[asyncio.AbstractEventLoop, Joiner] = {}


async def group_add(group: str, channel: str) -> None:
    """Add ``channel`` to ``group``, batched with the loop's other joins in flight."""
    await loop_local(_joiners, Joiner).add(group, channel)
