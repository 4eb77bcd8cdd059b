"""The event store: every database read and write of streams and events.

Sync functions do the work (they are what ``publish`` and the management commands call);
the ``a``-prefixed twins run them through ``database_sync_to_async`` for the async core, so
no ORM call ever runs on the event loop. The core's own database work is self-contained
(its own transactions, never part of a caller's), so it runs with ``thread_sensitive=False``:
in a pool of threads rather than queued behind everything else on the process's one
sync thread — a connection storm's handshakes do not wait for each other's presence joins.
``apublish`` is the exception: it may join a caller's transaction, so it keeps that thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from realtime import retention
from realtime.models import Event, Stream, new_epoch


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's position as committed: history holds ``(trimmed_seq, last_seq]``."""

    name: str
    epoch: str
    last_seq: int
    trimmed_seq: int


def _info(stream: Stream) -> StreamInfo:
    return StreamInfo(stream.name, stream.epoch, stream.last_seq, stream.trimmed_seq)


def append(
    name: str, event: str, data: Any, *, ts: datetime | None = None, key: str | None = None
) -> Event:
    """Store one event with the stream's next seq; must run inside ``transaction.atomic``.

    The ``UPDATE`` of the stream row takes its row lock until the transaction ends, so
    concurrent publishers to one stream queue behind each other: seqs are allocated without
    duplicates or gaps (a rolled-back seq is reused), and commit in seq order.

    With an idempotency ``key`` already used on the stream (and still retained), nothing is
    stored: the earlier event is returned with ``duplicate = True``.
    """
    assert transaction.get_connection().in_atomic_block, "append() needs an atomic block"
    if key is not None:
        Stream.objects.get_or_create(name=name)
        locked = Stream.objects.select_for_update().get(name=name)
        earlier = Event.objects.filter(stream=locked, idempotency_key=key).first()
        if earlier is not None:
            earlier.stream = locked
            earlier.duplicate = True
            return earlier
    stream = _bump(name, 1)
    stored = Event.objects.create(
        stream=stream,
        seq=stream.last_seq,
        event=event,
        data=data,
        ts=ts or timezone.now(),
        idempotency_key=key,
    )
    _retain(stream)
    return stored


def append_many(name: str, events: list[tuple[str, Any]]) -> list[Event]:
    """Store several events with consecutive seqs, in order; like ``append``, in one go.

    One row lock, one ``UPDATE`` and one bulk ``INSERT`` for all of them: the cheap way to
    publish a burst (an import, a ticker catching up).
    """
    assert transaction.get_connection().in_atomic_block, "append_many() needs an atomic block"
    stream = _bump(name, len(events))
    first = stream.last_seq - len(events) + 1
    now = timezone.now()
    rows = [
        Event(stream=stream, seq=first + offset, event=event, data=data, ts=now)
        for offset, (event, data) in enumerate(events)
    ]
    Event.objects.bulk_create(rows)
    _retain(stream)
    return rows


def _bump(name: str, count: int) -> Stream:
    """Reserve the stream's next ``count`` seqs (taking its row lock); returns the stream."""
    bumped = Stream.objects.filter(name=name).update(last_seq=F("last_seq") + count)
    if not bumped:
        Stream.objects.get_or_create(name=name)
        Stream.objects.filter(name=name).update(last_seq=F("last_seq") + count)
    return Stream.objects.get(name=name)


def _retain(stream: Stream) -> None:
    """Enforce the stream's ``max_events`` in the publishing transaction."""
    rule = retention.rule_for(stream.name)
    if rule.max_events is not None and stream.last_seq - stream.trimmed_seq > rule.max_events:
        _trim(stream, stream.last_seq - rule.max_events)


def _trim(stream: Stream, upto: int) -> int:
    """Delete the stream's events up to seq ``upto``; returns how many went."""
    deleted, _ = Event.objects.filter(stream=stream, seq__lte=upto).delete()
    if upto > stream.trimmed_seq:
        Stream.objects.filter(pk=stream.pk).update(trimmed_seq=upto)
        stream.trimmed_seq = upto
    return deleted


def stream_info(name: str, *, create: bool = False) -> StreamInfo | None:
    """The stream's committed position; with ``create``, a new stream is made if needed."""
    if create:
        stream, _ = Stream.objects.get_or_create(name=name)
        return _info(stream)
    found = Stream.objects.filter(name=name).first()
    return _info(found) if found else None


def read(name: str, after: int, limit: int) -> tuple[list[Event], StreamInfo | None]:
    """Up to ``limit`` events with seq > ``after``, then the stream's position.

    The position is read *after* the events, so a reset (new epoch) that raced the read
    always shows up as a changed epoch and the rows can be discarded.
    """
    rows = list(Event.objects.filter(stream__name=name, seq__gt=after).order_by("seq")[:limit])
    return rows, stream_info(name)


def heads(names: Iterable[str]) -> dict[str, StreamInfo]:
    """The positions of many streams in few queries (for the reconciler)."""
    names = list(names)
    found: dict[str, StreamInfo] = {}
    for start in range(0, len(names), 500):
        for stream in Stream.objects.filter(name__in=names[start : start + 500]):
            found[stream.name] = _info(stream)
    return found


def reset(name: str) -> StreamInfo:
    """Delete a stream's history and give it a new epoch; seqs start again at 1."""
    with transaction.atomic():
        stream, _ = Stream.objects.select_for_update().get_or_create(name=name)
        Event.objects.filter(stream=stream).delete()
        stream.epoch = new_epoch()
        stream.last_seq = stream.trimmed_seq = 0
        stream.save(update_fields=["epoch", "last_seq", "trimmed_seq"])
        return _info(stream)


def prune(now: datetime | None = None) -> int:
    """Enforce every retention rule on every stream; returns the events deleted.

    ``max_age`` deletes each stream's events older than the cutoff (and everything before
    them, keeping history a gapless suffix); ``max_events`` catches streams whose rule was
    tightened since their last publish.
    """
    now = now or timezone.now()
    deleted = 0
    ages = {rule.max_age for rule in retention.rules() if rule.max_age is not None}
    for max_age in ages:
        cutoff = now - max_age
        old = (
            Event.objects.filter(ts__lt=cutoff)
            .values("stream_id", "stream__name")
            .annotate(upto=Max("seq"))
        )
        for row in old:
            if retention.rule_for(row["stream__name"]).max_age != max_age:
                continue
            deleted += _trim_locked(row["stream_id"], row["upto"])
    capped = [rule for rule in retention.rules() if rule.max_events is not None]
    if capped:
        for stream in Stream.objects.filter(last_seq__gt=F("trimmed_seq")).iterator():
            rule = retention.rule_for(stream.name)
            if (
                rule.max_events is not None
                and stream.last_seq - stream.trimmed_seq > rule.max_events
            ):
                deleted += _trim_locked(stream.pk, stream.last_seq - rule.max_events)
    return deleted


def _trim_locked(stream_id: int, upto: int) -> int:
    with transaction.atomic():
        stream = Stream.objects.select_for_update().get(pk=stream_id)
        return _trim(stream, min(upto, stream.last_seq))


astream_info = database_sync_to_async(stream_info, thread_sensitive=False)
aread = database_sync_to_async(read, thread_sensitive=False)
aheads = database_sync_to_async(heads, thread_sensitive=False)
aprune = database_sync_to_async(prune, thread_sensitive=False)
