"""Publishing: store an event, then fan it out through the channel layer after commit.

``publish`` (sync) and ``apublish`` (async) share one path. The event row is written in the
caller's transaction if there is one; the channel-layer message is sent only when that
transaction commits, so a rollback publishes nothing. If the channel layer fails after the
commit, the event is still stored and every server's reconciler delivers it within
``RECONCILE_INTERVAL`` — a publish never half-happens.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, Protocol, cast

from asgiref.sync import AsyncToSync
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from realtime.bus import fan_out, sender
from realtime.bus import messages as layer_messages
from realtime.bus.messages import EventMessage, StreamMessage
from realtime.conf import realtime_settings
from realtime.core.stats import stats
from realtime.exceptions import InvalidEvent, StoreUnavailable, SyncInAsyncContext
from realtime.models import Event, Stream
from realtime.protocol import RESERVED_EVENT_PREFIXES, event_frame, format_ts, normalize
from realtime.storage import groupcommit, store
from realtime.streams import validate_stream_name

logger = logging.getLogger("realtime.publish")

EVENT_TYPE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}")

LayerMessage = StreamMessage


class Observer(Protocol):
    """Watches what publishing stores and sends (``realtime.testing.capture_published``).

    Called in the publishing thread, maybe on the event loop: never block, never raise.
    """

    def stored(self, rows: Sequence[Event], messages: Sequence[LayerMessage], pending: Any) -> None:
        """``rows`` were stored (or, ephemeral, made); ``messages`` will carry them.

        ``pending`` is the database connection whose commit the send waits for (its
        ``on_commit`` callbacks hold ``messages``), or ``None`` when nothing waits.
        """

    def sent(self, messages: Sequence[LayerMessage]) -> None:
        """``messages`` were handed to the channel layer (after commit)."""


# The observers; a plain list, so a publish pays one truth test when nobody watches.
observers: list[Observer] = []


def _stored(rows: Sequence[Event], messages: Sequence[LayerMessage], pending: Any) -> None:
    for observer in observers:
        observer.stored(rows, messages, pending)


def _sent(messages: Sequence[LayerMessage]) -> None:
    for observer in observers:
        observer.sent(messages)


def validate_event_type(event: object, *, allow_reserved: bool = False) -> str:
    """Event types are 1-100 characters of letters, digits and ``_ . : -``."""
    if not isinstance(event, str) or not EVENT_TYPE_RE.fullmatch(event):
        raise InvalidEvent(
            "Event type must be 1 to 100 letters, digits or _ . : - "
            "(starting with a letter, digit or _)."
        )
    if not allow_reserved and event.startswith(RESERVED_EVENT_PREFIXES):
        raise InvalidEvent(
            f"Event types starting with {' or '.join(RESERVED_EVENT_PREFIXES)} are reserved."
        )
    return event


IDEMPOTENCY_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def validate_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise InvalidEvent("An idempotency key is 1 to 64 letters, digits or _ . : -.")
    return key


def _prepare(stream: str, event: str, data: Any) -> tuple[str, Any, str]:
    validate_stream_name(stream)
    validate_event_type(event)
    data, data_json = normalize(data)
    limit = realtime_settings.MAX_EVENT_SIZE
    if len(data_json) > limit or len(data_json.encode()) > limit:
        raise InvalidEvent(f"Event data is larger than MAX_EVENT_SIZE ({limit} bytes).")
    return stream, data, data_json


def _message(stored: Event, data_json: str) -> EventMessage:
    """The channel-layer message: plain str/int values, safe for msgpack."""
    frame = event_frame(
        stored.stream.name, stored.seq, stored.event, data_json, format_ts(stored.ts)
    )
    return layer_messages.event(
        stored.stream.name, stored.stream.epoch, stored.seq, stored.event, frame
    )


async def _fan_out_logged(*messages: LayerMessage) -> None:
    if observers:
        _sent(messages)
    try:
        await fan_out(*messages)
    except Exception:
        first = messages[0]
        seq = first["events"][0]["seq"] if first["type"] == "realtime.events" else first.get("seq")
        logger.exception(
            "Fan-out of %s#%s%s failed; it is stored and the reconciler will deliver it.",
            first["stream"],
            seq,
            f" and {len(messages) - 1} more messages" if len(messages) > 1 else "",
        )


def _ephemeral(stream: str, event: str, data: Any, data_json: str) -> tuple[Event, EventMessage]:
    # Not stored: no seq (the one Event whose seq is None, as documented).
    no_seq = cast(int, None)
    stored = Event(stream=Stream(name=stream, epoch=""), seq=no_seq, event=event, data=data)
    stored.ts = timezone.now()
    return stored, _message(stored, data_json)


def _store(
    stream: str, event: str, data: Any, data_json: str, key: str | None = None
) -> tuple[Event, EventMessage | None]:
    """Append in the caller's transaction (or a new one, or none where one statement does).

    Returns the message for the caller to fan out now, or ``None`` when there is nothing to
    send yet (an outer transaction is open: fan-out waits for its commit with ``on_commit``)
    or at all (a repeated idempotency key: the first publish was delivered).
    """
    try:
        alias = store.database()
        outer = transaction.get_connection(alias).in_atomic_block
        if outer or store.needs_transaction(key, alias):
            with transaction.atomic(using=alias):
                stored = store.append(stream, event, data, key=key, data_json=data_json)
        else:
            stored = store.append(stream, event, data, data_json=data_json)
        if stored.duplicate:
            return stored, None
        message = _message(stored, data_json)
        _stored_in_transaction([stored], [message], alias, outer)
    except (OperationalError, InterfaceError) as exc:
        # Rolled back (or never begun): nothing is stored, so nothing is sent.
        raise StoreUnavailable(f"The event store is unavailable: {exc}") from exc
    stats.published += 1
    return stored, None if outer else message


def _stored_in_transaction(
    rows: Sequence[Event], messages: Sequence[LayerMessage], alias: str, outer: bool
) -> None:
    """Where ``rows`` were just stored: inside the caller's transaction (``outer``) their
    fan-out waits for its commit; observers (``realtime.testing``) hear of them either way."""
    if outer:
        for message in messages:
            transaction.on_commit(partial(_fan_out_sync, message), using=alias, robust=True)
    if observers:
        _stored(rows, messages, transaction.get_connection(alias) if outer else None)


def _fan_out_sync(message: LayerMessage) -> None:
    """Fan out from sync code: handed to the process's long-lived sender (``realtime.sender``)."""
    if observers:
        _sent([message])
    sender.send(message)


def publish(
    stream: str,
    event: str,
    data: Any = None,
    *,
    ephemeral: bool = False,
    idempotency_key: str | None = None,
) -> Event:
    """Store ``data`` as the next event of ``stream`` and deliver it to every subscriber.

    Returns the stored ``Event`` (with ``seq``, and its ``stream``, whose ``created_at`` is
    deferred: it loads when first used). Inside ``transaction.atomic()`` delivery waits
    for the commit and a rollback delivers nothing. ``ephemeral=True`` skips storage: no seq,
    no history, sent at once, best effort (cursor moves, typing indicators). A publish that
    repeats an ``idempotency_key`` of the stream returns the first event (``duplicate`` set)
    and stores and sends nothing.
    """
    _ensure_sync("publish")
    stream, data, data_json = _prepare(stream, event, data)
    key = validate_idempotency_key(idempotency_key)
    if ephemeral:
        stored, now = _ephemeral(stream, event, data, data_json)
        if observers:
            _stored([stored], [now], None)
        _fan_out_sync(now)
        return stored
    stored, message = _store(stream, event, data, data_json, key)
    if message is not None:
        _fan_out_sync(message)
    return stored


async def apublish(
    stream: str,
    event: str,
    data: Any = None,
    *,
    ephemeral: bool = False,
    idempotency_key: str | None = None,
) -> Event:
    """Async twin of ``publish``; the database write runs off the event loop.

    Called from sync code through ``async_to_sync`` it runs on that code's thread and joins
    its transaction, as ``publish`` would. Otherwise no caller's transaction can be open, and
    concurrent calls are group committed (``realtime.groupcommit``): they share a transaction
    and a layer message per stream, and each returns its own event or raises its own error.
    """
    stream, data, data_json = _prepare(stream, event, data)
    key = validate_idempotency_key(idempotency_key)
    if ephemeral:
        stored, message = _ephemeral(stream, event, data, data_json)
        if observers:
            _stored([stored], [message], None)
            _sent([message])
        await fan_out(message)
        return stored
    if _under_sync_code():
        stored, pending = await store.on_sync_thread(_store)(stream, event, data, data_json, key)
        if pending is not None:
            await _fan_out_logged(pending)
        return stored
    committer = groupcommit.committer_for(_commit_group, _fan_out_group)
    stored, _ = await committer.submit((stream, event, data, data_json, key))
    return stored


def _under_sync_code() -> bool:
    """Whether this coroutine runs inside ``async_to_sync`` called from a sync thread, whose
    transaction it may have to join. asgiref keeps no public flag for it; this is what its
    ``SyncToAsync`` reads to find that thread (asgiref 3.x, ``sync.py``)."""
    return getattr(AsyncToSync.executors, "current", None) is not None


Pending = tuple[str, str, Any, str, str | None]  # stream, event, data, data_json, key
Stored = tuple[Event, EventMessage | None]


def _commit_group(group: list[Pending]) -> list[Stored | BaseException]:
    """``_store`` for a group of publishes, in one transaction; one by one if that fails.

    Each stream's events keep the order they were submitted in (``store.append_group``).
    """
    if len(group) > 1:
        try:
            committed = _commit_together(group)
        except Exception:
            logger.info(
                "A group commit failed; committing its publishes one by one.", exc_info=True
            )
        else:
            stats.group_commits += 1
            stats.group_committed += len(group)
            return committed
    outcomes: list[Stored | BaseException] = []
    for pending in group:
        try:
            outcomes.append(_store(*pending))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _commit_together(group: list[Pending]) -> list[Stored | BaseException]:
    stored: dict[int, Stored] = {}
    plain = [index for index, pending in enumerate(group) if pending[4] is None]
    keyed = sorted(
        (index for index, pending in enumerate(group) if pending[4] is not None),
        key=lambda index: group[index][0],
    )
    with transaction.atomic(using=store.database()):
        rows = store.append_group(
            [group[index][:3] for index in plain], [group[index][3] for index in plain]
        )
        for index, row in zip(plain, rows, strict=True):
            stored[index] = (row, _message(row, group[index][3]))
        for index in keyed:
            stream, event, data, data_json, key = group[index]
            row = store.append(stream, event, data, key=key, data_json=data_json)
            stored[index] = (row, None if row.duplicate else _message(row, data_json))
    if observers:
        for index in range(len(group)):
            row, message = stored[index]
            if message is not None:
                _stored([row], [message], None)
    stats.published += sum(1 for _, message in stored.values() if message is not None)
    return [stored[index] for index in range(len(group))]


async def _fan_out_group(results: Sequence[Stored | BaseException]) -> None:
    """A committed group's messages, one (or a chunk of ``FAN_OUT_CHUNK``) per stream, in one
    ``bus.group_send_many``: one layer message per receiving process on Redis."""
    by_stream: dict[str, list[EventMessage]] = {}
    for result in results:
        if not isinstance(result, BaseException) and result[1] is not None:
            by_stream.setdefault(result[1]["stream"], []).append(result[1])
    messages: list[LayerMessage] = []
    for name, singles in by_stream.items():
        messages += singles if len(singles) == 1 else _chunked(name, singles)
    if messages:
        await _fan_out_logged(*messages)


FAN_OUT_CHUNK = sender.FAN_OUT_CHUNK  # events per channel-layer message of ``publish_many``


def _chunked(stream: str, singles: list[EventMessage]) -> list[StreamMessage]:
    """``realtime.events`` messages carrying ``singles`` in order, ``FAN_OUT_CHUNK`` each."""
    return [
        layer_messages.events(stream, singles[start : start + FAN_OUT_CHUNK])
        for start in range(0, len(singles), FAN_OUT_CHUNK)
    ]


# Events one ``publish_many`` call may store: a tenth of the default OUTBOX_WINDOW, so one
# burst never makes a subscriber that acknowledges promptly look slow.
MAX_MANY = 1000


def _prepare_many(stream: str, events: Iterable[tuple[str, Any]]) -> list[tuple[str, Any, str]]:
    validate_stream_name(stream)
    items = list(events)
    if len(items) > MAX_MANY:
        raise InvalidEvent(f"At most {MAX_MANY} events per publish_many() call.")
    prepared = []
    for event, data in items:
        _, data, data_json = _prepare(stream, event, data)
        prepared.append((event, data, data_json))
    return prepared


def _store_many(
    stream: str, prepared: list[tuple[str, Any, str]]
) -> tuple[list[Event], list[LayerMessage]]:
    """``_store`` for several events: one transaction, fan-out messages of ``FAN_OUT_CHUNK``."""
    try:
        alias = store.database()
        outer = transaction.get_connection(alias).in_atomic_block
        with transaction.atomic(using=alias):
            rows = store.append_many(
                stream,
                [(event, data) for event, data, _ in prepared],
                [data_json for _, _, data_json in prepared],
            )
            singles = [
                _message(row, data_json)
                for row, (_, _, data_json) in zip(rows, prepared, strict=True)
            ]
            messages = _chunked(stream, singles)
            _stored_in_transaction(rows, messages, alias, outer)
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(f"The event store is unavailable: {exc}") from exc
    stats.published += len(rows)
    return rows, [] if outer else messages


def publish_many(stream: str, events: Iterable[tuple[str, Any]]) -> list[Event]:
    """Store several ``(event, data)`` pairs as consecutive events of ``stream``, and send them.

    All or nothing, in one transaction, and far cheaper per event than a ``publish`` each:
    for bursts (imports, tickers catching up). Subscribers get them in order, as usual.
    """
    _ensure_sync("publish_many")
    prepared = _prepare_many(stream, events)
    if not prepared:
        return []
    rows, messages = _store_many(stream, prepared)
    for message in messages:
        _fan_out_sync(message)
    return rows


def publish_group(events: Sequence[tuple[str, str, Any]]) -> list[Event]:
    """Store ``(stream, event, data)`` triples, each stream's in order with consecutive seqs,
    in one transaction (the caller's, if open), and send them after it commits.

    For many streams at once (a captured bulk write of a live model with a stream per row):
    the streams are bumped together, the events inserted in one statement per thousand.
    """
    _ensure_sync("publish_group")
    prepared = [
        (stream, event, *_prepare(stream, event, data)[1:]) for stream, event, data in events
    ]
    if not prepared:
        return []
    alias = store.database()
    outer = transaction.get_connection(alias).in_atomic_block
    rows: list[Event] = []
    messages: list[LayerMessage] = []
    try:
        with transaction.atomic(using=alias):
            for start in range(0, len(prepared), MAX_MANY):
                chunk = prepared[start : start + MAX_MANY]
                stored = store.append_group(
                    [(stream, event, data) for stream, event, data, _ in chunk],
                    [data_json for _, _, _, data_json in chunk],
                )
                by_stream: dict[str, list[EventMessage]] = {}
                for row, (stream, _, _, data_json) in zip(stored, chunk, strict=True):
                    by_stream.setdefault(stream, []).append(_message(row, data_json))
                for name, singles in by_stream.items():
                    messages += singles if len(singles) == 1 else _chunked(name, singles)
                rows += stored
            _stored_in_transaction(rows, messages, alias, outer)
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(f"The event store is unavailable: {exc}") from exc
    stats.published += len(rows)
    if not outer:
        for message in messages:
            _fan_out_sync(message)
    return rows


async def apublish_many(stream: str, events: Iterable[tuple[str, Any]]) -> list[Event]:
    """Async twin of ``publish_many``."""
    prepared = _prepare_many(stream, events)
    if not prepared:
        return []
    rows, messages = await store.on_sync_thread(_store_many)(stream, prepared)
    if messages:
        await _fan_out_logged(*messages)
    return rows


def _reset(stream: str) -> tuple[store.StreamInfo, LayerMessage | None]:
    alias = store.database()
    outer = transaction.get_connection(alias).in_atomic_block
    info = store.reset(stream)
    message = _reset_message(info)
    if outer:
        transaction.on_commit(partial(_fan_out_sync, message), using=alias, robust=True)
    return info, None if outer else message


def reset(stream: str) -> store.StreamInfo:
    """Delete a stream's history and start a new epoch; subscribers are told to start over."""
    _ensure_sync("reset")
    validate_stream_name(stream)
    info, message = _reset(stream)
    if message is not None:
        _fan_out_sync(message)
    return info


async def areset(stream: str) -> store.StreamInfo:
    """Async twin of ``reset``."""
    validate_stream_name(stream)
    info, message = await store.on_sync_thread(_reset)(stream)
    if message is not None:
        await _fan_out_logged(message)
    return info


def _reset_message(info: store.StreamInfo) -> LayerMessage:
    return layer_messages.reset(info.name, info.epoch)


def _ensure_sync(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise SyncInAsyncContext(
        f"realtime.{name}() was called from a running event loop; "
        f"use `await realtime.a{name}(...)` in async code."
    )
