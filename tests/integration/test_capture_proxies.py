"""Writes through a proxy of a live model, and saves through a multi-table relative of one,
publish as writes through the live model would (``realtime.live.receivers``): the rows are
the same rows. On SQLite and PostgreSQL. ``LabelProxy`` proxies the live ``Label``;
``Stage`` is a child of the live ``Venue``; ``Place`` the parent of the live ``Shop``."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from realtime import live
from tests.live_capture.models import Board, Label, LabelProxy, Place, Shop, Stage, Venue
from tests.live_capture.published import events, forget, stored

pytestmark = pytest.mark.django_db


def as_stored(model: Any, pk: Any) -> Any:
    """The payload ``model``'s registration gives its row ``pk`` as stored now."""
    options = live.get(model)
    assert options is not None
    return options.payload(model.objects.get(pk=pk))


def test_saves_updates_and_deletes_through_a_proxy_publish_as_the_live_model() -> None:
    one, two = Board.objects.create(name="one"), Board.objects.create(name="two")
    forget()
    label = LabelProxy.objects.create(code="a", name="A", board=one)
    assert stored("labels") == [(1, "label.created", as_stored(Label, label.pk))]
    assert events(f"boards:{one.pk}:labels") == ["label.created"]
    label.board = two  # a move: deleted from the stream it left
    label.save()
    assert events(f"boards:{one.pk}:labels") == ["label.created", "label.deleted"]
    assert events(f"boards:{two.pk}:labels") == ["label.updated"]
    assert LabelProxy.objects.filter(pk=label.pk).update(name="B") == 1
    assert stored("labels")[-1] == (3, "label.updated", as_stored(Label, label.pk))
    LabelProxy.objects.bulk_create([LabelProxy(code="b", board=two)])
    made = Label.objects.get(code="b")
    assert stored("labels")[-1] == (4, "label.created", as_stored(Label, made.pk))
    LabelProxy.objects.filter(pk=made.pk).delete()  # a queryset delete, no fast path
    label.delete()
    assert events("labels")[-2:] == ["label.deleted", "label.deleted"]
    assert events(f"boards:{two.pk}:labels")[-2:] == ["label.deleted", "label.deleted"]


def test_saves_through_a_child_publish_for_the_live_parent() -> None:
    one, two = Board.objects.create(name="one"), Board.objects.create(name="two")
    forget()
    stage = Stage.objects.create(name="st", board=one, seats=10)
    assert stored("venues") == [(1, "venue.created", as_stored(Venue, stage.pk))]
    stage.board, stage.name = two, "moved"
    stage.save()
    assert stored("venues")[-1] == (2, "venue.updated", as_stored(Venue, stage.pk))
    assert events(f"boards:{one.pk}:venues") == ["venue.created", "venue.deleted"]
    assert events(f"boards:{two.pk}:venues") == ["venue.updated"]
    with pytest.raises(RuntimeError), transaction.atomic():
        Stage.objects.create(name="gone", board=one)
        raise RuntimeError  # a rollback publishes nothing
    assert len(stored("venues")) == 2
    stage.delete()
    assert events("venues")[-1] == "venue.deleted"


def test_models_unrelated_to_live_ones_publish_nothing() -> None:
    forget()
    Board.objects.create(name="plain")  # saved through the same global receivers
    assert stored("labels") == stored("venues") == []


def test_saves_through_a_parent_publish_for_the_live_child() -> None:
    one, two = Board.objects.create(name="one"), Board.objects.create(name="two")
    shop = Shop.objects.create(name="s", board=one, stock=3)
    Place.objects.create(name="p", board=one)  # a place that is no shop: nothing
    forget()
    place = Place.objects.get(pk=shop.pk)
    place.name, place.board = "renamed", two
    place.save()
    assert stored("shops") == [(1, "shop.updated", as_stored(Shop, shop.pk))]
    assert as_stored(Shop, shop.pk)["name"] == "renamed" and as_stored(Shop, shop.pk)["stock"] == 3
    assert events(f"boards:{one.pk}:shops") == ["shop.deleted"]
    assert events(f"boards:{two.pk}:shops") == ["shop.updated"]
    with pytest.raises(RuntimeError), transaction.atomic():
        place.name = "gone"
        place.save()
        raise RuntimeError  # a rollback publishes nothing
    assert len(stored("shops")) == 1
    Place.objects.create(name="new", board=two)  # a new place has no shop yet
    assert len(stored("shops")) == 1
