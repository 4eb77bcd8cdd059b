"""Captured ``bulk_create()``: ``created`` for the rows inserted, ``updated`` for those an
upsert changed, each with the row as stored.

Without conflicts, each object that came back with its pk publishes ``created`` (what a
``save()`` of it would). With ``ignore_conflicts`` or ``update_conflicts`` the objects do not
say what happened to their rows, so on PostgreSQL and SQLite (>= 3.35) ``wrap_insert`` runs
each batch's ``INSERT`` itself, with Django's own SQL and batch size plus ``RETURNING`` every
column of the model:

* ``ON CONFLICT DO NOTHING`` (SQLite: ``INSERT OR IGNORE``) returns exactly the rows it
  inserted: each publishes ``created``;
* ``ON CONFLICT (unique_fields) DO UPDATE`` returns every row, inserted or updated. The rows
  it may update are read first and locked (``SELECT ... FOR UPDATE`` on ``unique_fields``);
  a returned row whose pk was among them was updated: ``updated``, and ``deleted`` to the
  streams it left. On PostgreSQL ``RETURNING (xmax = 0)`` tells an insert from an update
  too, which also catches a row another transaction inserted after the lock (committed
  before the upsert): ``updated``, without ``deleted`` (its old values were never read). On
  SQLite the read is exact: its writers are serialised, so no other transaction commits
  between the read and the upsert (with ``BEGIN IMMEDIATE`` the write lock is held from
  the start; otherwise another writer's commit after the read makes the upsert fail with
  ``SQLITE_BUSY`` instead of writing over a row the read did not see).

Elsewhere (no ``RETURNING``, or another vendor) the objects with a pk publish ``created``
and the rest are logged, as before.
"""

from __future__ import annotations

import functools
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, transaction
from django.db.models import Model, Q, QuerySet
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

from realtime.live import batching, guard, rows
from realtime.live.options import LiveModel

logger = logging.getLogger("realtime.live")


@dataclass
class Upsert:
    """The ``created``/``updated`` changes of one captured ``bulk_create`` with conflicts."""

    live: LiveModel
    using: str
    changes: list[batching.Change] = field(default_factory=list)
    # pk -> the row as it was (None when the streams depend on the pk alone), for the rows
    # the upsert may update, then as each statement left it.
    before: dict[Any, Any] = field(default_factory=dict)

    def lock(self, objs: list[Model], unique: list[Any]) -> None:
        """Read and lock the rows ``objs`` conflict with on ``unique`` (fields)."""
        if len(unique) == 1:
            (attname,) = [f.attname for f in unique]
            match = Q(**{f"{attname}__in": [getattr(obj, attname) for obj in objs]})
        else:
            match = Q()
            for obj in objs:
                match |= Q(**{f.attname: getattr(obj, f.attname) for f in unique})
        base = self.live.model._base_manager.using(self.using)
        pks = rows.locked_pks(base.filter(match))
        old = rows.read(self.live, self.using, pks) if self.live.tracked else []
        self.before.update(dict.fromkeys(pks))
        self.before.update((obj.pk, obj) for obj in old)

    def record(self, row: Model, inserted: bool | None) -> None:
        """Publish ``row``, as stored after the statement; ``inserted`` from PostgreSQL's
        ``xmax``, or None (SQLite: the rows read before are the updated ones)."""
        updated = row.pk in self.before if inserted is None else not inserted
        if updated:
            self.changes += rows.updated(self.live, row, self.before.get(row.pk), self.using)
        else:
            self.changes += rows.saved(self.live, "created", row, None, self.using)
        # SQLite: a later object of the same statement with the same key updates this row.
        self.before[row.pk] = row if self.live.tracked else None


_current: ContextVar[Upsert | None] = ContextVar("realtime_live_upsert", default=None)


def _returning(
    queryset: QuerySet[Any], objs: list[Model], fields: list[Any], **conflict: Any
) -> list[tuple[Model, bool | None]]:
    """Insert ``objs`` as Django's ``_insert`` would, returning every column of the rows
    written (and, for an upsert on PostgreSQL, whether each was inserted)."""
    model, using = queryset.model, queryset.db
    meta = model._meta
    connection = connections[using]
    query = InsertQuery(model, **conflict)
    query.insert_values(fields, objs)
    compiler = query.get_compiler(using=using)
    compiler.returning_fields = meta.concrete_fields
    ((statement, params),) = compiler.as_sql()
    xmax = conflict["on_conflict"] == OnConflict.UPDATE and connection.vendor == "postgresql"
    if xmax:  # RETURNING ends the statement, with no parameters of its own
        statement += f", ({connection.ops.quote_name(meta.db_table)}.xmax = 0)"
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        found = cursor.fetchall()
    width = len(meta.concrete_fields)
    values: Any = [row[:width] for row in found]
    converters = compiler.get_converters([f.get_col(meta.db_table) for f in meta.concrete_fields])
    if converters:
        values = compiler.apply_converters(values, converters)
    names = [f.attname for f in meta.concrete_fields]
    return [
        (model.from_db(using, names, list(value)), row[width] if xmax else None)
        for value, row in zip(values, found, strict=True)
    ]


def wrap_insert(insert: Any) -> Any:
    """``QuerySet._insert``, which runs each batch of a captured ``bulk_create`` with
    conflicts through ``_returning`` (and is Django's own otherwise)."""

    @functools.wraps(insert)
    def live_insert(
        self: QuerySet[Any],
        objs: list[Model],
        fields: list[Any],
        returning_fields: list[Any] | None = None,
        raw: bool = False,
        using: str | None = None,
        on_conflict: OnConflict | None = None,
        update_fields: list[Any] | None = None,
        unique_fields: list[Any] | None = None,
    ) -> Any:
        state = _current.get()
        if state is None or on_conflict is None or self.model is not state.live.model:
            return insert(
                self, objs, fields, returning_fields, raw, using, on_conflict,
                update_fields, unique_fields,
            )  # fmt: skip
        if on_conflict == OnConflict.UPDATE:
            state.lock(objs, list(unique_fields or []))
        conflict = {
            "on_conflict": on_conflict,
            "update_fields": update_fields,
            "unique_fields": unique_fields,
        }
        written = _returning(self, objs, fields, **conflict)
        for row, inserted in written:
            state.record(row, inserted)
        # What Django's bulk_create expects back: the returning fields of each row, for an
        # upsert (one row per object, in order); nothing for ON CONFLICT DO NOTHING.
        wanted = returning_fields or []
        return [tuple(getattr(row, f.attname) for f in wanted) for row, _ in written]

    return live_insert


def captured_bulk_create(
    original: Any,
    queryset: QuerySet[Any],
    live: LiveModel,
    objs: Any,
    batch_size: int | None = None,
    ignore_conflicts: bool = False,
    update_conflicts: bool = False,
    update_fields: Any = None,
    unique_fields: Any = None,
) -> list[Any]:
    """``queryset.bulk_create(objs, ...)`` with the events of the rows it wrote."""
    using = queryset.db
    options = {
        "batch_size": batch_size,
        "ignore_conflicts": ignore_conflicts,
        "update_conflicts": update_conflicts,
        "update_fields": update_fields,
        "unique_fields": unique_fields,
    }
    connection = connections[using]
    returning = connection.features.can_return_rows_from_bulk_insert and (
        connection.vendor in ("postgresql", "sqlite")
    )
    with transaction.atomic(using=using, savepoint=False):
        if (ignore_conflicts or update_conflicts) and returning:
            state = Upsert(live, using)
            token = _current.set(state)
            try:
                with guard.orm_write(using):
                    made = original(queryset, objs, **options)
            finally:
                _current.reset(token)
            batching.emit_many(state.changes)
            return list(made)
        with guard.orm_write(using):
            made = original(queryset, objs, **options)
        known = [obj for obj in made if obj.pk is not None]
        if len(known) < len(made):
            # A database that does not return pks: which rows exist is unknown here, and
            # the triggers skip the ORM's writes (docs/live-models.md).
            logger.warning(
                "bulk_create of %s: %d of %d rows came back without a pk and are not "
                "published (ignore_conflicts?).",
                live.label,
                len(made) - len(known),
                len(made),
            )
        batching.emit_many(
            [
                batching.Change(live, "created", live.streams_for(obj), live.payload(obj), using)
                for obj in known
            ]
        )
    return list(made)
