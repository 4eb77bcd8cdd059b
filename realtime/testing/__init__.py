"""Test helpers for projects that use realtime: ``capture_published()`` and in-process
WebSocket and SSE clients. ``docs/testing.md`` shows them in use."""

from realtime.testing.capture import CapturedEvents, Published, capture_published
from realtime.testing.clients import SSEClient, WebSocketClient

__all__ = ["CapturedEvents", "Published", "SSEClient", "WebSocketClient", "capture_published"]
