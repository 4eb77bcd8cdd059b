"""Snapshots for streams whose history cannot be recovered.

When a subscription starts over (``recovered: false``: history trimmed, reset, or too old), a
stream with a registered snapshot function gets a ``snapshot`` frame — the current state, e.g.
a live model's serialised queryset — instead of whatever history is left, so the client
resyncs without another request. Live models register theirs (``realtime.live``)::

    realtime.core.snapshots.register("tasks", lambda stream, user: [...])

The function runs in a worker thread (the ORM is fine) and gets the subscriber's user, so it
can filter what that user may see. Events after the snapshot follow as usual; one committed
while the snapshot was read may repeat a change the snapshot already holds, so clients apply
events as upserts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from realtime.streams import compile_pattern

Snapshot = Callable[[str, Any], Any]

_registry: list[tuple[str, Any, Snapshot]] = []


def register(pattern: str, func: Snapshot) -> None:
    """Use ``func(stream, user)`` for streams matching ``pattern`` (``{user_id}`` allowed)."""
    _registry[:] = [entry for entry in _registry if entry[0] != pattern]
    _registry.append((pattern, compile_pattern(pattern), func))


def unregister(pattern: str) -> None:
    _registry[:] = [entry for entry in _registry if entry[0] != pattern]


def find(stream: str) -> Snapshot | None:
    for _, regex, func in _registry:
        if regex.fullmatch(stream):
            return func
    return None
