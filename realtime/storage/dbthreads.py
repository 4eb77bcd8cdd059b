"""Threads for the async core's database work that keep their connections between calls.

Channels' ``database_sync_to_async`` closes the thread's connection before and after every
call when ``CONN_MAX_AGE = 0`` (Django's default), so each call of the core's bookkeeping
opened a new connection: on SQLite that is a file open, a schema read and the WAL index each
time, about 2 ms, and it was most of what a WebSocket handshake cost (``docs/performance.md``,
"Clients on streams of their own"). Here each call runs on a *lane*: a thread of its own
whose connections stay open while calls keep coming. The thread itself closes them after
``IDLE_CLOSE`` seconds without a call (so a test database can be dropped, and an idle
process holds none), in line with its calls, so a close never overlaps one; a connection an
error left unusable is closed at once.

The process has ``lanes()`` of them, shared by every event loop: one on SQLite, whose writers
would only wait for each other's locks, ``PARALLEL`` elsewhere; a call takes the lane with
the fewest calls queued. The group committers' groups have a lane of their own
(``group_lane``). So the core holds at most one more connection per process than there are
lanes, plus the sync thread's: with a PostgreSQL pool, keep ``max_size`` above that. Calls are
self-contained (their own transactions, never a caller's): ``apublish``, which may join one,
runs on the process's sync thread instead (``store.on_sync_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections

P = ParamSpec("P")
R = TypeVar("R")

# Seconds without calls after which a lane closes its database connections.
IDLE_CLOSE = 1.0
# Lanes per process where the database takes concurrent writers (not SQLite).
PARALLEL = 4

Call = Callable[[], None]


def close_broken_connections() -> None:
    """Close this thread's database connections that an error left unusable (outside a
    transaction), so the next call opens a fresh one; working ones stay open."""
    for connection in connections.all(initialized_only=True):
        if connection.errors_occurred and not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


class Lane:
    """One daemon thread whose calls run in order and share its open database connections."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._busy = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def load(self) -> int:
        """Calls queued or running."""
        return self._calls.qsize() + self._busy

    async def run(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``func(*args, **kwargs)`` on this lane's thread, in the caller's context."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        context = contextvars.copy_context()

        def call() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = context.run(func, *args, **kwargs)
            except BaseException as exc:
                error = exc
            finally:
                close_broken_connections()
            with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)

        self._calls.put(call)
        return await future

    def _work(self) -> None:
        while True:
            try:
                call = self._calls.get(timeout=IDLE_CLOSE)
            except queue.Empty:
                connections.close_all()  # idle: give them back, then wait as long as it takes
                call = self._calls.get()
            if call is None:
                connections.close_all()
                return
            self._busy = True
            try:
                call()
            finally:
                self._busy = False

    def close(self) -> None:
        """Give the thread's connections back and let the thread end (after queued calls)."""
        self._calls.put(None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return  # cancelled; the work is done all the same
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


_lanes: list[Lane] = []
_groups: Lane | None = None
_lock = threading.Lock()


def lanes() -> list[Lane]:
    """The process's lanes (made on first use)."""
    if not _lanes:
        with _lock:
            if not _lanes:
                parallel = connections[DEFAULT_DB_ALIAS].vendor != "sqlite"
                count = PARALLEL if parallel else 1
                _lanes.extend(Lane(f"realtime-db-{n}") for n in range(count))
    return _lanes


def group_lane() -> Lane:
    """The lane of the group committers' groups (``realtime.groupcommit``), the process's
    own: a group carries many callers and must not wait behind single calls. In a storm every
    handshake's session lookup is queued at once, and a lease renewal may write a thousand
    connection rows; admitting the handshakes and positioning their subscriptions cannot
    wait for all of that (daphne drops the handshakes that wait longest)."""
    global _groups
    if _groups is None:
        with _lock:
            if _groups is None:
                _groups = Lane("realtime-db-groups")
    return _groups


def least_busy() -> Lane:
    """The lane with the fewest calls queued or running."""
    return min(lanes(), key=lambda lane: lane.load)


def in_lane(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """An async twin of ``func`` that runs it on the least busy lane."""

    @functools.wraps(func)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await least_busy().run(func, *args, **kwargs)

    return run


def _forget_after_fork() -> None:
    # The lanes' threads do not survive a fork (nor a lock one of them held): the child
    # makes its own on first use.
    global _groups, _lock
    _lanes.clear()
    _groups, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
