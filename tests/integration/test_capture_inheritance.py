"""Multi-table inheritance: a write through one model changes the rows of a live relative,
which publishes as a ``save()`` of it would (``realtime.live.capture``), on SQLite and
PostgreSQL. ``Shop`` is a live child of ``Place``; ``Venue`` a live parent of ``Stage``."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from realtime import live
from tests.live_capture.models import Board, Place, Shop, Stage, Venue
from tests.live_capture.published import events, forget, stored

pytestmark = pytest.mark.django_db


def options(model: Any) -> live.LiveModel:
    found = live.get(model)
    assert found is not None
    return found


def payload(obj: Any) -> Any:
    return options(type(obj)).payload(type(obj).objects.get(pk=obj.pk))


def keys(model: Any, obj: Any) -> Any:
    return options(model).key_payload(obj)


def test_update_through_the_parent_publishes_the_live_child() -> None:
    one, two = Board.objects.create(name="one"), Board.objects.create(name="two")
    shop = Shop.objects.create(name="s", board=one, stock=3)
    Place.objects.create(name="p", board=one)  # a place that is no shop
    forget()
    assert Place.objects.filter(board=one).update(name="renamed", board=two) == 2
    assert stored("shops") == [(1, "shop.updated", payload(shop))]
    assert payload(shop)["name"] == "renamed" and payload(shop)["stock"] == 3
    assert stored(f"boards:{one.pk}:shops") == [(1, "shop.deleted", keys(Shop, shop))]
    assert events(f"boards:{two.pk}:shops") == ["shop.updated"]
    # bulk_update runs update(); on_delete=SET_NULL on the parent's foreign key too.
    place = Place.objects.get(pk=shop.pk)
    place.name = "bulk"
    Place.objects.bulk_update([place], ["name"])
    assert stored("shops")[-1] == (2, "shop.updated", payload(shop))
    shop.refresh_from_db()
    two_pk = two.pk
    two.delete()
    assert stored("shops")[-1] == (3, "shop.updated", payload(shop))
    assert payload(shop)["board"] is None
    assert events(f"boards:{two_pk}:shops") == ["shop.updated", "shop.updated", "shop.deleted"]


def test_update_through_the_child_publishes_the_live_parent() -> None:
    one, two = Board.objects.create(name="one"), Board.objects.create(name="two")
    stage = Stage.objects.create(name="st", board=one, seats=10)
    Venue.objects.create(name="v", board=one)  # a venue that is no stage
    forget()
    assert Stage.objects.update(name="renamed", board=two) == 1  # the parent's columns
    venue = Venue.objects.get(pk=stage.pk)
    assert stored("venues") == [(1, "venue.updated", payload(venue))]
    assert payload(venue)["name"] == "renamed"
    assert stored(f"boards:{one.pk}:venues") == [(1, "venue.deleted", keys(Venue, stage))]
    assert events(f"boards:{two.pk}:venues") == ["venue.updated"]
    Stage.objects.update(seats=5)  # the child's own column: the venue's row is unchanged
    assert len(stored("venues")) == 1


def test_a_rollback_publishes_nothing_for_the_relatives() -> None:
    shop = Shop.objects.create(name="s")
    forget()
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        Place.objects.update(name="gone")
        1 / 0  # noqa: B018
    with transaction.atomic():
        Place.objects.update(name="kept")
    assert stored("shops") == [(1, "shop.updated", payload(shop))]
    assert payload(shop)["name"] == "kept"


def test_deletes_and_bulk_create_need_nothing_more() -> None:
    """Django's collector deletes a parent's child rows and a child's parent rows, sending
    ``post_delete`` for each; and it refuses a multi-table child's ``bulk_create``."""
    shop = Shop.objects.create(name="s")
    stage = Stage.objects.create(name="st")
    forget()
    Place.objects.filter(pk=shop.pk).delete()
    assert stored("shops") == [(1, "shop.deleted", keys(Shop, shop))]
    Stage.objects.all().delete()
    assert stored("venues") == [(1, "venue.deleted", keys(Venue, stage))]
    assert not Venue.objects.exists()
    with pytest.raises(ValueError, match="multi-table"):
        Shop.objects.bulk_create([Shop(name="bulk")])
