"""PostgreSQL capture triggers (``realtime.live.triggers``): raw SQL publishes like ``save()``.

Installed by ``tests/live_capture/migrations/0002_capture_card_note.py``, which
``manage.py realtime_capture_triggers live_capture`` wrote. PostgreSQL only: SQLite has no
procedural triggers, and the migration is a no-op there (checked below).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from realtime import live
from realtime.live import triggers
from realtime.models import Event, Stream
from realtime.storage import epochs
from tests.live_capture.models import Board, Card, Note

on_postgresql = pytest.mark.postgresql  # capture triggers are PostgreSQL's


def stored(stream: str) -> list[tuple[int, str, Any]]:
    rows = Event.objects.filter(stream__name=stream).order_by("seq")
    return [(e.seq, e.event, e.data) for e in rows]


def sql(statement: str, params: list[Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def installed() -> list[str]:
    return [
        name
        for (name,) in sql(
            "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = %s ORDER BY 1",
            [triggers.TRIGGER],
        )
    ]


@on_postgresql
@pytest.mark.django_db
def test_raw_sql_publishes_what_save_would_with_the_same_payload() -> None:
    board = Board.objects.create(name="b")
    card = Card.objects.create(
        title="typed",
        board=board,
        price=Decimal("1234.50"),
        due=dt.datetime(2026, 12, 6, 21, 0, 0, 123789, tzinfo=dt.UTC),
        day=dt.date(2026, 2, 3),
        uid=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        meta={"tags": ["a", "b"], "n": 1.5, "nested": {"ok": True}},
        rank=-3,
    )
    card.refresh_from_db()
    card.save()  # the Python path's updated event, of the row as the database holds it
    python = stored("cards")[-1][2]
    sql("UPDATE live_capture_card SET title = title WHERE id = %s", [card.pk])
    seq, kind, trigger = stored("cards")[-1]
    assert (seq, kind) == (3, "card.updated")
    assert trigger == python
    assert trigger["due"] == "2026-12-06T21:00:00.123Z" and trigger["price"] == "1234.50"
    # A datetime without a fraction of a second has none in either path.
    Card.objects.filter(pk=card.pk).update(due=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    python = stored("cards")[-1][2]
    sql("UPDATE live_capture_card SET rank = rank WHERE id = %s", [card.pk])
    assert stored("cards")[-1][2] == python and python["due"] == "2026-01-01T00:00:00Z"
    options = live.get(Card)
    assert options is not None and python == options.payload(Card.objects.get(pk=card.pk))


@on_postgresql
@pytest.mark.django_db
def test_insert_move_delete_and_cascade_by_raw_sql() -> None:
    one, two = Board.objects.create(name="one"), Board.objects.create(name="two")
    (pk,) = sql(
        "INSERT INTO live_capture_card (title, board_id, price, uid, meta, done, rank)"
        " VALUES ('raw', %s, 0, gen_random_uuid(), '{}', false, 0) RETURNING id",
        [one.pk],
    )[0]
    assert [kind for _, kind, _ in stored("cards")] == ["card.created"]
    assert stored(f"cards:{pk}")[0][2]["title"] == "raw"
    sql("INSERT INTO live_capture_note (card_id, text) VALUES (%s, 'n')", [pk])
    sql("UPDATE live_capture_card SET board_id = %s WHERE id = %s", [two.pk, pk])
    assert stored(f"boards:{one.pk}:cards")[-1][1:] == (
        "card.deleted",
        {"id": pk, "board_id": one.pk},
    )
    assert stored(f"boards:{two.pk}:cards")[-1][1] == "card.updated"
    note = Note.objects.get()
    sql("DELETE FROM live_capture_note WHERE id = %s", [note.pk])
    sql("DELETE FROM live_capture_card WHERE id = %s", [pk])
    assert stored(f"notes:{pk}")[-1][1:] == ("note.deleted", {"id": note.pk, "card_id": pk})
    assert [kind for _, kind, _ in stored(f"cards:{pk}")] == [
        "card.created",
        "card.updated",
        "card.deleted",
    ]
    # Seqs are gapless whoever wrote: a save follows the trigger's events.
    Card.objects.create(title="orm")
    assert [seq for seq, _, _ in stored("cards")] == [1, 2, 3, 4]


@on_postgresql
@pytest.mark.django_db
def test_orm_writes_are_published_once_and_raw_sql_after_them_too() -> None:
    with transaction.atomic():
        card = Card.objects.create(title="orm")
        Card.objects.filter(pk=card.pk).update(rank=1)
        sql("UPDATE live_capture_card SET rank = 2 WHERE id = %s", [card.pk])
        card.delete()
    assert [(kind, data.get("rank")) for _, kind, data in stored("cards")] == [
        ("card.created", 0),
        ("card.updated", 1),
        ("card.updated", 2),
        ("card.deleted", None),
    ]


@on_postgresql
@pytest.mark.django_db
def test_a_rollback_takes_the_triggers_events_and_new_streams_carry_over() -> None:
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        sql(
            "INSERT INTO live_capture_card (title, price, uid, meta, done, rank)"
            " VALUES ('gone', 0, gen_random_uuid(), '{}', false, 0)"
        )
        1 / 0  # noqa: B018
    assert not Event.objects.exists() and not Stream.objects.exists()
    sql(
        "INSERT INTO live_capture_card (title, price, uid, meta, done, rank)"
        " VALUES ('kept', 0, gen_random_uuid(), '{}', false, 0)"
    )
    stream = Stream.objects.get(name="cards")
    # A subscriber told the creation epoch before the stream existed resumes exactly.
    held = epochs.creation_epoch("cards")
    assert epochs.carries_over("cards", held, 0, stream.epoch, 0)
    assert stream.epoch != held  # md5 (SQL), not blake2b: both are creation epochs


@on_postgresql
@pytest.mark.django_db
def test_bad_rows_fail_the_write_with_a_clear_error(settings: Any) -> None:
    from django.db import DataError, InternalError, ProgrammingError

    refused = pytest.raises((DataError, InternalError, ProgrammingError), match="MAX_EVENT_SIZE")
    with refused, transaction.atomic():
        sql(
            "INSERT INTO live_capture_card (title, price, uid, meta, done, rank)"
            " VALUES ('big', 0, gen_random_uuid(), %s, false, 0)",
            ['{"x": "' + "y" * 70000 + '"}'],
        )
    assert not Card.objects.exists() and not Event.objects.exists()


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_the_migration_installs_and_removes_the_triggers() -> None:
    assert installed() == ["live_capture_card", "live_capture_note"]
    call_command("migrate", "live_capture", "0001", verbosity=0)
    try:
        assert installed() == []
        assert not sql("SELECT 1 FROM pg_proc WHERE proname LIKE 'realtime_capture_live%%'")
        sql(
            "INSERT INTO live_capture_card (title, price, uid, meta, done, rank)"
            " VALUES ('unseen', 0, gen_random_uuid(), '{}', false, 0)"
        )
        assert not Event.objects.exists()
    finally:
        call_command("migrate", "live_capture", verbosity=0)
    assert installed() == ["live_capture_card", "live_capture_note"]
    sql("UPDATE live_capture_card SET rank = 1")
    assert [kind for _, kind, _ in stored("cards")] == ["card.updated"]


@pytest.mark.django_db
def test_the_generated_sql_and_what_it_refuses() -> None:
    from django.contrib.auth.models import Group
    from django.core.exceptions import ImproperlyConfigured

    options = live.get(Card)
    assert options is not None
    install, remove = triggers.sql(options)
    assert 'realtime_capture_ts(NEW."due")' in install and "DROP TRIGGER" in remove
    live.register(Group, streams=[lambda g: "groups"], fields=["id"])
    try:
        with pytest.raises(ImproperlyConfigured, match="callables"):
            triggers.sql(live.get(Group))  # type: ignore[arg-type]
    finally:
        live.unregister(Group)
    live.register(Group, streams=["groups"], fields=["id", "natural_key"])
    try:
        with pytest.raises(ImproperlyConfigured, match="not a column"):
            triggers.sql(live.get(Group))  # type: ignore[arg-type]
    finally:
        live.unregister(Group)
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType
    from django.test.utils import isolate_apps

    with isolate_apps("tests.live_capture"):  # a proxy model of this test's own, nowhere else

        class ProxyType(ContentType):
            class Meta:
                proxy = True
                app_label = "live_capture"

        live.register(ProxyType, streams=["types"], fields=["id"])
        try:
            with pytest.raises(ImproperlyConfigured, match="proxy"):
                triggers.sql(live.get(ProxyType))  # type: ignore[arg-type]
        finally:
            live.unregister(ProxyType)
    assert Permission  # a concrete model of its own table is fine:
    live.register(Permission, streams=["perms"], fields=["id", "codename"])
    try:
        assert "auth_permission" in triggers.sql(live.get(Permission))[0]  # type: ignore[arg-type]
    finally:
        live.unregister(Permission)
    if connection.vendor != "postgresql":  # the migration did nothing here
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")
            assert cursor.fetchone()[0] == 0


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_orm_writes_in_autocommit_mode_are_published_once() -> None:
    """Outside any transaction the ORM's setting must still cover its statements (each
    write opens its own atomic block for it), or the trigger would publish them again."""
    card = Card.objects.create(title="a")
    a = card.pk
    Card.objects.update(rank=1)
    (b,) = [made.pk for made in Card.objects.bulk_create([Card(title="b")])]
    Card.objects.filter(title="b").delete()
    card.delete()
    assert [(kind, data["id"]) for _, kind, data in stored("cards")] == [
        ("card.created", a),
        ("card.updated", a),
        ("card.created", b),
        ("card.deleted", b),
        ("card.deleted", a),
    ]


@on_postgresql
@pytest.mark.django_db
def test_a_trigger_that_no_longer_matches_its_registration_is_reported() -> None:
    from realtime.live.checks import check_capture_triggers

    assert check_capture_triggers(databases=["default"]) == []
    options = live.get(Card)
    assert options is not None
    fields = options.fields
    options.fields = fields[:-1]  # as if "rank" were removed from fields=[...]
    try:
        (warning,) = check_capture_triggers(databases=["default"])
    finally:
        options.fields = fields
    assert (warning.id, warning.obj) == ("realtime.W103", Card)
    assert "realtime_capture_triggers live_capture --model Card" in warning.hint
    assert check_capture_triggers(databases=None) == []  # not asked for databases
