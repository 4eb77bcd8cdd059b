"""The event store: gapless seqs under concurrency, retention, reset."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

import realtime
from realtime.models import Event, Stream
from realtime.storage import store

pytestmark = pytest.mark.django_db(transaction=True)


def seqs(stream: str) -> list[int]:
    return list(
        Event.objects.filter(stream__name=stream).order_by("seq").values_list("seq", flat=True)
    )


def test_seq_starts_at_one_and_counts_up():
    events = [realtime.publish("s", "e", {"n": n}) for n in range(5)]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    stream = Stream.objects.get(name="s")
    assert stream.last_seq == 5 and stream.trimmed_seq == 0
    assert len(stream.epoch) == 16


def test_streams_count_separately():
    realtime.publish("a", "e")
    realtime.publish("b", "e")
    assert realtime.publish("a", "e").seq == 2
    assert realtime.publish("b", "e").seq == 2


@pytest.mark.parametrize("logged", [False, True], ids=["kept-cursor", "queries-logged"])
def test_a_group_is_stored_as_the_orm_would_store_it(logged):
    """``append_group`` (group commit, ``publish_many``): on PostgreSQL one ``unnest`` insert
    whose statement is prepared after a few runs; the rows it returns are the stored rows,
    pk, seq, data and time alike, on every run. The same while queries are logged, when the
    statements run on Django's client-side binding cursor (arrays quoted into the SQL)."""
    from django.test.utils import CaptureQueriesContext

    capture = CaptureQueriesContext(connections[store.database()])
    with capture if logged else contextlib.nullcontext():
        append_groups_as_stored()
    if logged:
        assert all(isinstance(query["sql"], str) for query in capture.captured_queries)


def append_groups_as_stored() -> None:
    from decimal import Decimal

    values = [{"n": 1}, None, [1, "two"], "text", 3.5, {"deep": {"list": [True, None]}}]
    values += ['q"uo{te},\\', {"k,}": '{"a": [1, 2]}'}]  # what array quoting must escape
    for _ in range(7):  # psycopg prepares a statement on its fifth run (prepare_threshold)
        with transaction.atomic():
            rows = store.append_group(
                [("g:a" if n % 2 else "g:b", f"e{n}", value) for n, value in enumerate(values)]
            )
        for row in rows:
            stored = Event.objects.get(pk=row.pk)
            assert (stored.stream.name, stored.seq, stored.event, stored.data, stored.ts) == (
                row.stream.name, row.seq, row.event, row.data, row.ts,
            )  # fmt: skip
            assert not row._state.adding
    each = list(range(1, len(values) // 2 * 7 + 1))
    assert seqs("g:a") == each and seqs("g:b") == each
    with transaction.atomic():
        (row,) = store.append_group([("g:a", "dec", {"d": Decimal("1.10")})])
    assert Event.objects.get(pk=row.pk).data == {"d": "1.10"}  # DjangoJSONEncoder, as save()


def test_the_statements_cursor_is_kept_and_still_seen_by_django_tooling():
    """On PostgreSQL the append runs on one cursor kept per connection, and a new connection
    gets a new cursor; ``execute_wrapper`` sees every statement, and query capture
    (``assertNumQueries``, ``DEBUG``) every statement with its SQL, on Django's own cursor.
    Elsewhere it is Django's own cursor, every time."""
    from django.test.utils import CaptureQueriesContext

    from realtime.storage.statements import cursor_for

    realtime.publish("kept", "e")
    db = connections[store.database()]
    with cursor_for(db) as first, cursor_for(db) as second:
        assert (first is second) is (db.vendor == "postgresql")
    for _ in range(7):  # past psycopg's prepare threshold, where one is set
        realtime.publish("prepared", "e")
    with CaptureQueriesContext(connection) as captured:
        assert realtime.publish("kept", "e").seq == 2
        assert realtime.publish("prepared", "e").seq == 8
    # Logged with their SQL: while queries are logged the statements run on Django's cursor
    # (on PostgreSQL one statement a publish; psycopg's prepared ones had no SQL text).
    logged = [query["sql"] for query in captured.captured_queries]
    assert all(isinstance(sql, str) for sql in logged), logged
    assert len([sql for sql in logged if "realtime_event" in sql]) == 2, logged
    if db.vendor == "postgresql":
        assert len(logged) == 2, logged
    seen: list[str] = []

    def wrapper(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        assert realtime.publish("kept", "e").seq == 3
    assert any("realtime_event" in sql for sql in seen)
    connection.close()
    assert realtime.publish("kept", "e").seq == 4  # on a new connection, with a new cursor
    assert seqs("kept") == [1, 2, 3, 4]


def assert_published_as_loaded(name: str) -> None:
    """``publish`` builds the returned ``Event`` and ``Stream`` from what its statement
    returned (on PostgreSQL the time as microseconds): the ORM loads the same from the row."""
    db = connections[store.database()]
    db.close()  # the session's time zone is set when a connection opens
    for n in range(7):  # past psycopg's prepare threshold
        stored = realtime.publish(name, "e", {"n": n})
        loaded = Event.objects.select_related("stream").get(pk=stored.pk)
        assert (stored.seq, stored.event, stored.data, stored.ts) == (
            loaded.seq, loaded.event, loaded.data, loaded.ts,
        )  # fmt: skip
        assert (stored.ts.tzinfo is None) is (loaded.ts.tzinfo is None)
        if loaded.ts.tzinfo is not None:
            assert stored.ts.utcoffset() == loaded.ts.utcoffset()
        assert stored.stream == loaded.stream and stored.stream_id == loaded.stream_id
        assert not stored._state.adding and stored._state.db == db.alias
    # The stream's creation time was not read: it loads when used, as with ``only()``.
    assert stored.stream.get_deferred_fields() == {"created_at"}
    assert stored.stream.created_at == loaded.stream.created_at


def test_a_published_event_is_what_the_orm_loads(settings):
    from realtime.storage.statements import EVENT_FIELDS, STREAM_FIELDS

    assert tuple(f.attname for f in Event._meta.concrete_fields) == EVENT_FIELDS
    assert tuple(f.attname for f in Stream._meta.concrete_fields) == STREAM_FIELDS
    assert_published_as_loaded("orm")
    settings.USE_TZ, settings.TIME_ZONE = False, "America/New_York"  # naive, local times
    assert_published_as_loaded("orm:naive")
    assert realtime.publish("orm:naive", "e").ts.tzinfo is None


def retime() -> None:
    """What Django does when the time zone setting changes: forget the connections' cached
    zone and close the pool, whose connections have their session's zone set."""
    from django.test.signals import update_connections_time_zone

    update_connections_time_zone(setting="USE_TZ")


@pytest.mark.postgresql
def test_a_published_event_is_what_the_orm_loads_in_the_database_time_zone():
    """A database ``TIME_ZONE`` (PostgreSQL's session time zone): aware times in that zone."""
    db = connections[store.database()]
    before, db.settings_dict["TIME_ZONE"] = db.settings_dict["TIME_ZONE"], "Asia/Kolkata"
    try:
        retime()
        assert_published_as_loaded("orm:kolkata")
        assert realtime.publish("orm:kolkata", "e").ts.utcoffset() == timedelta(hours=5, minutes=30)
    finally:
        db.settings_dict["TIME_ZONE"] = before
        retime()


def test_concurrent_publishers_get_gapless_unique_seqs():
    """Many threads, each with its own database connection, publish to one stream at once."""
    threads, per_thread = 8, 25
    start = threading.Barrier(threads)

    def work(worker: int) -> list[int]:
        try:
            start.wait(timeout=10)
            return [
                realtime.publish("busy", "tick", {"w": worker, "i": i}).seq
                for i in range(per_thread)
            ]
        finally:
            connection.close()

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(work, range(threads)))
    allocated = sorted(seq for result in results for seq in result)
    assert allocated == list(range(1, threads * per_thread + 1))
    assert seqs("busy") == allocated
    for result in results:  # each publisher saw its own seqs increase
        assert result == sorted(result)
    # Timestamps follow seqs: the row lock orders the transactions.
    stamps = list(
        Event.objects.filter(stream__name="busy").order_by("seq").values_list("ts", flat=True)
    )
    assert stamps == sorted(stamps)


def test_rolled_back_seq_is_reused():
    realtime.publish("r", "e")
    with pytest.raises(RuntimeError), transaction.atomic():
        realtime.publish("r", "e")
        raise RuntimeError("roll back")
    assert realtime.publish("r", "e").seq == 2
    assert seqs("r") == [1, 2]


def test_max_events_is_exact(settings):
    settings.REALTIME = {"RETENTION": {"capped:*": {"max_events": 3}, "*": {}}}
    for _ in range(10):
        realtime.publish("capped:1", "e")
    realtime.publish("other", "e")
    assert seqs("capped:1") == [8, 9, 10]
    assert Stream.objects.get(name="capped:1").trimmed_seq == 7
    assert seqs("other") == [1]


def test_max_events_holds_under_racing_publishers(settings):
    """A cap smaller than the publishers racing on one stream: each append trims in its own
    statement, whose snapshot misses the events committed while it waited for the row lock;
    those are trimmed too, so the stream never keeps more than its cap, nor any event at or
    below its trimmed seq (on PostgreSQL, where the trim is part of the append statement)."""
    settings.REALTIME = {"RETENTION": {"*": {"max_events": 2}}}
    threads, per_thread = 8, 25
    start = threading.Barrier(threads)

    def work(worker: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(per_thread):
                realtime.publish("race", "tick", {"w": worker, "i": i})
        finally:
            connection.close()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    total = threads * per_thread
    assert seqs("race") == [total - 1, total]
    assert Stream.objects.get(name="race").trimmed_seq == total - 2


def test_max_events_applies_at_once_when_tightened_and_inside_a_transaction(settings):
    for _ in range(6):
        realtime.publish("tight", "e")
    settings.REALTIME = {"RETENTION": {"*": {"max_events": 2}}}
    with transaction.atomic():
        assert realtime.publish("tight", "e").seq == 7  # trims 1..5 in its own statement
        assert seqs("tight") == [6, 7]
        realtime.publish("tight", "e")
    assert seqs("tight") == [7, 8]
    assert Stream.objects.get(name="tight").trimmed_seq == 6


def test_max_events_zero_keeps_only_the_position(settings):
    settings.REALTIME = {"RETENTION": {"*": {"max_events": 0}}}
    assert realtime.publish("z", "e").seq == 1
    assert realtime.publish("z", "e").seq == 2
    assert seqs("z") == []
    stream = Stream.objects.get(name="z")
    assert (stream.last_seq, stream.trimmed_seq) == (2, 2)


def test_prune_by_age_keeps_a_gapless_suffix(settings):
    settings.REALTIME = {"RETENTION": {"old:*": {"max_age": 60}}}
    for _ in range(6):
        realtime.publish("old:1", "e")
    realtime.publish("young", "e")
    past = timezone.now() - timedelta(minutes=5)
    Event.objects.filter(stream__name="old:1", seq__in=[1, 2, 4]).update(ts=past)
    Event.objects.filter(stream__name="young").update(ts=past)
    assert store.prune() == 4  # 1..4: seq 3 goes too, so history stays contiguous
    assert seqs("old:1") == [5, 6]
    assert Stream.objects.get(name="old:1").trimmed_seq == 4
    assert seqs("young") == [1]  # no rule matches: kept


def test_prune_applies_tightened_max_events(settings):
    for _ in range(5):
        realtime.publish("t", "e")
    settings.REALTIME = {"RETENTION": {"*": {"max_events": 2}}}
    assert store.prune() == 3
    assert seqs("t") == [4, 5]


def test_reset_starts_a_new_epoch():
    realtime.publish("x", "e")
    realtime.publish("x", "e")
    before = Stream.objects.get(name="x").epoch
    info = realtime.reset("x")
    assert info.epoch != before and info.last_seq == 0
    assert seqs("x") == []
    assert realtime.publish("x", "e").seq == 1


def test_read_returns_rows_then_position():
    for n in range(5):
        realtime.publish("p", "e", n)
    rows, info = store.read("p", 2, 2)
    assert [r.seq for r in rows] == [3, 4]
    assert [r.data for r in rows] == [2, 3]
    assert info is not None and info.last_seq == 5
    assert store.read("missing", 0, 10) == ([], None)
    assert store.stream_info("missing") is None
    assert store.position("missing") == store.missing("missing")
    assert store.position("missing").last_seq == 0
    assert not Stream.objects.filter(name="missing").exists()
