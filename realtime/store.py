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

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import Exists, F, Max, OuterRef, Q
from django.utils import timezone

from realtime import epochs, retention
from realtime.models import Event, Stream


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
        _create(name)
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
        _create(name)
        Stream.objects.filter(name=name).update(last_seq=F("last_seq") + count)
    return Stream.objects.get(name=name)


def _create(name: str) -> None:
    """Make sure ``name`` has a row; a new one gets the epoch its subscribers were told."""
    Stream.objects.get_or_create(name=name, defaults={"epoch": epochs.creation_epoch(name)})


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


def stream_info(name: str) -> StreamInfo | None:
    """The stream's committed position, or None if it has no row (see ``position``)."""
    found = Stream.objects.filter(name=name).first()
    return _info(found) if found else None


def missing(name: str) -> StreamInfo:
    """The position of a stream without a row, as a subscriber is told it: empty, under the
    epoch a first publish now would give it. Nothing is written."""
    return StreamInfo(name, epochs.creation_epoch(name), 0, 0)


def position(name: str) -> StreamInfo:
    """The stream's committed position, rowless or not (what ``subscribed`` reports)."""
    return stream_info(name) or missing(name)


def resumes(info: StreamInfo, epoch: str | None, since: int) -> bool:
    """Whether a client at ``since`` of ``epoch`` (None: the current one) gets exactly what
    it missed from ``info``'s history: same history (``epochs.carries_over``), and ``since``
    neither ahead of the head nor older than what retention kept."""
    return (
        epoch is None or epochs.carries_over(info.name, epoch, since, info.epoch, info.trimmed_seq)
    ) and info.trimmed_seq <= since <= info.last_seq


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
        stream.epoch = epochs.new_epoch()
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


def prune_streams(subscribed: Collection[str], now: datetime | None = None) -> int:
    """Delete the rows of streams that hold no events and are not in ``subscribed``;
    returns how many went.

    A stream that never stored an event goes at once; one whose history retention emptied
    waits until it is ``EMPTY_STREAM_MIN_AGE`` old, which is what lets seq-0 positions carry
    over between creation epochs exactly (``realtime.epochs``). Each row is re-checked under
    its lock, so a publish that races the deletion either comes first (and the row stays)
    or creates the row again.
    """
    cutoff = (now or timezone.now()) - epochs.EMPTY_STREAM_MIN_AGE
    empty = Stream.objects.filter(last_seq=F("trimmed_seq")).filter(
        Q(last_seq=0) | Q(created_at__lt=cutoff)
    )
    candidates = [
        pk for pk, name in empty.values_list("pk", "name").iterator() if name not in subscribed
    ]
    deleted = 0
    for start in range(0, len(candidates), 500):
        with transaction.atomic():
            locked = list(
                empty.select_for_update()
                .filter(pk__in=candidates[start : start + 500])
                .exclude(Exists(Event.objects.filter(stream=OuterRef("pk"))))
                .values_list("pk", flat=True)
            )
            deleted += Stream.objects.filter(pk__in=locked).delete()[1].get(Stream._meta.label, 0)
    return deleted


astream_info = database_sync_to_async(stream_info, thread_sensitive=False)
aposition = database_sync_to_async(position, thread_sensitive=False)
aread = database_sync_to_async(read, thread_sensitive=False)
aheads = database_sync_to_async(heads, thread_sensitive=False)
aprune = database_sync_to_async(prune, thread_sensitive=False)
