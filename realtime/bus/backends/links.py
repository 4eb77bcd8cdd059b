"""What the backplanes that push messages share (NATS, Redis Cluster): names under a prefix,
one connection ("link") per event loop, and msgpack bodies.

A group is the subject ``realtime.<prefix>.g.<group>``, a process's channel
``realtime.<prefix>.c.<channel>``. Each event loop (the hub's, the sync sender's thread, a
sync view's ``async_to_sync``) gets its own link, opened on first use and closed with its
loop, the way channels-redis keeps its pools (it wraps ``loop.close``:
channels_redis/utils.py ``_wrap_close``). Messages travel as msgpack, as channels-redis'
do: the event frames inside are JSON text, which msgpack carries without escaping.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Generic, TypeVar, cast

import msgpack  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured

from realtime.bus.backends.base import Backplane, BackplaneInterrupted
from realtime.bus.groups import subject_token
from realtime.bus.layer import close_with_loop

PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Put in a channel's queue after a reconnect: ``unpack`` raises when ``receive`` comes to it.
INTERRUPTED = b""

L = TypeVar("L")


class LinkedBackplane(Backplane, Generic[L]):
    """A backplane with one link ``L`` per event loop; subclasses provide ``_connect`` and
    ``_disconnect``, and name themselves in ``label`` (for errors)."""

    label = "backplane"

    def __init__(self, prefix: str) -> None:
        if not PREFIX.match(prefix):
            raise ImproperlyConfigured(
                f"The {self.label}'s prefix {prefix!r} must be 1-64 letters, digits, '_' or '-'."
            )
        self.prefix = prefix
        self.root = f"realtime.{prefix}"
        self._links: dict[asyncio.AbstractEventLoop, asyncio.Task[L]] = {}

    def group_subject(self, group: str) -> str:
        return f"{self.root}.g.{subject_token(group, 'Group')}"

    def channel_subject(self, channel: str) -> str:
        return f"{self.root}.c.{subject_token(channel, 'Channel')}"

    async def _connect(self) -> L:
        raise NotImplementedError("subclasses of LinkedBackplane must provide _connect()")

    async def _disconnect(self, link: L) -> None:
        raise NotImplementedError("subclasses of LinkedBackplane must provide _disconnect()")

    async def _link(self) -> L:
        """The running loop's link, connected on first use (again after a failed connect)."""
        loop = asyncio.get_running_loop()
        task = self._links.get(loop)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            if task is None:
                # list(): another thread's loop (the sender's) may add its link meanwhile.
                for old in [old for old in list(self._links) if old.is_closed()]:
                    self._links.pop(old, None)
                close_with_loop(loop, self._close_link)
            task = self._links[loop] = loop.create_task(self._connect())
        # Shielded: a caller cancelled while connecting must not cancel the others' connect.
        return await asyncio.shield(task)

    def _current(self) -> L | None:
        """The running loop's link if it is connected; never connects."""
        task = self._links.get(asyncio.get_running_loop())
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    async def _close_link(self, loop: asyncio.AbstractEventLoop) -> None:
        task = self._links.pop(loop, None)
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            if task is not None and not task.done():
                task.cancel()
            return
        await self._disconnect(task.result())

    async def aclose(self) -> None:
        await self._close_link(asyncio.get_running_loop())

    def unpack(self, data: bytes) -> dict[str, Any]:
        """A received body as its message; ``BackplaneInterrupted`` for ``INTERRUPTED``."""
        if data == INTERRUPTED:
            raise BackplaneInterrupted(
                f"The {self.label} reconnected: messages sent meanwhile may be lost."
            )
        return cast(dict[str, Any], msgpack.unpackb(data))
