"""What the hub needs from a backplane: the boundary every backend implements.

A backplane carries messages between server processes: each process's hub owns one
*channel* (its inbox), joins a *group* per stream it has subscribers for, and receives on its
channel what was sent to those groups, to the control group, or to the channel itself (a
stats reply). It only has to be fast: every stored event has a gapless seq and lives in the
database, so a message a backplane loses is repaired from history by the hub's reconciler.

Subclasses implement every method that raises ``NotImplementedError``. Do not block the
event loop in any of them, and keep the promise ``group_send_many`` makes: one group's
messages arrive in the order given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Pair = tuple[str, Any]  # (group, message)


class BackplaneInterrupted(ConnectionError):
    """Raised once by ``receive`` after the backplane reconnected: messages sent meanwhile
    may be lost, so the hub re-joins its groups and re-sends presence (the reconciler
    repairs events)."""


class Backplane:
    """The base class of backplanes (``REALTIME["BACKPLANE"]``); see the module docstring."""

    @property
    def loop_bound(self) -> bool:
        """Whether the backplane's queues belong to one event loop (Channels' in-memory
        layer): sync callers then send through ``async_to_sync``, not from another loop."""
        return False

    async def new_channel(self, prefix: str) -> str:
        """A new channel name starting with ``prefix``, ready to receive."""
        raise NotImplementedError("subclasses of Backplane must provide a new_channel() method")

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message for ``channel`` (waits for one); raises on an outage."""
        raise NotImplementedError("subclasses of Backplane must provide a receive() method")

    async def send(self, channel: str, message: Any) -> None:
        """Send ``message`` to one channel (a reply)."""
        raise NotImplementedError("subclasses of Backplane must provide a send() method")

    async def group_add(self, group: str, channel: str) -> None:
        """Make ``channel`` receive what is sent to ``group`` (again: no effect)."""
        raise NotImplementedError("subclasses of Backplane must provide a group_add() method")

    async def group_discard(self, group: str, channel: str) -> None:
        """Stop ``channel`` receiving what is sent to ``group``."""
        raise NotImplementedError("subclasses of Backplane must provide a group_discard() method")

    async def group_send_many(self, items: Sequence[Pair]) -> None:
        """Send each ``(group, message)``; one group's messages arrive in the order given."""
        raise NotImplementedError("subclasses of Backplane must provide a group_send_many() method")

    async def group_send(self, group: str, message: Any) -> None:
        """Send ``message`` to every member of ``group``."""
        await self.group_send_many([(group, message)])

    async def close_channel(self, channel: str) -> None:
        """``channel`` is done: leave its groups and stop receiving (a closed hub, a
        gather's reply channel). The default does nothing (channel layers expire both)."""

    async def aclose(self) -> None:
        """Close the running event loop's connections (they reopen on next use)."""
