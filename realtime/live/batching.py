"""Batches: many changes, one event per stream, in the changes' transaction.

``realtime.live.batch()`` collects what the signal receivers and the ``bulk_*`` helpers
would publish and, when the block ends without an error, publishes one ``<model>.batch``
event per stream and model, holding the changes in order::

    {"changes": [{"event": "task.created", "data": {...}}, {"event": "task.deleted", ...}]}

Outside a batch each change is published at once. The ``bulk_*`` helpers announce what
nothing else publishes: bulk writes of a model whose capture is off (``realtime.live.capture``
publishes them otherwise), raw SQL on a database without capture triggers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import Model, QuerySet

from realtime.conf import realtime_settings
from realtime.core.publishing import publish, publish_group
from realtime.live import marks
from realtime.protocol import dumps
from realtime.storage import store

if TYPE_CHECKING:
    from realtime.live.options import LiveModel

# Room left in a batch event for ``{"changes":[...]}`` around the changes.
_ENVELOPE = 32


@dataclass
class Change:
    live: LiveModel
    kind: str
    streams: list[str]
    data: Any
    using: str


@dataclass
class Batch:
    """The changes recorded by the innermost open ``batch()`` block of this context."""

    changes: list[Change] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    marked: set[str] = field(default_factory=set)  # databases holding marks of this batch
    settled: set[int] = field(default_factory=set)  # changes made in autocommit mode

    def add(self, *changes: Change) -> None:
        """Record ``changes``; those made in a transaction are marked in it (``live.marks``).

        A change made in autocommit mode (on a database the batch's ``atomic`` does not
        cover) is committed already: nothing can undo it, so it needs no mark.
        """
        numbers: dict[str, list[int]] = {}
        for change in changes:
            if transaction.get_connection(change.using).in_atomic_block:
                numbers.setdefault(change.using, []).append(len(self.changes))
            else:
                self.settled.add(len(self.changes))
            self.changes.append(change)
        for using, marked in numbers.items():
            marks.mark(using, self.id, marked)
        self.marked.update(numbers)

    def committed(self) -> list[Change]:
        """The changes not undone by a rolled-back savepoint."""
        alive = set(self.settled)
        for using in self.marked:
            alive |= marks.survivors(using, self.id)
        return [change for n, change in enumerate(self.changes) if n in alive]

    def flush(self) -> None:
        """Publish one batch event per (stream, model), split to fit ``MAX_EVENT_SIZE``."""
        groups: dict[tuple[str, str, str], tuple[LiveModel, list[dict[str, Any]]]] = {}
        for change in self.committed():
            item = {"event": change.live.events[change.kind], "data": change.data}
            for stream in change.streams:
                key = (stream, change.live.label, change.using)
                groups.setdefault(key, (change.live, []))[1].append(item)
        limit = realtime_settings.MAX_EVENT_SIZE - _ENVELOPE
        for (stream, _, using), (live, items) in groups.items():
            for chunk in _chunks(items, limit):
                _publish(stream, live.events["batch"], {"changes": chunk}, using)


def _chunks(items: list[dict[str, Any]], limit: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive runs of ``items`` whose JSON fits ``limit`` bytes (at least one each)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for item in items:
        length = len(dumps(item).encode()) + 1
        if chunk and size + length > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += length
    if chunk:
        yield chunk


_current: ContextVar[Batch | None] = ContextVar("realtime_live_batch", default=None)


@contextmanager
def batch(using: str | None = None) -> Iterator[Batch]:
    """Publish the changes made in the block as one event per stream, in one transaction.

    Opens ``transaction.atomic(using)``; the batch events are stored in it, just before it
    commits, and sent after. An error in the block publishes nothing (and rolls back);
    changes inside an inner atomic block that rolls back are left out. Nested batches join
    the outermost one.
    """
    with transaction.atomic(using=using):
        outer = _current.get()
        if outer is not None:
            yield outer
            return
        current = Batch()
        token = _current.set(current)
        try:
            yield current
        finally:
            _current.reset(token)
        if not transaction.get_connection(using).needs_rollback:
            current.flush()


def emit(live: LiveModel, kind: str, streams: list[str], data: Any, using: str) -> None:
    """Publish one change to its streams, or add it to the open batch."""
    if not streams or kind not in live.events:
        return
    current = _current.get()
    if current is not None:
        current.add(Change(live, kind, streams, data, using))
        return
    for stream in streams:
        _publish(stream, live.events[kind], data, using)


def emit_many(changes: list[Change]) -> None:
    """Publish many changes, each stream's in order (``publish_group``: streams bumped
    together), or add them to the open batch: what the captured bulk paths make."""
    changes = [c for c in changes if c.streams and c.kind in c.live.events]
    if not changes:
        return
    current = _current.get()
    if current is not None:
        current.add(*changes)
        return
    by_database: dict[str, list[tuple[str, str, Any]]] = {}
    for change in changes:
        event = change.live.events[change.kind]
        items = by_database.setdefault(change.using, [])
        items.extend((stream, event, change.data) for stream in change.streams)
    for using, items in by_database.items():
        if using == store.database():
            publish_group(items)
        else:
            transaction.on_commit(partial(publish_group, items), using=using, robust=True)


def _publish(stream: str, event: str, data: Any, using: str) -> None:
    """Publish in the transaction of the change, on ``using``, where the events live there.

    Elsewhere no transaction spans both databases: the event is published when the change's
    transaction on ``using`` commits, so a rollback there publishes nothing (and a crash
    between the two commits loses the event; ``docs/live-models.md``).
    """
    if using == store.database():
        publish(stream, event, data)
    else:
        transaction.on_commit(partial(publish, stream, event, data), using=using, robust=True)


def _bulk(kind: str, objects: Iterable[Model]) -> int:
    from realtime.live.receivers import live_for

    changes, count = [], 0
    for obj in objects:
        count += 1
        live = live_for(type(obj))
        if live is None:
            raise TypeError(
                f"{type(obj).__name__} is not a live model: register it with "
                f"realtime.live.register first."
            )
        if obj.pk is None:
            raise ValueError(
                f"A {type(obj).__name__} without a primary key cannot be published: "
                f"bulk_create sets pks only on databases that return them (PostgreSQL, "
                f"SQLite, MariaDB); re-read the rows first."
            )
        using = obj._state.db or "default"
        data = live.key_payload(obj) if kind == "deleted" else live.payload(obj)
        streams = live.streams_for(obj)
        if streams and kind in live.events:
            changes.append(Change(live, kind, streams, data, using))
    with batch() as current:
        current.add(*changes)
    return count


def bulk_created(objects: Iterable[Model]) -> int:
    """Announce rows made without being published (``bulk_create`` with capture off, raw
    SQL): one batch event per stream. Not after a captured ``bulk_create``: twice.

    Returns how many objects were announced. Call it in the transaction that made them
    (or inside ``batch()``), so a rollback takes the events too.
    """
    return _bulk("created", objects)


def bulk_updated(objects: Iterable[Model] | QuerySet[Any]) -> int:
    """Announce rows changed without being published (``update``/``bulk_update`` with
    capture off, raw SQL). Not after a captured write: it would be published twice.

    Pass the updated rows (re-read: ``Task.objects.filter(pk__in=ids)``), so the events
    carry their new state. Streams the rows moved out of are not told (no old values).
    """
    return _bulk("updated", objects)


def bulk_deleted(objects: Iterable[Model]) -> int:
    """Announce rows deleted without signals (raw SQL, ``_raw_delete``).

    Pass the objects as they were, read before the delete. Not needed after
    ``QuerySet.delete()``: Django sends ``post_delete`` for every row of a live model (wrap
    it in ``batch()`` for one event per stream).
    """
    return _bulk("deleted", objects)


def _rows(objects: Iterable[Model] | QuerySet[Any]) -> list[Model]:
    return list(objects)


async def abulk_created(objects: Iterable[Model]) -> int:
    """Async twin of ``bulk_created`` (runs it in a worker thread)."""
    return await sync_to_async(lambda: bulk_created(_rows(objects)))()


async def abulk_updated(objects: Iterable[Model] | QuerySet[Any]) -> int:
    """Async twin of ``bulk_updated``; a queryset is evaluated in the worker thread."""
    return await sync_to_async(lambda: bulk_updated(_rows(objects)))()


async def abulk_deleted(objects: Iterable[Model]) -> int:
    """Async twin of ``bulk_deleted``."""
    return await sync_to_async(lambda: bulk_deleted(_rows(objects)))()
