"""Test helpers for projects that use realtime: ``capture_published()``, in-process WebSocket
and SSE clients, a live server and pytest fixtures (``realtime.testing.pytest``).
``docs/testing.md`` shows them in use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime.testing.capture import CapturedEvents, Published, capture_published
    from realtime.testing.servers import LiveServer
    from realtime.testing.sse import SSEClient
    from realtime.testing.websocket import WebSocketClient

__all__ = [
    "CapturedEvents",
    "LiveServer",
    "Published",
    "SSEClient",
    "WebSocketClient",
    "capture_published",
]

_HOMES = {
    "CapturedEvents": "capture",
    "Published": "capture",
    "capture_published": "capture",
    "SSEClient": "sse",
    "WebSocketClient": "websocket",
    "LiveServer": "servers",
}


def __getattr__(name: str) -> Any:
    # Lazy, so the pytest plugin (``-p realtime.testing.pytest``) loads before Django is set up.
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"realtime.testing.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'realtime.testing' has no attribute {name!r}")
