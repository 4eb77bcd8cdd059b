"""The signal receivers of live models, and the transaction a live save runs in.

``post_save`` and ``post_delete`` publish (or add to the open batch). Both run inside the
transaction of the change — Django sends ``post_delete`` inside the deletion's atomic block,
and ``register`` wraps the model's ``save_base`` in ``transaction.atomic(savepoint=False)``
so ``post_save`` does too — so the event rows commit or roll back with the change, and the
fan-out waits for the commit (``realtime.publish`` defers it with ``on_commit``).

Rows are shared beyond the registered class: a proxy writes its concrete model's table, and
publishes as that model unless it is registered itself (``live_for``); a multi-table child
writes its parents' rows, so its save publishes for each live parent too (``touched``), and
a parent's save changes its live children's rows, which publish ``updated`` (``children``).
"""

from __future__ import annotations

import functools
from typing import Any

from django.db import router, transaction
from django.db.models import Model

from realtime.live import batching, guard, rows
from realtime.live.options import LiveModel

# model -> its registration; filled by ``realtime.live.register``.
registry: dict[type[Any], LiveModel] = {}

_BEFORE = "_realtime_live_before"


def live_for(sender: Any) -> LiveModel | None:
    """``sender``'s registration; for a proxy without one, its concrete model's."""
    live = registry.get(sender)
    if live is None and sender._meta.proxy:
        live = registry.get(sender._meta.concrete_model)
    return live


@functools.cache
def relatives(model: Any) -> tuple[type[Model], ...]:
    """The models whose rows are ``model``'s too (multi-table inheritance): its concrete
    parents and children, at any depth. Fixed once the models are loaded."""
    meta = model._meta.concrete_model._meta
    found: list[Any] = [parent for parent in meta.all_parents if not parent._meta.proxy]
    children: list[Any] = [meta.concrete_model]
    while children:
        child = children.pop()
        for rel in child._meta.related_objects:
            if getattr(rel, "parent_link", False) and rel.related_model not in found:
                found.append(rel.related_model)
                children.append(rel.related_model)
    return tuple(found)


def _is_parent(model: Any, of: Any) -> bool:
    return model in of._meta.concrete_model._meta.all_parents


def touched(sender: Any) -> list[LiveModel]:
    """The registrations whose rows a save of ``sender`` writes: its own (``live_for``) and
    its live multi-table parents'. Saves run this for every model: cached per class."""
    found = _touched.get(sender)
    if found is None:
        own = live_for(sender)
        parents = [
            registry[other]
            for other in relatives(sender)
            if other in registry and _is_parent(other, sender) and registry[other] is not own
        ]
        found = _touched[sender] = [own, *parents] if own is not None else parents
    return found


_touched: dict[type[Any], list[LiveModel]] = {}


def children(sender: Any) -> list[LiveModel]:
    """The live multi-table children of ``sender``: a save of a parent row changes the
    columns it gives its child's row. Cached per class, like ``touched``."""
    found = _children.get(sender)
    if found is None:
        found = _children[sender] = [
            registry[other]
            for other in relatives(sender)
            if other in registry and _is_parent(sender._meta.concrete_model, other)
        ]
    return found


_children: dict[type[Any], list[LiveModel]] = {}


def forget() -> None:
    """Registrations changed: ``touched`` and ``children`` look again."""
    _touched.clear()
    _children.clear()


def _row(live: LiveModel, using: str, pk: Any, *, lock: bool = False) -> Any:
    query = live.model._base_manager.using(using)
    return (query.select_for_update() if lock else query).filter(pk=pk).first()


def pre_save(sender: Any, instance: Any, raw: bool, using: str, **kwargs: Any) -> None:
    """Remember the streams an existing row is in, when a save may move it out of some.

    Only for models whose streams depend on fields other than the pk (``"boards:{board_id}"``)
    or on callables: one ``SELECT ... FOR UPDATE`` of the old row, in the save's transaction.
    """
    if raw:
        return
    for live in touched(sender):
        pk = getattr(instance, live.model._meta.pk.attname)
        if not live.tracked or pk is None:
            continue
        model = live.model
        query = model._base_manager.using(using).select_for_update().filter(pk=pk)
        if "*" in live.tracked:
            old = query.first()
        else:
            values = query.values(*live.tracked).first()
            old = None
            if values is not None:
                old = model.__new__(model)
                old.__dict__.update({**instance.__dict__, **values})
        if old is not None:
            _remember(instance, live, old)
    for live in children(sender):
        if live.tracked and instance.pk is not None:
            child = _row(live, using, instance.pk, lock=True)
            if child is not None:
                _remember(instance, live, child)


def _remember(instance: Any, live: LiveModel, old: Any) -> None:
    """Keep on ``instance`` the streams and keys ``old`` (its row for ``live``) had: taken
    now, before the save changes what they are read from."""
    instance.__dict__.setdefault(_BEFORE, {})[live.label] = rows.was(live, old)


def post_save(
    sender: Any, instance: Any, created: bool, raw: bool, using: str, **kwargs: Any
) -> None:
    before = instance.__dict__.pop(_BEFORE, {})
    if raw:  # loaddata; related rows may not exist yet
        return
    kind = "created" if created else "updated"
    for live in touched(sender):
        _saved(live, kind, instance, before.get(live.label), using)
    for live in [] if created else children(sender):
        child = _row(live, using, instance.pk)  # its row as the parent's save left it
        if child is not None:
            _saved(live, "updated", child, before.get(live.label), using)


def _saved(live: LiveModel, kind: str, obj: Any, before: rows.Before | None, using: str) -> None:
    """Publish ``obj``'s save for ``live`` (``before``: what ``_remember`` kept)."""
    for change in rows.saved(live, kind, obj, before, using):
        batching.emit(change.live, change.kind, change.streams, change.data, using)


def post_delete(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    live = live_for(sender)
    if live is None or "deleted" not in live.events:
        return
    batching.emit(live, "deleted", live.streams_for(instance), live.key_payload(instance), using)


def wrap_save_base(model: type[Any]) -> None:
    """Run ``model.save_base`` (and so ``post_save``) in one transaction with the event."""
    original = model.save_base

    @functools.wraps(original)
    def save_base(self: Any, *args: Any, **kwargs: Any) -> Any:
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            if not touched(type(self)) and not children(type(self)):
                return original(self, *args, **kwargs)
            with guard.orm_write(using):  # the capture triggers leave it to post_save
                return original(self, *args, **kwargs)

    save_base._realtime_original = model.__dict__.get("save_base")  # type: ignore[attr-defined]
    model.save_base = save_base


def unwrap_save_base(model: type[Any]) -> None:
    wrapper = model.__dict__.get("save_base")
    if wrapper is None or not hasattr(wrapper, "_realtime_original"):
        return
    if wrapper._realtime_original is None:
        del model.save_base
    else:
        model.save_base = wrapper._realtime_original
