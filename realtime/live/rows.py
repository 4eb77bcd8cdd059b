"""A live model's rows as the captured writes read them: locked, read in chunks, and the
events a ``save()`` of a changed row publishes (``realtime.live.capture``, ``.upserts``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.db import connections
from django.db.models import QuerySet

from realtime.live import batching
from realtime.live.options import LiveModel

# Rows per ``pk__in`` statement: under SQLite's oldest limit of bound parameters (999).
CHUNK = 900


def chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def read(live: LiveModel, using: str, pks: Sequence[Any]) -> list[Any]:
    """The rows of ``live``'s model with these pks, as the database holds them now."""
    base = live.model._base_manager.using(using)
    found: list[Any] = []
    for chunk in chunks(pks):
        found.extend(base.filter(pk__in=chunk).order_by("pk"))
    return found


def locked_pks(queryset: QuerySet[Any]) -> list[Any]:
    """The pks of ``queryset``'s rows, locked until the transaction ends. ``FOR UPDATE OF``
    the model's own table where the database has it: a filter across a nullable relation
    joins it with an outer join, whose nullable side PostgreSQL refuses to lock."""
    rows = queryset.order_by()
    rows.query.distinct = False  # FOR UPDATE refuses DISTINCT; the pks are distinct anyway
    features = connections[queryset.db].features
    of = ("self",) if features.has_select_for_update_of else ()
    return list(rows.select_for_update(of=of).values_list("pk", flat=True))


# What a row was before a save: its streams and its key payload (``was``).
Before = tuple[list[str], dict[str, Any]]


def was(live: LiveModel, old: Any) -> Before | None:
    """``old``'s streams and keys, taken while it is still the row as it was (None: not
    known, or the streams depend on the pk alone)."""
    return None if old is None else (live.streams_for(old), live.key_payload(old))


def saved(
    live: LiveModel, kind: str, row: Any, before: Before | None, using: str
) -> list[batching.Change]:
    """What a ``save()`` of ``row`` publishes: ``deleted`` to the streams it left since
    ``before``, then ``kind`` (``created``, ``updated``) to its own."""
    streams = live.streams_for(row)
    changes = []
    if before is not None:
        old_streams, old_keys = before
        left = [stream for stream in old_streams if stream not in streams]
        if left:
            changes.append(batching.Change(live, "deleted", left, old_keys, using))
    changes.append(batching.Change(live, kind, streams, live.payload(row), using))
    return changes


def updated(live: LiveModel, row: Any, old: Any, using: str) -> list[batching.Change]:
    """``saved`` for an update, from the row as it was (``old``, read before the write)."""
    return saved(live, "updated", row, was(live, old), using)
