"""The store's hot statements, in the SQL each database does best, and their cursor.

``insert`` appends one event (on PostgreSQL with its ``max_events`` trim, one statement:
``capped``), ``bump`` reserves seqs for a group and ``insert_rows`` inserts its events; what
they return is built into model instances as the ORM would load them (``stream_row``).
``realtime.storage.store`` decides when each runs; this module only says how.

On psycopg 3 they run on a cursor that binds parameters on the server, so that PostgreSQL
can keep the statements prepared where the connection allows it (Django's
``OPTIONS["prepare_threshold"]``; off by default, for transaction-mode poolers). Django's own
cursors bind on the client (``ClientCursor``), which psycopg never prepares: the append
statement was then parsed and planned on every publish, about a fifth of its time. One such
cursor is kept per database connection: a new psycopg cursor builds its loaders for every
column of its first result, which with creating and closing it cost a ``publish()`` loop
tens of µs per event. The kept cursor is wrapped as Django wraps its cursors
(``execute_wrapper`` applies; Django reads the wrappers at each call); it is made again for a
new connection. While the connection logs its queries (``DEBUG``, ``assertNumQueries``,
``CaptureQueriesContext``) the statements run on Django's own cursor instead, unprepared:
Django logs a statement psycopg has prepared with no SQL text (its ``last_executed_query``
reads the client-side cursor's composed query), and tools that wrap ``connection.cursor()``
(django-debug-toolbar's SQL panel) would not see the kept one. Other databases get Django's
cursor.
"""

from __future__ import annotations

import weakref
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import DEFERRED
from django.utils import timezone

from realtime.models import Event, Stream

# psycopg connection -> the Django cursor wrapper kept for it.
_kept: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The appended event's time as the statements return it (``_from_micros`` reads it back).
TS_MICROS = "(EXTRACT(EPOCH FROM e.ts) * 1000000)::bigint"
# The models' fields, in the order ``stream_row`` and ``event_row`` give their values.
STREAM_FIELDS = ("id", "name", "epoch", "last_seq", "trimmed_seq", "created_at")
EVENT_FIELDS = ("id", "stream_id", "seq", "event", "data", "ts", "idempotency_key")
# Database vendor -> the quoted names of the stream and event tables (``tables``).
_tables: dict[str, tuple[str, str]] = {}


class _Kept:
    """``with``-able like a Django cursor, without closing the kept cursor on exit."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def __enter__(self) -> Any:
        return self.cursor

    def __exit__(self, *exc: object) -> None:
        return None


def cursor_for(connection: Any) -> Any:
    """A cursor for one of the store's hot statements on ``connection`` (a Django
    ``DatabaseWrapper``), to use as ``with cursor_for(connection) as cursor:``."""
    if (
        connection.vendor != "postgresql"
        or connection.queries_logged
        or connection.settings_dict["OPTIONS"].get("server_side_binding")
    ):
        return connection.cursor()
    try:
        from django.db.backends.postgresql import base
    except ImportError:  # pragma: no cover - no PostgreSQL driver, yet a PostgreSQL alias
        return connection.cursor()
    binding: Any = getattr(base, "ServerBindingCursor", None)  # psycopg 3 only
    if binding is None:
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = connection.connection
    kept = _kept.get(raw)
    if kept is None or kept.db is not connection or kept.cursor.closed:
        # ``db``: a pooled connection handed to another thread's ``DatabaseWrapper``.
        with connection.wrap_database_errors:
            kept = _kept[raw] = connection._prepare_cursor(binding(raw))
    return _Kept(kept)


def tables(connection: Any) -> tuple[str, str]:
    """The stream and event tables' names, quoted for ``connection``'s database."""
    found = _tables.get(connection.vendor)
    if found is None:
        quote = connection.ops.quote_name
        found = _tables[connection.vendor] = (
            quote(Stream._meta.db_table),
            quote(Event._meta.db_table),
        )
    return found


def insert(
    connection: Any,
    name: str,
    event: str,
    text: str,
    ts: datetime | None,
    key: str | None,
    cap: int | None = None,
) -> tuple[int, int, str, int, int, datetime] | None:
    """Bump the stream and insert the event: the new row's id, the stream's id, epoch, seq and
    trimmed seq, and the event's time; None if the stream has no row.

    Without a ``ts`` the event is stamped after the stream's lock is taken, so timestamps
    follow seqs (on PostgreSQL by the database's clock, within the statement). A ``cap``
    (``max_events``, at least 1) is enforced here on PostgreSQL, in the same statement
    (``capped``), and on SQLite, by the bump advancing ``trimmed_seq`` and one ``DELETE``
    (SQLite has one writer at a time, which the bump made this transaction); other databases
    leave it to ``append``.
    """
    with cursor_for(connection) as cursor:
        if connection.vendor == "postgresql" and cap:
            return capped(connection, cursor, name, event, text, ts, key, cap)
        streams, events = tables(connection)
        trims = connection.vendor == "sqlite" and bool(cap)
        trim_sql = ", trimmed_seq = MAX(trimmed_seq, last_seq + 1 - %s)" if trims else ""
        bump_sql = (
            f"UPDATE {streams} SET last_seq = last_seq + 1{trim_sql} WHERE name = %s"
            " RETURNING id, epoch, last_seq, trimmed_seq"
        )
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH s AS ({bump_sql}), e AS (INSERT INTO {events}"
                " (stream_id, seq, event, data, ts, idempotency_key)"
                " SELECT id, last_seq, %s, %s::jsonb, COALESCE(%s, clock_timestamp()), %s"
                " FROM s RETURNING id, ts)"
                f" SELECT e.id, s.id, s.epoch, s.last_seq, s.trimmed_seq, {TS_MICROS} FROM s, e",
                [name, event, text, ts, key],
            )
            found = cursor.fetchone()
            if found is None:
                return None
            return (*found[:5], _from_micros(connection, found[5]))
        cursor.execute(bump_sql, [cap, name] if trims else [name])
        position = cursor.fetchone()
        if position is None:
            return None
        stream_id, epoch, seq, trimmed = position
        ts = ts or timezone.now()
        cursor.execute(
            f"INSERT INTO {events} (stream_id, seq, event, data, ts, idempotency_key)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            [stream_id, seq, event, text, connection.ops.adapt_datetimefield_value(ts), key],
        )
        event_id = cursor.fetchone()[0]
        if trims and trimmed:
            # Deleted rows leave SQLite's index at once: the range starts at the oldest kept.
            cursor.execute(
                f"DELETE FROM {events} WHERE stream_id = %s AND seq <= %s", [stream_id, trimmed]
            )
        return event_id, stream_id, epoch, seq, trimmed, ts


def capped(
    connection: Any,
    cursor: Any,
    name: str,
    event: str,
    text: str,
    ts: datetime | None,
    key: str | None,
    cap: int,
) -> tuple[int, int, str, int, int, datetime] | None:
    """The PostgreSQL append with its ``max_events`` trim: one statement, one round trip.

    A stream at its cap deletes its oldest event with every publish; in a transaction of its
    own after the append that cost a second commit and five more round trips (a ``publish()``
    loop ran 6 times slower once its stream was full). Here the bump also advances
    ``trimmed_seq`` and a ``DELETE`` takes the events from the old trimmed seq (as this
    statement's snapshot saw it, ``o``) up to the new one. The ``DELETE`` sees that snapshot
    too: events that publishers queued on the row lock committed after it are invisible to
    it. They lie above the snapshot's ``last_seq``, so when the new trimmed seq reaches past
    that (a cap smaller than the publishers racing on one stream), they are deleted right
    after, on the same connection (``seq_seen`` is that ``last_seq``).
    """
    streams, events = tables(connection)
    cursor.execute(
        f"WITH o AS (SELECT last_seq, trimmed_seq FROM {streams} WHERE name = %s),"
        f" s AS (UPDATE {streams} SET last_seq = last_seq + 1,"
        " trimmed_seq = GREATEST(trimmed_seq, last_seq + 1 - %s)"
        " WHERE name = %s RETURNING id, epoch, last_seq, trimmed_seq),"
        f" e AS (INSERT INTO {events} (stream_id, seq, event, data, ts, idempotency_key)"
        " SELECT id, last_seq, %s, %s::jsonb, COALESCE(%s, clock_timestamp()), %s"
        " FROM s RETURNING id, ts),"
        f" d AS (DELETE FROM {events} AS x USING s, o WHERE x.stream_id = s.id"
        " AND x.seq > o.trimmed_seq AND x.seq <= s.trimmed_seq)"
        f" SELECT e.id, s.id, s.epoch, s.last_seq, s.trimmed_seq, {TS_MICROS}, o.last_seq"
        " FROM s, e, o",
        [name, cap, name, event, text, ts, key],
    )
    found = cursor.fetchone()
    if found is None:
        return None
    event_id, stream_id, epoch, seq, trimmed, stamped, seq_seen = found
    if trimmed > seq_seen and seq - 1 > seq_seen:
        Event.objects.filter(stream_id=stream_id, seq__gt=seq_seen, seq__lte=trimmed).delete()
    return event_id, stream_id, epoch, seq, trimmed, _from_micros(connection, stamped)


def _from_micros(connection: Any, micros: int) -> datetime:
    """A time the statements return as microseconds since the epoch, as Django would load it.

    They return it so rather than as a ``timestamptz``, whose psycopg loader (subclassed by
    Django, in Python) is made anew for every result, reading the session's time zone, and
    then parses the text: several µs of every ``publish()``.
    """
    value = EPOCH + timedelta(microseconds=micros)
    zone = connection.timezone
    if zone is None:  # USE_TZ = False: naive, in the connection's time zone
        return value.astimezone(zoneinfo.ZoneInfo(connection.timezone_name)).replace(tzinfo=None)
    return value if zone is UTC else value.astimezone(zone)


def insert_rows(connection: Any, rows: list[Event], texts: list[str], ts: datetime) -> None:
    """``bulk_create`` for PostgreSQL in one preparable statement: the columns as arrays
    (``unnest``), so the statement is the same whatever the group's size, and its thousands
    of parameters are not quoted into the SQL one by one on the client."""
    _, table = tables(connection)
    with cursor_for(connection) as cursor:
        cursor.execute(
            f"INSERT INTO {table} (stream_id, seq, event, data, ts)"
            " SELECT s, q, e, d::jsonb, %s FROM unnest(%s::bigint[], %s::bigint[], %s::text[],"
            " %s::text[]) AS u(s, q, e, d) RETURNING id, stream_id, seq",
            [
                ts,
                [row.stream_id for row in rows],
                [row.seq for row in rows],
                [row.event for row in rows],
                texts,
            ],
        )
        ids = {(stream_id, seq): pk for pk, stream_id, seq in cursor.fetchall()}
    for row in rows:
        row.pk = ids[row.stream_id, row.seq]
        row._state.adding, row._state.db = False, connection.alias


def bump(connection: Any, counts: dict[str, int]) -> dict[str, Stream]:
    """Reserve each named stream's next ``count`` seqs, taking the rows' locks in name order;
    the streams that have a row, by name, positioned after the bump."""
    table, _ = tables(connection)
    names = sorted(counts)
    found: dict[str, Stream] = {}
    with cursor_for(connection) as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH v(name, n) AS (SELECT * FROM unnest(%s::text[], %s::bigint[])),"
                f" locked AS (SELECT s.id FROM {table} s JOIN v ON s.name = v.name"
                f" ORDER BY s.name FOR UPDATE OF s)"
                f" UPDATE {table} s SET last_seq = s.last_seq + v.n FROM v"
                f" WHERE s.name = v.name AND s.id IN (SELECT id FROM locked)"
                f" RETURNING s.id, s.name, s.epoch, s.last_seq, s.trimmed_seq",
                [names, [counts[name] for name in names]],
            )
            rows = cursor.fetchall()
        else:
            rows = []
            for name in names:
                cursor.execute(
                    f"UPDATE {table} SET last_seq = last_seq + %s WHERE name = %s"
                    " RETURNING id, name, epoch, last_seq, trimmed_seq",
                    [counts[name], name],
                )
                rows.extend(cursor.fetchall())
    for stream_id, name, epoch, last_seq, trimmed_seq in rows:
        found[name] = stream_row(connection, stream_id, name, epoch, last_seq, trimmed_seq)
    return found


def stream_row(
    connection: Any, stream_id: int, name: str, epoch: str, last_seq: int, trimmed_seq: int
) -> Stream:
    """The ``Stream`` of a row read back by raw SQL, as the ORM would have loaded it (with
    ``only()``: ``created_at``, not read, is deferred and loads when first used)."""
    return Stream.from_db(
        connection.alias, STREAM_FIELDS, [stream_id, name, epoch, last_seq, trimmed_seq, DEFERRED]
    )


def event_row(
    connection: Any,
    event_id: int,
    stream: Stream,
    seq: int,
    event: str,
    data: Any,
    ts: datetime,
    key: str | None,
) -> Event:
    """The ``Event`` of a row written by raw SQL, as the ORM would have loaded it, its
    ``stream`` attached. ``from_db`` takes the field values in order, without the keyword
    handling of ``Event(**fields)``: with ``stream_row``, 5.6 µs a publish instead of 9.6."""
    values = [event_id, stream.pk, seq, event, data, ts, key]
    row = Event.from_db(connection.alias, EVENT_FIELDS, values)
    Event.stream.field.set_cached_value(row, stream)
    return row
