"""``bulk_create`` with conflicts publishes what it did (``realtime.live.upserts``), on SQLite
and PostgreSQL: ``created`` for the rows inserted, ``updated`` (and ``deleted`` to the streams
left) for the rows an upsert changed, each with the row as stored, in the writing transaction.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction

from realtime import live
from tests.live_capture.models import Board, Label
from tests.live_capture.published import events, forget, stored

pytestmark = pytest.mark.django_db

UPSERT: dict[str, Any] = {
    "update_conflicts": True,
    "unique_fields": ["code"],
    "update_fields": ["name", "board"],
}


def options() -> live.LiveModel:
    found = live.get(Label)
    assert found is not None
    return found


def payload(code: str) -> Any:
    return options().payload(Label.objects.get(code=code))


def test_ignore_conflicts_publishes_created_for_the_rows_inserted() -> None:
    board = Board.objects.create(name="b")
    Label.objects.create(code="a", name="old")
    forget()
    made = Label.objects.bulk_create(
        [Label(code="a", name="dup"), Label(code="b", board=board), Label(code="c", rank=4)],
        ignore_conflicts=True,
        batch_size=2,  # two statements, the second of one row
    )
    assert len(made) == 3
    assert stored("labels") == [
        (1, "label.created", payload("b")),
        (2, "label.created", payload("c")),
    ]
    assert payload("c")["rank"] == 4
    assert events(f"boards:{board.pk}:labels") == ["label.created"]
    assert Label.objects.get(code="a").name == "old"
    # Nothing inserted, nothing published.
    Label.objects.bulk_create([Label(code="a"), Label(code="b")], ignore_conflicts=True)
    assert len(stored("labels")) == 2


def test_update_conflicts_publishes_created_and_updated_as_stored_with_moves() -> None:
    one, two = Board.objects.create(name="one"), Board.objects.create(name="two")
    old = Label.objects.create(code="a", name="old", board=one, rank=5)
    forget()
    made = Label.objects.bulk_create(
        [Label(code="a", name="new", board=two, rank=0), Label(code="b", board=one)], **UPSERT
    )
    assert [label.pk for label in made] == [old.pk, Label.objects.get(code="b").pk]
    assert stored("labels") == [
        (1, "label.updated", payload("a")),
        (2, "label.created", payload("b")),
    ]
    # The row as stored: rank is not in update_fields, so the row keeps 5 (the object says 0).
    assert (payload("a")["name"], payload("a")["rank"]) == ("new", 5)
    assert stored(f"boards:{one.pk}:labels") == [
        (1, "label.deleted", {"id": old.pk, "board_id": one.pk}),
        (2, "label.created", payload("b")),
    ]
    assert events(f"boards:{two.pk}:labels") == ["label.updated"]


def test_update_conflicts_on_a_row_written_by_an_earlier_batch() -> None:
    """Each batch reads the rows as the earlier ones left them: one key twice, in two
    statements, is created, then updated (and moved)."""
    one, two = Board.objects.create(name="one"), Board.objects.create(name="two")
    forget()
    Label.objects.bulk_create(
        [Label(code="x", name="1", board=one), Label(code="x", name="2", board=two)],
        batch_size=1,
        **UPSERT,
    )
    pk = Label.objects.get().pk
    assert [(kind, data["name"]) for _, kind, data in stored("labels")] == [
        ("label.created", "1"),
        ("label.updated", "2"),
    ]
    assert stored(f"boards:{one.pk}:labels") == [
        (1, "label.created", {**payload("x"), "name": "1", "board": one.pk}),
        (2, "label.deleted", {"id": pk, "board_id": one.pk}),
    ]
    if connection.vendor == "sqlite":  # PostgreSQL refuses one key twice in a statement
        forget()
        Label.objects.bulk_create(
            [Label(code="y", name="1", board=one), Label(code="y", name="2", board=two)],
            **UPSERT,
        )
        assert events("labels") == ["label.created", "label.updated"]
        assert events(f"boards:{one.pk}:labels") == ["label.created", "label.deleted"]


def test_a_rollback_publishes_nothing_and_batches_take_the_changes() -> None:
    Label.objects.create(code="a")
    forget()
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        Label.objects.bulk_create([Label(code="a", name="n"), Label(code="b")], **UPSERT)
        Label.objects.bulk_create([Label(code="c")], ignore_conflicts=True)
        1 / 0  # noqa: B018
    assert stored("labels") == [] and Label.objects.count() == 1
    with live.batch():
        Label.objects.bulk_create([Label(code="a", name="n"), Label(code="b")], **UPSERT)
        Label.objects.bulk_create([Label(code="b"), Label(code="c")], ignore_conflicts=True)
    ((seq, kind, data),) = stored("labels")
    assert (seq, kind) == (1, "label.batch")
    assert [(c["event"], c["data"]["code"]) for c in data["changes"]] == [
        ("label.updated", "a"),
        ("label.created", "b"),
        ("label.created", "c"),
    ]
