"""Group commit: concurrent calls of one sync database function share a transaction.

``apublish`` outside a caller's transaction (client ``publish`` frames, the REST API, async
views and workers, many coroutines at once) hands its work here instead of to the process's
one sync thread, where each call would wait for every call before it and commit on its own;
so do handshakes (``registry.admit``) and subscribes reading their position
(``store.positions``). Calls that arrive while a group is being committed wait for it and
form the next group, at most ``MAX_GROUP`` calls each: an idle process commits a lone call
at once, a busy one commits what queued during the last commit together. So the added
latency is at most one group's commit, and the cost of a commit is shared by everything in
it.

A group runs on the process's group lane (``realtime.storage.dbthreads.group_lane``), never behind
single calls, on a connection that stays open while calls keep coming; a committer runs one
group at a time. The
function receives the group's arguments in order and returns one result per call, each a
value or an exception; each caller gets its own, after the optional ``after`` coroutine has
seen the group's results (``apublish`` fans out there: one layer message per stream per
group).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from realtime.storage import dbthreads

logger = logging.getLogger("realtime.publish")

A = TypeVar("A")
R = TypeVar("R")

# Calls per group: bounds one transaction's size and how long its row locks are held.
MAX_GROUP = 100


class GroupCommitter(Generic[A, R]):
    """Batches awaits of ``commit`` (a sync function of a list of arguments), a group at a time."""

    def __init__(
        self,
        commit: Callable[[list[A]], Sequence[R | BaseException]],
        after: Callable[[Sequence[R | BaseException]], Awaitable[None]] | None = None,
    ) -> None:
        self._commit = commit
        self._after = after
        self._queue: list[tuple[A, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, argument: A) -> R:
        """``argument``'s result once its group has committed (or its own exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((argument, future))
        if self._running is None or self._running.done():
            self._running = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        # Returns with no await between finding the queue empty and the end: a call queued
        # meanwhile finds this task done and starts the next one, so nothing strands.
        while self._queue:
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            try:
                lane = dbthreads.group_lane()
                results = await lane.run(self._commit, [argument for argument, _ in group])
            except asyncio.CancelledError:
                for _, future in group + self._queue:
                    future.cancel()
                raise
            except Exception as exc:
                results = [exc] * len(group)
            if self._after is not None:
                try:
                    await self._after(results)
                except Exception:
                    logger.exception("After-commit work of a group failed.")
            for (_, future), result in zip(group, results, strict=True):
                if future.done():
                    continue  # its caller was cancelled; the work is done all the same
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


_committers: dict[tuple[asyncio.AbstractEventLoop, object], GroupCommitter[Any, Any]] = {}


def committer_for(
    commit: Callable[[list[A]], Sequence[R | BaseException]],
    after: Callable[[Sequence[R | BaseException]], Awaitable[None]] | None = None,
) -> GroupCommitter[A, R]:
    """The running loop's committer of ``commit`` (one per loop: futures belong to a loop)."""
    key = (asyncio.get_running_loop(), commit)
    found = _committers.get(key)
    if found is None:
        for old in [old for old in _committers if old[0].is_closed()]:
            del _committers[old]
        found = _committers[key] = GroupCommitter(commit, after)
    return found
