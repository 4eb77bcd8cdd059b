"""Capture: the ORM paths that send no signals publish what they changed, in their transaction.

Django sends no signal for ``QuerySet.update()`` (and so ``bulk_update()``, and the
``on_delete=SET_NULL``/``SET(...)`` updates of a deletion), ``bulk_create()``, or
``on_delete=SET_DEFAULT`` (``UpdateQuery.update_batch``), and offers no hook to add one
(a queryset class of the user's managers would miss ``_base_manager`` and related managers,
which the deletion collector uses). So ``install()`` wraps those three methods,
``QuerySet._insert`` (``realtime.live.upserts``) and ``Collector.delete``, once for the
process: for a model that is not live and shares no rows with a live one the cost is a
cached lookup and a dict lookup; otherwise, for each live model whose capture is on
(``LiveModel.captured``), the wrapper

* ``update()``: reads the pks of the matching rows (``SELECT ... FOR UPDATE``: nobody changes
  them until the transaction ends) and, when the streams depend on fields other than the pk,
  the rows as they were; updates exactly those rows; reads them back; and publishes what a
  ``save()`` of each would: ``deleted`` to the streams a row left, ``updated`` to its streams.
  Multi-table inheritance: an update through a parent changes its live children's rows, one
  of a parent's columns through a child its live parent's rows; those rows (the same pks
  through the parent links) are locked, read and published the same way;
* ``bulk_create()``: ``realtime.live.upserts``;

all in one transaction with the change (``atomic(savepoint=False)``), so a rollback publishes
nothing. Inside ``live.batch()`` the changes join the batch; outside, they are stored together
(``publish_group``: the streams bumped at once, the events inserted a thousand a statement).
Every ORM write of a live model also runs under ``guard.orm_write`` (saves through
``receivers.wrap_save_base``, deletions through ``Collector.delete``), so the PostgreSQL
capture triggers (``realtime.live.triggers``) leave those changes to the Python path; with
capture off, the bulk writes run under it too and nobody publishes them. Deletions need
nothing more: Django's collector sends ``post_delete`` for every live row, a parent's
children and a child's parents included.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Sequence
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import transaction
from django.db.models import Model, QuerySet
from django.db.models.deletion import Collector
from django.db.models.sql import UpdateQuery

from realtime.live import batching, guard, rows, upserts
from realtime.live.options import LiveModel
from realtime.live.receivers import live_for, registry, relatives

_installed = False


def _lives(model: Any, names: Iterable[str] = ()) -> list[LiveModel]:
    """The registrations whose rows a write through ``model`` (of the fields ``names``)
    changes: its own, and those of the live models that share the tables of these fields."""
    own = live_for(model)  # a proxy writes its concrete model's rows
    shared = [registry[other] for other in relatives(model) if other in registry]
    if shared:
        tables = set()
        for name in names:
            with contextlib.suppress(FieldDoesNotExist):  # update() raises its FieldError
                tables.add(model._meta.get_field(name).model._meta.concrete_model)
        shared = [
            live
            for live in shared
            if tables & {live.model._meta.concrete_model, *live.model._meta.all_parents}
        ]
    return [own, *shared] if own is not None else shared


def _shared(live: LiveModel, model: type[Model], using: str, pks: Sequence[Any]) -> QuerySet[Any]:
    """``live``'s rows that are rows of ``model`` with these pks."""
    base = live.model._base_manager.using(using)
    if live.model is model._meta.concrete_model:  # itself, or a proxy of it
        return base.filter(pk__in=pks)
    if model._meta.concrete_model in live.model._meta.all_parents:
        # A child holds its parent's pk under the parent's name (through the parent link).
        return base.filter(**{f"{model._meta.pk.name}__in": pks})
    # A parent: ``model`` (its child) holds the parent's pk under the parent's name.
    keys = model._base_manager.using(using).filter(pk__in=pks).values(live.model._meta.pk.name)
    return base.filter(pk__in=keys)


def captured_update(
    original: Any, queryset: QuerySet[Any], lives: list[LiveModel], **kwargs: Any
) -> int:
    """``queryset.update(**kwargs)`` with the events a ``save()`` of each changed row of
    ``lives`` (the queryset's model and the live models sharing its rows) would publish."""
    using = queryset.db
    model = queryset.model
    with transaction.atomic(using=using, savepoint=False):
        pks = sorted(rows.locked_pks(queryset))
        if not pks:
            return 0
        touched: list[tuple[LiveModel, list[Any], dict[Any, Any]]] = []
        for live in lives:
            mine = pks
            if live.model is not model:  # lock the relative's rows too: nobody moves them
                mine = sorted(
                    pk
                    for chunk in rows.chunks(pks)
                    for pk in rows.locked_pks(_shared(live, model, using, chunk))
                )
            before = {obj.pk: obj for obj in rows.read(live, using, mine)} if live.tracked else {}
            touched.append((live, mine, before))
        count = 0
        base = model._base_manager.using(using)
        with guard.orm_write(using):
            for chunk in rows.chunks(pks):
                count += original(base.filter(pk__in=chunk), **kwargs)
        changes: list[batching.Change] = []
        for live, mine, before in touched:
            for row in rows.read(live, using, mine):
                changes += rows.updated(live, row, before.get(row.pk), using)
        batching.emit_many(changes)
    return count


def install() -> None:
    """Wrap ``QuerySet.update``, ``QuerySet.bulk_create``, ``QuerySet._insert``,
    ``UpdateQuery.update_batch`` and ``Collector.delete`` once, for the process."""
    global _installed
    if _installed:
        return
    _installed = True
    update = QuerySet.update
    bulk_create = QuerySet.bulk_create
    update_batch = UpdateQuery.update_batch
    delete = Collector.delete

    @functools.wraps(update)
    def live_update(self: QuerySet[Any], **kwargs: Any) -> int:
        lives = _lives(self.model, kwargs)
        if not lives:
            return update(self, **kwargs)
        captured = [live for live in lives if live.captured]
        if not captured:  # capture off: neither Python nor the trigger publishes it
            with guard.orm_write(self.db):
                return update(self, **kwargs)
        return captured_update(update, self, captured, **kwargs)

    @functools.wraps(bulk_create)
    def live_bulk_create(self: QuerySet[Any], objs: Any, *args: Any, **kwargs: Any) -> Any:
        live = live_for(self.model)  # Django refuses a multi-table child's bulk_create
        if live is None:
            return bulk_create(self, objs, *args, **kwargs)
        if not live.captured:
            with guard.orm_write(self.db):
                return bulk_create(self, objs, *args, **kwargs)
        return upserts.captured_bulk_create(bulk_create, self, live, objs, *args, **kwargs)

    @functools.wraps(update_batch)
    def live_update_batch(self: UpdateQuery, pk_list: Any, values: Any, using: str) -> None:
        lives = _lives(self.model, values)
        captured = [live for live in lives if live.captured]
        if not captured:
            with guard.orm_write(using) if lives else contextlib.nullcontext():
                update_batch(self, pk_list, values, using)
            return
        # on_delete=SET_DEFAULT (and SET_NULL on loaded rows): the same path as update().
        base = self.model._base_manager.using(using)  # type: ignore[union-attr]
        for chunk in rows.chunks(list(pk_list)):
            captured_update(update, base.filter(pk__in=chunk), captured, **values)

    @functools.wraps(delete)
    def live_delete(self: Collector) -> Any:
        if any(_lives(model) for model in self.data):
            with guard.orm_write(self.using):  # post_delete publishes them
                return delete(self)
        return delete(self)

    QuerySet.update = live_update  # type: ignore[method-assign]
    QuerySet.bulk_create = live_bulk_create  # type: ignore[method-assign]
    QuerySet._insert = upserts.wrap_insert(QuerySet._insert)  # type: ignore[attr-defined]
    UpdateQuery.update_batch = live_update_batch  # type: ignore[method-assign]
    Collector.delete = live_delete  # type: ignore[method-assign]
