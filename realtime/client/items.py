"""What the client hands the application: events and the notices that share their order,
the result of a publish, and changes of the connection's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event of a subscribed stream; ``seq`` is None for an ephemeral event."""

    stream: str
    seq: int | None
    event: str
    data: Any
    ts: str

    @property
    def ephemeral(self) -> bool:
        return self.seq is None


@dataclass(frozen=True)
class Reset:
    """The stream could not be continued from the position held (``recovered: false``: a
    reset stream, a new ``epoch``, or events deleted before they were received). Drop what
    was built from the stream; the events that follow are its retained history, then live."""

    stream: str
    epoch: str
    head: int


@dataclass(frozen=True)
class Snapshot:
    """The stream's current state as of ``seq`` (a live model's stream, after a Reset)."""

    stream: str
    seq: int
    data: Any


@dataclass(frozen=True)
class Gap:
    """Seqs ``first`` to ``last`` were skipped by the server (a ``skip`` stream of a slow
    connection, docs/protocol.md#flow-control); fetch them from history if needed."""

    stream: str
    first: int
    last: int


Item = Event | Reset | Snapshot | Gap  # what iterating a Subscription yields, in order


@dataclass(frozen=True)
class PublishResult:
    """A stored publish: its ``seq`` (None if ephemeral); ``duplicate``: its idempotency key
    was already used on the stream, and ``seq`` is the first event's."""

    stream: str
    seq: int | None
    duplicate: bool
    key: str | None


@dataclass(frozen=True)
class StateChange:
    """A change of the client's state, given to ``on_state``.

    ``state``: ``connecting``, ``open``, ``reconnecting`` or ``closed``. Entering
    ``reconnecting`` carries the close ``code`` and ``reason`` and the retry's ``attempt``
    and ``delay`` (seconds); entering ``open`` the ``transport``, ``url`` and
    ``connection_id``; entering ``closed`` the ``error`` that closed it, if any.
    """

    state: str
    previous: str
    transport: str | None = None
    url: str | None = None
    connection_id: str | None = None
    attempt: int | None = None
    delay: float | None = None
    code: int | None = None
    reason: str | None = None
    error: Exception | None = None
