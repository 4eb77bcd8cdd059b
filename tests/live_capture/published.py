"""What the capture tests read back: the events stored per stream, and a clean slate."""

from __future__ import annotations

from typing import Any

from realtime.models import Event, Stream


def stored(stream: str) -> list[tuple[int, str, Any]]:
    """``(seq, event type, data)`` of ``stream``'s events, in seq order."""
    rows = Event.objects.filter(stream__name=stream).order_by("seq")
    return [(e.seq, e.event, e.data) for e in rows]


def events(stream: str) -> list[str]:
    return [event for _, event, _ in stored(stream)]


def forget() -> None:
    """Drop every event and stream: the next event of each stream has seq 1."""
    Event.objects.all().delete()
    Stream.objects.all().delete()
