"""Group commit: concurrent calls of one sync database function share a transaction.

``apublish`` outside a caller's transaction (client ``publish`` frames, async views and
workers, many coroutines at once) hands its work here instead of to the process's one sync
thread, where each call would wait for every call before it and commit on its own. Calls
that arrive while a group is being committed wait for it and form the next group, at most
``MAX_GROUP`` calls each: an idle process commits a lone call at once, a busy one commits
what queued during the last commit together. So the added latency is at most one group's
commit, and the cost of a commit is shared by everything in it.

A group runs on a thread of its own (one per event loop), whose database connection stays
open while calls keep coming (closed after ``IDLE_CLOSE`` seconds without any, or at once
when an error left it unusable). The function receives the group's
arguments in order and returns one result per call, each a value or an exception; each
caller gets its own, after the optional ``after`` coroutine has seen the group's results
(``apublish`` fans out there: one layer message per stream per group).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from django.db import connections

from realtime.store import close_broken_connections

logger = logging.getLogger("realtime.publish")

A = TypeVar("A")
R = TypeVar("R")

# Calls per group: bounds one transaction's size and how long its row locks are held.
MAX_GROUP = 100
# Seconds without calls after which the thread closes its database connections.
IDLE_CLOSE = 1.0


class GroupCommitter(Generic[A, R]):
    """Batches awaits of ``commit`` (a sync function of a list of arguments) on one thread."""

    def __init__(
        self,
        commit: Callable[[list[A]], list[R | BaseException]],
        after: Callable[[list[R | BaseException]], Awaitable[None]] | None = None,
    ) -> None:
        self._commit = commit
        self._after = after
        self._queue: list[tuple[A, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None
        self._more = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="realtime-commit")

    async def submit(self, argument: A) -> R:
        """``argument``'s result once its group has committed (or its own exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((argument, future))
        self._more.set()
        if self._running is None or self._running.done():
            self._running = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                # Idle: keep the connection for a while, then give it back.
                self._more.clear()
                try:
                    async with asyncio.timeout(IDLE_CLOSE):
                        await self._more.wait()
                except TimeoutError:
                    await loop.run_in_executor(self._executor, connections.close_all)
                    if not self._queue:
                        return  # no await between this check and the end: nothing strands
                continue
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run, [argument for argument, _ in group]
                )
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

    def _run(self, arguments: list[A]) -> list[R | BaseException]:
        try:
            return self._commit(arguments)
        finally:
            close_broken_connections()

    def close(self) -> None:
        """Give the thread's connections back and let the thread end."""
        self._executor.submit(connections.close_all)
        self._executor.shutdown(wait=False)


_committers: dict[tuple[asyncio.AbstractEventLoop, object], GroupCommitter[Any, Any]] = {}


def committer_for(
    commit: Callable[[list[A]], list[R | BaseException]],
    after: Callable[[list[R | BaseException]], Awaitable[None]] | None = None,
) -> GroupCommitter[A, R]:
    """The running loop's committer of ``commit`` (one per loop: futures belong to a loop)."""
    key = (asyncio.get_running_loop(), commit)
    found = _committers.get(key)
    if found is None:
        for old in [old for old in _committers if old[0].is_closed()]:
            _committers.pop(old).close()
        found = _committers[key] = GroupCommitter(commit, after)
    return found
