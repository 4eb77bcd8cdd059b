"""``capture_published()``: what the code under test published, and what it sent.

Every publish goes through ``realtime.core.publishing``, which tells its observers what it
stored and what it handed to the channel layer. The capture is one such observer while its
block runs, in this process and on every thread (the REST API and client ``publish`` frames
store on the database lanes).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, NamedTuple

from django.db import transaction

from realtime.bus.messages import EventMessage, StreamMessage
from realtime.core import publishing
from realtime.models import Event
from realtime.protocol import loads


class Published(NamedTuple):
    """One event as a test compares it: ``seq`` is ``None`` for an ephemeral event."""

    stream: str
    event: str
    data: Any
    seq: int | None


@dataclass
class _Stored:
    record: Published
    messages: Sequence[StreamMessage]
    pending: Any  # the connection whose commit the send waits for, or None
    pk: int | None = None  # the event's row (None: ephemeral)
    sent: bool = False
    committed: bool = False  # its transaction committed after the block ended


@dataclass
class CapturedEvents:
    """What was published while a ``capture_published()`` block ran.

    ``events``: every event stored (or published ephemeral) in the block, in order, less
    those whose transaction or savepoint rolled back. An event stored in an open
    transaction is listed at once: it is in the database, its send waits for the commit.
    ``sent``: what was handed to the channel layer for subscribers, in order: after the
    commit, so under Django's ``TestCase`` only inside
    ``self.captureOnCommitCallbacks(execute=True)``.
    ``resets``: the streams whose ``realtime.reset`` was sent.
    """

    _stored: list[_Stored] = field(default_factory=list)
    sent: list[Published] = field(default_factory=list)
    resets: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def events(self) -> list[Published]:
        with self._lock:
            stored = list(self._stored)
        return [entry.record for entry in _standing(stored)]

    def on(self, stream: str) -> list[Published]:
        """``events`` of one stream."""
        return [record for record in self.events if record.stream == stream]

    def types(self) -> list[str]:
        """The event types of ``events``, in order: ``["task.created", "task.updated"]``."""
        return [record.event for record in self.events]

    def clear(self) -> None:
        with self._lock:
            self._stored.clear()
            self.sent.clear()
            self.resets.clear()


class _Observer:
    """Forwards publishing's calls to one ``CapturedEvents``."""

    def __init__(self, captured: CapturedEvents) -> None:
        self.captured = captured

    def stored(
        self, rows: Sequence[Event], messages: Sequence[StreamMessage], pending: Any
    ) -> None:
        captured = self.captured
        with captured._lock:
            for row in rows:
                record = Published(row.stream.name, row.event, row.data, row.seq)
                captured._stored.append(_Stored(record, messages, pending, row.pk))

    def sent(self, messages: Sequence[StreamMessage]) -> None:
        captured = self.captured
        with captured._lock:
            ids = {id(message) for message in messages}
            for entry in captured._stored:
                if not entry.sent and any(id(m) in ids for m in entry.messages):
                    entry.sent = True
            for message in messages:
                if message["type"] == "realtime.reset":
                    captured.resets.append(message["stream"])
                elif message["type"] == "realtime.events":
                    captured.sent += [_record(single) for single in message["events"]]
                elif message["type"] == "realtime.event":
                    captured.sent.append(_record(message))


def _record(message: EventMessage) -> Published:
    """What subscribers get: the data as decoded from the frame they are sent."""
    frame = loads(message["frame"])
    return Published(message["stream"], message["event"], frame.get("data"), message["seq"])


def _standing(entries: Sequence[_Stored]) -> list[_Stored]:
    """The entries whose event still stands: sent, committed, or waiting for a commit.

    A waiting event is a row in its connection's open transaction: a rollback (of the
    transaction or of the savepoint it was stored in) takes the row with it, so the rows
    still there are read back, on that connection. Only this thread can use it; an event
    waiting on another thread's transaction is kept (nothing can be checked from here).
    """
    waiting: dict[str, list[_Stored]] = {}
    # SQLite hands a rolled-back row's id to the next insert: a row stands for the last
    # event stored with its id, never for an earlier one.
    last = {entry.pk: entry for entry in entries if entry.pk is not None}
    for entry in entries:
        connection = entry.pending
        if entry.sent or entry.committed or connection is None or entry.pk is None:
            continue
        if (
            transaction.get_connection(connection.alias) is connection
            and not connection.needs_rollback  # else another thread's, or failing: unknown
        ):
            waiting.setdefault(connection.alias, []).append(entry)
    fallen: set[int] = set()
    for alias, found in waiting.items():
        rows = set(
            Event.objects.using(alias)
            .filter(pk__in=[entry.pk for entry in found])
            .values_list("pk", flat=True)
        )
        fallen |= {id(e) for e in found if e.pk not in rows or last[e.pk] is not e}
    return [entry for entry in entries if id(entry) not in fallen]


def _mark_committed(entry: _Stored) -> None:
    entry.committed = True


class capture_published:  # lower case: used like a function, as contextlib's are
    """Record what is published while the block runs; ``with`` or ``async with``.

    ::

        with capture_published() as captured:
            realtime.publish("chat:1", "message", {"text": "hi"})
        assert captured.events == [("chat:1", "message", {"text": "hi"}, 1)]

    Yields a :class:`CapturedEvents`. Covers ``publish``/``apublish``, ``publish_many``,
    ephemeral events, the REST API, client ``publish`` frames and live models, in this
    process. Blocks nest; each records everything in it.
    """

    def __init__(self) -> None:
        self.captured = CapturedEvents()
        self._observer = _Observer(self.captured)

    def __enter__(self) -> CapturedEvents:
        # A new list, never one changed in place: another thread may be iterating the old.
        publishing.observers = [*publishing.observers, self._observer]
        return self.captured

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        publishing.observers = [o for o in publishing.observers if o is not self._observer]
        self._follow_pending()

    def _follow_pending(self) -> None:
        """Events whose transaction is still open at the end of the block stay listed if it
        commits later: a marker joins them among this thread's ``on_commit`` callbacks, in
        the same savepoint, so a rollback drops both."""
        with self.captured._lock:
            stored = list(self.captured._stored)
        standing = {id(entry) for entry in _standing(stored)}
        for entry in stored:
            connection = entry.pending
            if (
                connection is not None
                and not entry.sent
                and id(entry) in standing
                and transaction.get_connection(connection.alias) is connection
                and connection.in_atomic_block  # else its transaction is over already
            ):
                transaction.on_commit(partial(_mark_committed, entry), using=connection.alias)

    async def __aenter__(self) -> CapturedEvents:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, exc, traceback)
