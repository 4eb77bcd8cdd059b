"""Who may read a live model's streams (``rule``), and the snapshot of a stream.

``rule`` is a ``RULES`` value: route the live streams to it and the model's
``can_subscribe(user, stream, obj)`` decides::

    REALTIME = {"RULES": {"tasks": "realtime.live.rule", "tasks:*": "realtime.live.rule"}}

The policy stays the one authority (WebSocket, SSE and the REST API all ask it); the rule
only hands the decision for these streams to the model that publishes them.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError

from realtime.core.policy import Action
from realtime.live.options import LiveModel, StreamTemplate
from realtime.live.receivers import registry


def find(stream: str) -> tuple[LiveModel, StreamTemplate, dict[str, str]] | None:
    """The live model and template that publish to ``stream``, with the placeholder values."""
    for live in registry.values():
        for template in live.templates:
            params = template.match(stream)
            if params is not None:
                return live, template, params
    return None


def signed_in(user: Any, stream: str, obj: Any) -> bool:
    """The default ``can_subscribe``: any signed-in, active user."""
    return bool(user is not None and user.is_authenticated and user.is_active)


def _instance(live: LiveModel, stream: str, params: dict[str, str]) -> tuple[bool, Any]:
    """``(found, obj)``: the object a ``{pk}`` stream is about, if it exists and matches."""
    if "pk" not in params:
        return True, None
    try:
        obj = live.model._default_manager.filter(pk=params["pk"]).first()
    except (ValueError, TypeError, ValidationError):
        return False, None  # not a pk of this model ("tasks:abc" for an integer pk)
    if obj is None or stream not in live.streams_for(obj):
        return False, None
    return True, obj


def allows(user: Any, stream: str) -> bool:
    """Whether ``user`` may subscribe to (and read the history of) a live ``stream``."""
    found = find(stream)
    if found is None:
        return False
    live, _, params = found
    exists, obj = _instance(live, stream, params)
    if not exists:
        return False  # a missing object's stream is nobody's: it cannot leak a new one
    hook = live.can_subscribe or signed_in
    return bool(hook(user, stream, obj))


async def rule(action: Action, user: Any, stream: str) -> bool:
    """A ``RULES`` value for live streams: ``subscribe``, ``history`` and ``presence`` follow
    the model's ``can_subscribe``; clients never ``publish`` (the model does)."""
    if action == "publish":
        return False
    return bool(await database_sync_to_async(allows)(user, stream))


def snapshot(stream: str, user: Any) -> dict[str, Any]:
    """The serialised rows of a live stream: ``{"objects": [...], "truncated": bool}``.

    Registered with ``realtime.snapshots`` for the streams of models with ``snapshot``; runs
    in a worker thread when a subscriber cannot be recovered.
    """
    found = find(stream)
    if found is None:
        return {"objects": [], "truncated": False}
    live, _, params = found
    limit = live.snapshot_limit
    if callable(live.snapshot):
        rows: Any = live.snapshot(stream, user)
    else:
        rows = live.model._default_manager.filter(**params)
        if not rows.ordered:
            rows = rows.order_by("pk")
    try:
        objects = list(islice(iter(rows), limit + 1))
    except (ValueError, TypeError, ValidationError):
        objects = []  # a placeholder value this model's fields cannot hold
    return {
        "objects": [live.payload(obj) for obj in objects[:limit]],
        "truncated": len(objects) > limit,
    }
