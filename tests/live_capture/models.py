"""Live models of the capture tests (``tests/integration/test_capture.py``,
``tests/e2e/test_capture.py``)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db import models

from realtime import live


def members(user: Any, stream: str, obj: Any) -> bool:
    """Signed-in users whose name is not ``outsider`` (a per-user rule to keep working)."""
    return bool(user.is_authenticated and user.username != "outsider")


class Board(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        ordering = ["id"]


@live.register(
    streams=["cards", "cards:{pk}", "boards:{board_id}:cards"],
    fields=["id", "title", "board", "shelf", "price", "due", "day", "uid", "meta", "done", "rank"],
    snapshot=True,
    can_subscribe=members,
)
class Card(models.Model):
    title = models.CharField(max_length=100)
    board = models.ForeignKey(Board, null=True, on_delete=models.SET_NULL, related_name="cards")
    shelf = models.ForeignKey(
        Board, null=True, blank=True, default=None, on_delete=models.SET_DEFAULT, related_name="+"
    )
    price = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0.00"))
    due = models.DateTimeField(null=True, blank=True)
    day = models.DateField(null=True, blank=True)
    uid = models.UUIDField(default=uuid.uuid4)
    meta = models.JSONField(default=dict, blank=True)
    done = models.BooleanField(default=False)
    rank = models.IntegerField(default=0)

    class Meta:
        ordering = ["id"]


@live.register(streams=["notes:{card_id}"], fields=["id", "text", "card"])
class Note(models.Model):
    card = models.ForeignKey(Card, on_delete=models.CASCADE, related_name="notes")
    text = models.CharField(max_length=100)

    class Meta:
        ordering = ["id"]


@live.register(streams=["quiet"], fields=["id", "n"], capture=False)
class Quiet(models.Model):
    """``capture=False``: only saves and deletes publish, as with Django's signals alone."""

    n = models.IntegerField(default=0)


@live.register(
    streams=["labels", "boards:{board_id}:labels"], fields=["id", "code", "name", "board", "rank"]
)
class Label(models.Model):
    """A unique ``code``: ``bulk_create(ignore_conflicts=...)`` and ``update_conflicts``."""

    code = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=50, default="")
    board = models.ForeignKey(Board, null=True, on_delete=models.SET_NULL, related_name="+")
    rank = models.IntegerField(default=0)


class Place(models.Model):
    """Not live; its multi-table child ``Shop`` is."""

    name = models.CharField(max_length=50)
    board = models.ForeignKey(Board, null=True, on_delete=models.SET_NULL, related_name="+")


@live.register(
    streams=["shops", "boards:{board_id}:shops"], fields=["id", "name", "board", "stock"]
)
class Shop(Place):
    stock = models.IntegerField(default=0)


@live.register(streams=["venues", "boards:{board_id}:venues"], fields=["id", "name", "board"])
class Venue(models.Model):
    """Live; its multi-table child ``Stage`` is not."""

    name = models.CharField(max_length=50)
    board = models.ForeignKey(Board, null=True, on_delete=models.SET_NULL, related_name="+")


class Stage(Venue):
    seats = models.IntegerField(default=0)


class LabelProxy(Label):
    """A proxy of the live ``Label`` with no registration of its own: it publishes as
    ``Label`` (the same table, the same rows)."""

    class Meta:
        proxy = True
