"""Capture: the ORM paths that send no signals publish what they changed, in their transaction.

Django sends no signal for ``QuerySet.update()`` (and so ``bulk_update()``, and the
``on_delete=SET_NULL``/``SET(...)`` updates of a deletion), ``bulk_create()``, or
``on_delete=SET_DEFAULT`` (``UpdateQuery.update_batch``), and offers no hook to add one
(a queryset class of the user's managers would miss ``_base_manager`` and related managers,
which the deletion collector uses). So ``install()`` wraps those three methods,
``QuerySet._insert`` (``realtime.live.upserts``) and ``Collector.delete``, once for the
process: for a model that is not live the cost is one
dict lookup; for a live one whose capture is on (``LiveModel.captured``) the wrapper

* ``update()``: reads the pks of the matching rows (``SELECT ... FOR UPDATE``: nobody changes
  them until the transaction ends) and, when the streams depend on fields other than the pk,
  the rows as they were; updates exactly those rows; reads them back; and publishes what a
  ``save()`` of each would: ``deleted`` to the streams a row left, ``updated`` to its streams;
* ``bulk_create()``: ``realtime.live.upserts``;

all in one transaction with the change (``atomic(savepoint=False)``), so a rollback publishes
nothing. Inside ``live.batch()`` the changes join the batch; outside, they are stored together
(``publish_group``: the streams bumped at once, the events inserted a thousand a statement).
Every ORM write of a live model also runs under ``guard.orm_write`` (saves through
``receivers.wrap_save_base``, deletions through ``Collector.delete``), so the PostgreSQL
capture triggers (``realtime.live.triggers``) leave those changes to the Python path; with
capture off, the bulk writes run under it too and nobody publishes them.
"""

from __future__ import annotations

import functools
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.deletion import Collector
from django.db.models.sql import UpdateQuery

from realtime.live import batching, guard, rows, upserts
from realtime.live.options import LiveModel

_installed = False


def _live(model: Any) -> LiveModel | None:
    from realtime.live.receivers import registry

    return registry.get(model)


def captured_update(original: Any, queryset: QuerySet[Any], live: LiveModel, **kwargs: Any) -> int:
    """``queryset.update(**kwargs)`` with the events a ``save()`` of each row would publish."""
    using = queryset.db
    with transaction.atomic(using=using, savepoint=False):
        pks = sorted(rows.locked_pks(queryset))
        if not pks:
            return 0
        before = {obj.pk: obj for obj in rows.read(live, using, pks)} if live.tracked else {}
        count = 0
        base = live.model._base_manager.using(using)
        with guard.orm_write(using):
            for chunk in rows.chunks(pks):
                count += original(base.filter(pk__in=chunk), **kwargs)
        changes: list[batching.Change] = []
        for obj in rows.read(live, using, pks):
            changes += rows.updated(live, obj, before.get(obj.pk), using)
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
        live = _live(self.model)
        if live is None:
            return update(self, **kwargs)
        if not live.captured:  # capture off: neither Python nor the trigger publishes it
            with guard.orm_write(self.db):
                return update(self, **kwargs)
        return captured_update(update, self, live, **kwargs)

    @functools.wraps(bulk_create)
    def live_bulk_create(self: QuerySet[Any], objs: Any, *args: Any, **kwargs: Any) -> Any:
        live = _live(self.model)
        if live is None:
            return bulk_create(self, objs, *args, **kwargs)
        if not live.captured:
            with guard.orm_write(self.db):
                return bulk_create(self, objs, *args, **kwargs)
        return upserts.captured_bulk_create(bulk_create, self, live, objs, *args, **kwargs)

    @functools.wraps(update_batch)
    def live_update_batch(self: UpdateQuery, pk_list: Any, values: Any, using: str) -> None:
        live = _live(self.model)
        if live is None:
            update_batch(self, pk_list, values, using)
            return
        if not live.captured:
            with guard.orm_write(using):
                update_batch(self, pk_list, values, using)
            return
        # on_delete=SET_DEFAULT (and SET_NULL on loaded rows): the same path as update().
        base = live.model._base_manager.using(using)
        for chunk in rows.chunks(list(pk_list)):
            captured_update(update, base.filter(pk__in=chunk), live, **values)

    @functools.wraps(delete)
    def live_delete(self: Collector) -> Any:
        if any(_live(model) for model in self.data):
            with guard.orm_write(self.using):  # post_delete publishes them
                return delete(self)
        return delete(self)

    QuerySet.update = live_update  # type: ignore[method-assign]
    QuerySet.bulk_create = live_bulk_create  # type: ignore[method-assign]
    QuerySet._insert = upserts.wrap_insert(QuerySet._insert)  # type: ignore[attr-defined]
    UpdateQuery.update_batch = live_update_batch  # type: ignore[method-assign]
    Collector.delete = live_delete  # type: ignore[method-assign]
