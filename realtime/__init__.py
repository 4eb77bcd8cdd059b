"""Durable live streams for Django: ``publish`` here, deliver over WebSocket and SSE."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["apublish", "areset", "publish", "reset"]

if TYPE_CHECKING:
    from realtime.publishing import apublish, areset, publish, reset


def __getattr__(name: str) -> Any:
    # Lazy, so ``import realtime`` works before the app registry is ready.
    if name in __all__:
        from realtime import publishing

        return getattr(publishing, name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
