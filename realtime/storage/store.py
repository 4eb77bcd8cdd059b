"""The event store: every database read and write of streams and events.

Sync functions do the work (they are what ``publish`` and the management commands call);
the ``a``-prefixed twins run them on ``dbthreads`` lanes for the async core, so no ORM call
ever runs on the event loop. The core's own database work is self-contained (its own
transactions, never part of a caller's), so it runs there rather than queued behind
everything else on the process's one sync thread, on connections that stay open between
calls. ``apublish`` is the exception: it may join a caller's transaction, so it keeps that
thread (``on_sync_thread``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, router, transaction
from django.db.models import Exists, F, Max, OuterRef, Q
from django.utils import timezone

from realtime.models import Event, Stream
from realtime.storage import epochs, retention, statements
from realtime.storage.dbthreads import close_broken_connections, in_lane
from realtime.storage.groupcommit import committer_for

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's position as committed: history holds ``(trimmed_seq, last_seq]``."""

    name: str
    epoch: str
    last_seq: int
    trimmed_seq: int


def database() -> str:
    """The alias of the database holding the app's streams and events (the router's say)."""
    return router.db_for_write(Event)


def _info(stream: Stream) -> StreamInfo:
    return StreamInfo(stream.name, stream.epoch, stream.last_seq, stream.trimmed_seq)


def append(
    name: str,
    event: str,
    data: Any,
    *,
    ts: datetime | None = None,
    key: str | None = None,
    data_json: str | None = None,
) -> Event:
    """Store one event with the stream's next seq, in the open transaction or as one statement.

    Bumping ``last_seq`` takes the stream row's lock until the transaction ends, so concurrent
    publishers to one stream queue behind each other: seqs are allocated without duplicates
    or gaps (a rolled-back seq is reused), and commit in seq order. On PostgreSQL the bump, the
    insert and the ``max_events`` trim are one statement (a CTE), which outside a transaction
    commits by itself: one round trip per event. SQLite takes two (``UPDATE … RETURNING``,
    ``INSERT``) and the trim's ``DELETE``, so there the caller must hold a transaction, as it
    must with an idempotency ``key``. ``data_json`` is ``data`` already
    encoded, as ``protocol.normalize`` does.

    With a ``key`` already used on the stream (and still retained), nothing is stored: the
    earlier event is returned with ``duplicate = True``.
    """
    connection = connections[database()]
    if key is not None:
        assert connection.in_atomic_block, "append() with a key needs an atomic block"
        _create(name)
        locked = Stream.objects.select_for_update().get(name=name)
        earlier = Event.objects.filter(stream=locked, idempotency_key=key).first()
        if earlier is not None:
            earlier.stream = locked
            earlier.duplicate = True
            return earlier
    text = data_json if data_json is not None else _encode(data)
    rule = retention.rule_for(name)
    cap = rule.max_events
    row = statements.insert(connection, name, event, text, ts, key, cap)
    if row is None:
        _create(name)
        row = statements.insert(connection, name, event, text, ts, key, cap)
        assert row is not None
    event_id, stream_id, epoch, seq, trimmed, ts = row
    stream = statements.stream_row(connection, stream_id, name, epoch, seq, trimmed)
    stored = statements.event_row(connection, event_id, stream, seq, event, data, ts, key)
    # A no-op where ``insert`` already trimmed (PostgreSQL, SQLite): the stream is at its cap.
    _retain(stream, locked=connection.in_atomic_block, rule=rule)
    return stored


def needs_transaction(key: str | None, using: str | None = None) -> bool:
    """Whether ``append`` must run in ``transaction.atomic`` (see its docstring)."""
    return key is not None or connections[using or database()].vendor != "postgresql"


def _encode(data: Any) -> str:
    return json.dumps(data, cls=DjangoJSONEncoder)


def append_many(
    name: str, events: list[tuple[str, Any]], encoded: list[str] | None = None
) -> list[Event]:
    """Store several events with consecutive seqs, in order; like ``append``, in one go.

    One row lock, one ``UPDATE`` and one bulk ``INSERT`` for all of them: the cheap way to
    publish a burst (an import, a ticker catching up).
    """
    return append_group([(name, event, data) for event, data in events], encoded)


def append_group(
    events: list[tuple[str, str, Any]], encoded: list[str] | None = None
) -> list[Event]:
    """Store ``(stream, event, data)`` triples, each stream's in order with consecutive seqs.

    What group commit stores: the streams' rows are bumped in name order (one statement on
    PostgreSQL, one per stream elsewhere), so two groups never wait for each other's locks in
    a cycle, and the events go in one bulk ``INSERT``. Must run inside ``transaction.atomic``.
    ``encoded`` is each ``data`` already encoded, as ``protocol.normalize`` does.
    """
    assert transaction.get_connection(database()).in_atomic_block, (
        "append_group() needs an atomic block"
    )
    counts: dict[str, int] = {}
    for name, _, _ in events:
        counts[name] = counts.get(name, 0) + 1
    connection = connections[database()]
    streams = statements.bump(connection, counts)
    missing = {name: count for name, count in counts.items() if name not in streams}
    if missing:
        # One statement for all the new streams (a captured bulk write may open thousands).
        Stream.objects.bulk_create(
            [Stream(name=name, epoch=epochs.creation_epoch(name)) for name in sorted(missing)],
            ignore_conflicts=True,
        )
        streams.update(statements.bump(connection, missing))
    next_seq = {name: stream.last_seq - counts[name] + 1 for name, stream in streams.items()}
    now = timezone.now()
    rows = []
    for name, event, data in events:
        rows.append(Event(stream=streams[name], seq=next_seq[name], event=event, data=data, ts=now))
        next_seq[name] += 1
    if connection.vendor == "postgresql":
        texts = encoded if encoded is not None else [_encode(row.data) for row in rows]
        statements.insert_rows(connection, rows, texts, now)
    else:
        Event.objects.bulk_create(rows)
    for stream in streams.values():
        _retain(stream)
    return rows


def _create(name: str) -> None:
    """Make sure ``name`` has a row; a new one gets the epoch its subscribers were told."""
    Stream.objects.get_or_create(name=name, defaults={"epoch": epochs.creation_epoch(name)})


def _retain(stream: Stream, locked: bool = True, rule: retention.Rule | None = None) -> None:
    """Enforce the stream's ``max_events``: in the publishing transaction, which holds the
    stream's row lock, or (``locked=False``, after a one-statement append) in one of its own."""
    rule = rule or retention.rule_for(stream.name)
    if rule.max_events is not None and stream.last_seq - stream.trimmed_seq > rule.max_events:
        if locked:
            _trim(stream, stream.last_seq - rule.max_events)
        else:
            _trim_locked(stream.pk, stream.last_seq - rule.max_events)


def _trim(stream: Stream, upto: int) -> int:
    """Delete the stream's events up to seq ``upto``; returns how many went.

    Only those above ``trimmed_seq``: the ones below went with earlier trims, and their
    index entries, until vacuumed, would make every trim of a full stream walk them all."""
    deleted, _ = Event.objects.filter(
        stream=stream, seq__gt=stream.trimmed_seq, seq__lte=upto
    ).delete()
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


def positions(names: list[str]) -> list[StreamInfo]:
    """``position`` of each of ``names``, in one query per 500 of them."""
    found = heads(names)
    return [found.get(name) or missing(name) for name in names]


async def aposition(name: str) -> StreamInfo:
    """``position`` for the async core: concurrent subscribes (a connection storm, say) share
    one query (``groupcommit``)."""
    return await committer_for(positions).submit(name)


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
    with transaction.atomic(using=database()):
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
    with transaction.atomic(using=database()):
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
        with transaction.atomic(using=database()):
            locked = list(
                empty.select_for_update()
                .filter(pk__in=candidates[start : start + 500])
                .exclude(Exists(Event.objects.filter(stream=OuterRef("pk"))))
                .values_list("pk", flat=True)
            )
            deleted += Stream.objects.filter(pk__in=locked).delete()[1].get(Stream._meta.label, 0)
    return deleted


def on_sync_thread(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``func`` run on the process's sync thread, keeping its database connection.

    For ``apublish``: it may join a caller's transaction, so it runs where that transaction
    is (``thread_sensitive``), and unlike ``database_sync_to_async`` it does not close the
    thread's connection around every call, which under ``CONN_MAX_AGE = 0`` costs a new
    connection per event. Django still closes it at the end of each request; a connection an
    error left unusable is closed here, so the next call opens a fresh one.
    """

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        finally:
            close_broken_connections()

    return sync_to_async(run, thread_sensitive=True)


astream_info = in_lane(stream_info)
aread = in_lane(read)
aheads = in_lane(heads)
aprune = in_lane(prune)
