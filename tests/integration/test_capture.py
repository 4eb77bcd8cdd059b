"""The ORM paths without signals publish (``realtime.live.capture``), on SQLite and PostgreSQL.

Each path is compared with what a ``save()``/``delete()`` publishes: the same event types, the
same payloads (``live.payload`` of the row read back), moves between streams, in the writing
transaction (a rollback publishes nothing), with gapless seqs in commit order.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction

from realtime import live
from realtime.models import Event, Stream
from tests.live_capture.models import Board, Card, Note, Quiet
from tests.live_capture.published import events, stored

pytestmark = pytest.mark.django_db


def payload(card: Card) -> Any:
    options = live.get(Card)
    assert options is not None
    return options.payload(Card.objects.get(pk=card.pk))


def cards(board: Board | None, n: int, **fields: Any) -> list[Card]:
    made = [Card.objects.create(title=f"c{i}", board=board, **fields) for i in range(n)]
    Event.objects.all().delete()
    Stream.objects.all().delete()
    return made


def test_update_publishes_updated_per_row_with_the_rows_as_saved() -> None:
    board = Board.objects.create(name="b")
    made = cards(board, 3)
    due = dt.datetime(2026, 12, 6, 21, 0, 0, 123456, tzinfo=dt.UTC)
    count = Card.objects.filter(pk__in=[c.pk for c in made[:2]]).update(
        done=True, price=Decimal("12.50"), due=due
    )
    assert count == 2
    assert stored("cards") == [
        (1, "card.updated", payload(made[0])),
        (2, "card.updated", payload(made[1])),
    ]
    assert stored("cards")[0][2]["due"] == "2026-12-06T21:00:00.123Z"
    assert stored("cards")[0][2]["price"] == "12.50"
    assert events(f"cards:{made[0].pk}") == ["card.updated"]
    assert events(f"cards:{made[2].pk}") == []
    assert events(f"boards:{board.pk}:cards") == ["card.updated", "card.updated"]
    # What a save() publishes for the same row is the same event.
    made[2].refresh_from_db()
    made[2].save()
    assert stored("cards")[-1][1:] == ("card.updated", payload(made[2]))
    assert Card.objects.filter(title="nothing").update(done=True) == 0


def test_update_that_moves_rows_tells_the_streams_they_left() -> None:
    one, two = Board.objects.create(name="one"), Board.objects.create(name="two")
    made = cards(one, 2)
    Card.objects.filter(board=one).update(board=two)
    assert stored(f"boards:{one.pk}:cards") == [
        (1, "card.deleted", {"id": made[0].pk, "board_id": one.pk}),
        (2, "card.deleted", {"id": made[1].pk, "board_id": one.pk}),
    ]
    assert events(f"boards:{two.pk}:cards") == ["card.updated", "card.updated"]
    assert stored("cards")[0][2]["board"] == two.pk


def test_bulk_create_and_bulk_update_publish_like_saves() -> None:
    board = Board.objects.create(name="b")
    made = Card.objects.bulk_create(
        [Card(title=f"n{i}", board=board, uid=uuid.UUID(int=i)) for i in range(3)]
    )
    assert [(seq, kind) for seq, kind, _ in stored("cards")] == [
        (1, "card.created"),
        (2, "card.created"),
        (3, "card.created"),
    ]
    assert [data["uid"] for _, _, data in stored("cards")] == [
        str(uuid.UUID(int=i)) for i in range(3)
    ]
    assert events(f"cards:{made[1].pk}") == ["card.created"]
    other = Board.objects.create(name="other")
    for card in made:
        card.rank = 7
    made[0].board = other
    Card.objects.bulk_update(made, ["rank", "board"])
    updated = stored("cards")[3:]
    assert [(kind, data["rank"]) for _, kind, data in updated] == [("card.updated", 7)] * 3
    assert (
        events(f"boards:{board.pk}:cards")
        == ["card.created"] * 3 + ["card.deleted"] + ["card.updated"] * 2
    )
    assert events(f"boards:{other.pk}:cards") == ["card.updated"]


def test_on_delete_set_null_set_default_and_cascade() -> None:
    board, shelf = Board.objects.create(name="b"), Board.objects.create(name="shelf")
    (card,) = cards(board, 1, shelf=shelf)
    board_pk = board.pk
    Note.objects.create(card=card, text="n")
    Event.objects.all().delete()
    shelf.delete()  # SET_DEFAULT: the collector loads the rows, then update_batch
    assert stored(f"cards:{card.pk}") == [(1, "card.updated", payload(card))]
    assert payload(card)["shelf"] is None
    board.delete()  # SET_NULL: a queryset update(); the card leaves the board's stream
    assert events(f"cards:{card.pk}") == ["card.updated", "card.updated"]
    assert stored(f"boards:{board_pk}:cards")[-1][1:] == (
        "card.deleted",
        {"id": card.pk, "board_id": board_pk},
    )
    note = Note.objects.get()
    Card.objects.filter(pk=card.pk).delete()  # CASCADE: post_delete of each row
    assert stored(f"notes:{card.pk}")[-1][1:] == (
        "note.deleted",
        {"id": note.pk, "card_id": card.pk},
    )
    assert events(f"cards:{card.pk}")[-1] == "card.deleted"


def test_get_or_create_and_update_or_create() -> None:
    card, created = Card.objects.get_or_create(title="g")
    assert created and events("cards") == ["card.created"]
    Card.objects.get_or_create(title="g")
    Card.objects.update_or_create(title="g", defaults={"rank": 3})
    assert events("cards") == ["card.created", "card.updated"]
    assert stored("cards")[-1][2] == payload(card)


def test_a_rollback_publishes_nothing_and_seqs_stay_gapless() -> None:
    (card,) = cards(None, 1)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        Card.objects.update(rank=1)
        Card.objects.bulk_create([Card(title="gone")])
        1 / 0  # noqa: B018
    with transaction.atomic():
        try:
            with transaction.atomic():
                Card.objects.update(rank=2)
                1 / 0  # noqa: B018
        except ZeroDivisionError:
            pass
        Card.objects.update(rank=3)
        card.title = "saved"
        card.save()
        Card.objects.bulk_create([Card(title="kept")])
    assert [(seq, kind) for seq, kind, _ in stored("cards")] == [
        (1, "card.updated"),
        (2, "card.updated"),
        (3, "card.created"),
    ]
    assert (stored("cards")[0][2]["rank"], stored("cards")[1][2]["title"]) == (3, "saved")


def test_inside_a_batch_the_captured_changes_join_it() -> None:
    made = cards(None, 2)
    with live.batch():
        Card.objects.update(done=True)
        Card.objects.bulk_create([Card(title="b")])
    ((_, kind, data),) = stored("cards")
    assert kind == "card.batch"
    assert [(c["event"], c["data"]["title"]) for c in data["changes"]] == [
        ("card.updated", made[0].title),
        ("card.updated", made[1].title),
        ("card.created", "b"),
    ]


def test_capture_off_and_models_that_are_not_live() -> None:
    Quiet.objects.create()
    Quiet.objects.update(n=2)
    Quiet.objects.bulk_create([Quiet(n=3)])
    assert events("quiet") == ["quiet.created"]  # the save; update and bulk_create: nothing
    Group.objects.bulk_create([Group(name="g")])
    assert Group.objects.update(name="h") == 1
    assert not Event.objects.exclude(stream__name="quiet").exists()


def test_many_rows_use_few_statements(django_assert_max_num_queries: Any) -> None:
    """PostgreSQL bumps all the streams in one statement; SQLite one ``UPDATE`` each (here a
    stream per row: ``cards:{pk}``), still with no query per event."""
    Card.objects.bulk_create([Card(title=f"m{i}") for i in range(2500)])
    assert len(stored("cards")) == 2500 and stored("cards")[-1][0] == 2500
    per_stream = 0 if connection.vendor == "postgresql" else 2501
    with django_assert_max_num_queries(60 + per_stream):
        assert Card.objects.update(rank=5) == 2500
    assert stored("cards")[-1][:2] == (5000, "card.updated")


def test_the_setting_turns_capture_off_per_model(settings: Any) -> None:
    """``LIVE_CAPTURE_OFF``: bulk writes publish nothing, from Python or (PostgreSQL) the
    trigger; saves still do."""
    settings.REALTIME = {**settings.REALTIME, "LIVE_CAPTURE_OFF": ["live_capture.Card"]}
    Card.objects.bulk_create([Card(title="a")])
    Card.objects.update(rank=1)
    assert events("cards") == []
    Card.objects.create(title="saved")
    assert events("cards") == ["card.created"]
    settings.REALTIME = {**settings.REALTIME, "LIVE_CAPTURE_OFF": []}
    Card.objects.update(rank=2)
    assert events("cards") == ["card.created", "card.updated", "card.updated"]


def test_update_through_an_outer_join_and_distinct() -> None:
    """The rows are locked ``FOR UPDATE OF`` their own table: PostgreSQL refuses to lock the
    nullable side of the outer join that ``board__name__isnull`` makes, and DISTINCT."""
    board = Board.objects.create(name="b")
    made = cards(None, 2) + cards(board, 1)
    assert Card.objects.filter(board__name__isnull=True).distinct().update(rank=4) == 2
    assert [data["id"] for _, _, data in stored("cards")] == [made[0].pk, made[1].pk]
