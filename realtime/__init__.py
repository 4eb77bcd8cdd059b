"""Durable live streams for Django: ``publish`` here, deliver over WebSocket and SSE."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "apresence",
    "apublish",
    "apublish_many",
    "areset",
    "arevoke",
    "presence",
    "publish",
    "publish_many",
    "reset",
    "revoke",
]

if TYPE_CHECKING:
    from realtime.core.publishing import (
        apublish,
        apublish_many,
        areset,
        publish,
        publish_many,
        reset,
    )
    from realtime.core.revocation import arevoke, revoke
    from realtime.storage.presence import apresence, presence

_HOMES = {
    "publish": "core.publishing",
    "apublish": "core.publishing",
    "publish_many": "core.publishing",
    "apublish_many": "core.publishing",
    "reset": "core.publishing",
    "areset": "core.publishing",
    "presence": "storage.presence",
    "apresence": "storage.presence",
    "revoke": "core.revocation",
    "arevoke": "core.revocation",
}


def __getattr__(name: str) -> Any:
    # Lazy, so ``import realtime`` works before the app registry is ready.
    # Once found, kept as a module attribute: ``realtime.publish(...)`` in a loop then pays
    # an attribute lookup, not an import lookup per call.
    if name in _HOMES:
        from importlib import import_module

        found = globals()[name] = getattr(import_module(f"realtime.{_HOMES[name]}"), name)
        return found
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
