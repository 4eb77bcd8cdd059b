"""Who may do what on which stream.

One policy object answers for WebSocket, SSE and (later) the REST API alike. The built-in
convention: streams named ``public:...`` may be read by anyone; nobody may publish from a
client. Replace it with ``REALTIME["POLICY"] = "myproject.policies.MyPolicy"``.
"""

from __future__ import annotations

from typing import Any, Literal

from realtime.conf import realtime_settings
from realtime.streams import PUBLIC_PREFIX

Action = Literal["subscribe", "publish", "presence", "history"]
ACTIONS: tuple[Action, ...] = ("subscribe", "publish", "presence", "history")


class BasePolicy:
    """Subclass and override ``has_permission``.

    It is awaited on the event loop for every subscribe and client publish, so keep it
    cheap, and wrap any ORM access in ``database_sync_to_async``. Do not raise to refuse:
    return ``False``, and the client gets a ``forbidden`` error that does not say whether the
    stream exists.
    """

    async def has_permission(self, action: Action, user: Any, stream: str) -> bool:
        raise NotImplementedError("Policy.has_permission() must be overridden.")


class DefaultPolicy(BasePolicy):
    """Read ``public:`` streams; no client publishing."""

    async def has_permission(self, action: Action, user: Any, stream: str) -> bool:
        if action == "publish":
            return False
        return stream.startswith(PUBLIC_PREFIX)


class PublicPolicy(BasePolicy):
    """``public:`` streams are open to everything, client publishing included (demos, tests)."""

    async def has_permission(self, action: Action, user: Any, stream: str) -> bool:
        return stream.startswith(PUBLIC_PREFIX)


def get_policy() -> BasePolicy:
    """An instance of the configured ``POLICY`` class."""
    policy: BasePolicy = realtime_settings.POLICY()
    return policy
