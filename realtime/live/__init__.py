"""Live models: when a row changes, every page showing it hears about it.

::

    from realtime import live

    @live.register(streams=["tasks", "tasks:{pk}"], fields=["id", "title", "done"])
    class Task(models.Model):
        ...

Saving, creating or deleting a ``Task`` — in a view, the admin, a command, the shell, an
async view — publishes ``task.created`` / ``task.updated`` / ``task.deleted`` to its streams
in the change's transaction (a rollback publishes nothing). ``docs/live-models.md`` has the
whole story: payloads, per-user access (``rule``), snapshots, batches and the bulk paths.

A registry call, like ``admin.register``: usable as a class decorator for your models and as
a plain call for models you do not own (``live.register(User, streams=[...])``), without a
base class or a metaclass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import signals

from realtime.core import snapshots
from realtime.live import capture as _capture
from realtime.live import checks, receivers  # noqa: F401  (checks register themselves)
from realtime.live.access import rule, snapshot
from realtime.live.batching import (
    Batch,
    abulk_created,
    abulk_deleted,
    abulk_updated,
    batch,
    bulk_created,
    bulk_deleted,
    bulk_updated,
)
from realtime.live.options import KINDS, CanSubscribe, LiveModel, StreamsOf

__all__ = [
    "KINDS",
    "Batch",
    "LiveModel",
    "abulk_created",
    "abulk_deleted",
    "abulk_updated",
    "batch",
    "bulk_created",
    "bulk_deleted",
    "bulk_updated",
    "get",
    "register",
    "rule",
    "unregister",
]

M = TypeVar("M", bound=type[models.Model])


def register(
    model: M | None = None,
    *,
    streams: Sequence[str | StreamsOf],
    serializer: Any = None,
    fields: Sequence[str] | str | None = None,
    events: Iterable[str] | dict[str, str] = KINDS,
    event_prefix: str | None = None,
    key_fields: Sequence[str] | None = None,
    snapshot: bool | Callable[[str, Any], Any] = False,
    snapshot_limit: int = 1000,
    can_subscribe: CanSubscribe | None = None,
    capture: bool = True,
) -> Any:
    """Make ``model`` live. As a decorator (``@live.register(streams=...)``) or a call.

    * ``streams``: templates filled from the instance (``"tasks"``, ``"tasks:{pk}"``,
      ``"boards:{board_id}"``) and/or callables ``instance -> name(s)``.
    * ``fields`` (names, or ``"__all__"``) or ``serializer`` (a DRF serializer class), one of
      them required: the event data of created and updated rows. Deleted rows send their
      key fields: the pk and the templates' placeholders (or ``key_fields``).
    * ``events``: which of created, updated, deleted to send, or a dict kind -> event type;
      types default to ``<event_prefix or model_name>.<kind>``, batches to ``.batch``.
    * ``snapshot``: send the serialised rows (``True``: the stream's rows; or a callable
      ``(stream, user) -> rows``) to subscribers that cannot be recovered.
    * ``can_subscribe(user, stream, obj)``: who may read the streams, for streams routed to
      ``realtime.live.rule`` in ``RULES`` (default: signed-in users).
    * ``capture``: ``False`` leaves ``update()``, ``bulk_create()``, ``bulk_update()`` and
      ``on_delete=SET_NULL``/``SET_DEFAULT`` unpublished, as Django's signals do (cheaper
      bulk writes; announce them with the ``bulk_*`` helpers).
    """
    options = {
        "streams": streams,
        "serializer": serializer,
        "fields": fields,
        "events": events,
        "event_prefix": event_prefix,
        "key_fields": key_fields,
        "snapshot": snapshot,
        "snapshot_limit": snapshot_limit,
        "can_subscribe": can_subscribe,
        "capture": capture,
    }

    def decorate(cls: M) -> M:
        _register(cls, LiveModel.build(cls, **options))
        return cls

    return decorate if model is None else decorate(model)


def _uid(model: type[models.Model], signal: str) -> str:
    return f"realtime.live.{model._meta.label_lower}.{signal}"


def _register(model: type[models.Model], live: LiveModel) -> None:
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise ImproperlyConfigured(f"live.register() takes a model class, not {model!r}.")
    if model._meta.abstract:
        raise ImproperlyConfigured(f"{model.__name__} is abstract: register its subclasses.")
    if model in receivers.registry:
        raise ImproperlyConfigured(f"{model._meta.label} is already live.")
    receivers.registry[model] = live
    receivers.forget()
    receivers.wrap_save_base(model)
    # A parent's save changes this model's rows too: its post_save must run in the save's
    # transaction as well.
    for parent in model._meta.all_parents:
        if not parent._meta.proxy and "save_base" not in parent.__dict__:
            receivers.wrap_save_base(parent)
    _capture.install()
    # Saves, for every sender: a proxy's or a multi-table child's save writes this model's
    # rows too (``receivers.touched``, cached per class). Deletions per model and per proxy,
    # never for all senders: Django's fast delete stays on for every model with no receivers.
    signals.pre_save.connect(receivers.pre_save, dispatch_uid="realtime.live.pre_save")
    signals.post_save.connect(receivers.post_save, dispatch_uid="realtime.live.post_save")
    signals.class_prepared.connect(_proxy_prepared, dispatch_uid="realtime.live.proxies")
    for sender in [model, *_proxies(model)]:
        _connect_delete(sender)
    if live.snapshot:
        for template in live.templates:
            snapshots.register(template.pattern, snapshot)


def _connect_delete(sender: type[models.Model]) -> None:
    signals.post_delete.connect(
        receivers.post_delete, sender=sender, dispatch_uid=_uid(sender, "delete")
    )


def _proxies(model: type[models.Model]) -> list[type[models.Model]]:
    """The proxies of ``model`` loaded so far (``apps.all_models`` fills as apps load)."""
    return [
        other
        for app_models in apps.all_models.values()
        for other in app_models.values()
        if other._meta.proxy and other._meta.concrete_model is model
    ]


def _proxy_prepared(sender: type[models.Model], **kwargs: Any) -> None:
    """A proxy of a live model defined after its registration: its deletions publish too."""
    if sender._meta.proxy and receivers.live_for(sender) is not None:
        receivers.forget()
        _connect_delete(sender)


def unregister(model: type[models.Model]) -> None:
    """Stop publishing ``model``'s changes (tests, or a project replacing an app's options)."""
    live = receivers.registry.pop(model, None)
    if live is None:
        raise ImproperlyConfigured(f"{model._meta.label} is not live.")
    receivers.forget()
    receivers.unwrap_save_base(model)
    for sender in [model, *_proxies(model)]:
        signals.post_delete.disconnect(sender=sender, dispatch_uid=_uid(sender, "delete"))
    still = {
        t.pattern
        for other in receivers.registry.values()
        if other.snapshot
        for t in other.templates
    }
    for template in live.templates:
        if live.snapshot and template.pattern not in still:
            snapshots.unregister(template.pattern)


def get(model: type[models.Model]) -> LiveModel | None:
    """``model``'s live options, or None."""
    return receivers.registry.get(model)
