"""Test helpers for projects that use realtime: ``capture_published()`` and in-process clients.

``docs/testing.md`` shows them in use.
"""

from realtime.testing.capture import CapturedEvents, Published, capture_published

__all__ = ["CapturedEvents", "Published", "capture_published"]
