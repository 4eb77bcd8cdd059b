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
    from realtime.presence import apresence, presence
    from realtime.publishing import apublish, apublish_many, areset, publish, publish_many, reset
    from realtime.revocation import arevoke, revoke

_HOMES = {
    "publish": "publishing",
    "apublish": "publishing",
    "publish_many": "publishing",
    "apublish_many": "publishing",
    "reset": "publishing",
    "areset": "publishing",
    "presence": "presence",
    "apresence": "presence",
    "revoke": "revocation",
    "arevoke": "revocation",
}


def __getattr__(name: str) -> Any:
    # Lazy, so ``import realtime`` works before the app registry is ready.
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"realtime.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
