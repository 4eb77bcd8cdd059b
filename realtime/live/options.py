"""What a live model publishes: its streams, its payloads, its event types.

``LiveModel`` is to ``realtime.live.register`` what ``ModelAdmin`` is to ``admin.register``:
the options of one registration, checked once, and the few methods the signal receivers,
the batch helpers, the policy rule and the snapshots call.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

from realtime.conf import realtime_settings
from realtime.core.publishing import validate_event_type
from realtime.exceptions import RealtimeError
from realtime.protocol import normalize
from realtime.streams import validate_stream_name

KINDS = ("created", "updated", "deleted")
Kind = str  # one of KINDS, or "batch"

StreamsOf = Callable[[Any], "str | Iterable[str] | None"]
CanSubscribe = Callable[[Any, str, Any], bool]


@dataclass(frozen=True)
class StreamTemplate:
    """A stream name with ``{placeholders}`` filled from the instance: ``"tasks:{pk}"``.

    Each placeholder is ``pk`` or an attribute of the instance (a field's name or attname,
    a property) whose value holds no ``:`` or ``/``. A placeholder that is ``None`` (a
    nullable foreign key, say) means the instance is not in that stream.
    """

    template: str
    names: tuple[str, ...]
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, template: str) -> StreamTemplate:
        names: list[str] = []
        regex = ""
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ImproperlyConfigured(f"Live stream {template!r}: {exc}.") from exc
        for literal, name, spec, conversion in parts:
            regex += re.escape(literal)
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise ImproperlyConfigured(
                    f"Live stream {template!r}: placeholders are plain attribute names such "
                    f"as {{pk}} or {{board_id}}, without dots, conversions or formats."
                )
            if name in names:
                raise ImproperlyConfigured(f"Live stream {template!r} repeats {{{name}}}.")
            names.append(name)
            regex += f"(?P<{name}>[^:/]+)"
        return cls(template, tuple(names), re.compile(regex))

    @property
    def pattern(self) -> str:
        """The template as a ``RULES``/snapshot pattern: each placeholder becomes ``*``."""
        return re.sub(r"\{[^{}]*\}", "*", self.template)

    def render(self, instance: Any) -> str | None:
        values = {}
        for name in self.names:
            value = instance.pk if name == "pk" else getattr(instance, name)
            if value is None:
                return None
            values[name] = value
        return validate_stream_name(self.template.format(**values))

    def match(self, stream: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(stream)
        return found.groupdict() if found else None


def _getter(meta: Any, name: str) -> tuple[str, Callable[[Any], Any]]:
    """``(key, instance -> value)`` for a payload field: foreign keys give their pk."""
    if name == "pk":
        return "pk", lambda obj: obj.pk
    try:
        model_field = meta.get_field(name)
    except FieldDoesNotExist:
        model_field = None
    if model_field is not None and model_field.concrete and not model_field.many_to_many:
        attname = model_field.attname
        return name, lambda obj: getattr(obj, attname)
    if model_field is not None:
        raise ImproperlyConfigured(
            f"Live model field {name!r} is a many-to-many or reverse relation; send it with "
            f"a serializer instead (relations are not in the saved row)."
        )
    return name, lambda obj: getattr(obj, name)


@dataclass
class LiveModel:
    """One model's live options; made by ``realtime.live.register``."""

    model: type[models.Model]
    templates: list[StreamTemplate]
    callables: list[StreamsOf]
    serializer: Any
    fields: list[tuple[str, Callable[[Any], Any]]]
    key_fields: list[tuple[str, Callable[[Any], Any]]]
    events: dict[Kind, str]
    snapshot: bool | Callable[[str, Any], Any]
    snapshot_limit: int
    can_subscribe: CanSubscribe | None
    # Whether the ORM paths without signals publish too (realtime.live.capture).
    capture: bool = True
    # Attnames whose old values a save must read first, to tell which streams it left.
    tracked: tuple[str, ...] = field(default=())

    @classmethod
    def build(
        cls,
        model: type[models.Model],
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
    ) -> LiveModel:
        name = f"{model._meta.label}"
        if isinstance(streams, str) or not streams:
            raise ImproperlyConfigured(
                f"live.register({name}): `streams` is a list of stream templates "
                f'("tasks", "tasks:{{pk}}") or callables (instance -> stream names).'
            )
        if serializer is not None and fields is not None:
            raise ImproperlyConfigured(f"live.register({name}): give `serializer` or `fields`.")
        meta = model._meta
        templates = [StreamTemplate.parse(s) for s in streams if isinstance(s, str)]
        callables = [s for s in streams if not isinstance(s, str)]
        for item in callables:
            if not callable(item):
                raise ImproperlyConfigured(f"live.register({name}): {item!r} is not a stream.")
        tracked: list[str] = []
        for template in templates:
            for placeholder in template.names:
                if placeholder == "pk":
                    continue
                try:
                    model_field = meta.get_field(placeholder)
                except FieldDoesNotExist:
                    if snapshot is True or not hasattr(model, placeholder):
                        raise ImproperlyConfigured(
                            f"live.register({name}): {{{placeholder}}} in "
                            f"{template.template!r} is not a field of {name}."
                        ) from None
                    tracked.append("*")  # a property: it may read anything
                    continue
                attname = getattr(model_field, "attname", None)
                if attname != placeholder:
                    hint = f"{{{attname}}}" if attname else "a concrete field"
                    raise ImproperlyConfigured(
                        f"live.register({name}): {{{placeholder}}} in {template.template!r} "
                        f"is a relation; use {hint} (its key, not the related object)."
                    )
                if not model_field.primary_key:  # type: ignore[union-attr]
                    tracked.append(attname)
        if callables:
            tracked.append("*")  # a callable may read anything: compare with the whole old row
        prefix = event_prefix or meta.model_name
        if isinstance(events, dict):
            unknown = set(events) - {*KINDS, "batch"}
            if unknown:
                raise ImproperlyConfigured(
                    f"live.register({name}): event kinds are created, updated, deleted and "
                    f"batch, not {', '.join(sorted(unknown))}."
                )
            names = {kind: events[kind] for kind in KINDS if kind in events}
        else:
            wanted = list(events)
            if set(wanted) - set(KINDS):
                raise ImproperlyConfigured(
                    f"live.register({name}): `events` are among created, updated, deleted."
                )
            names = {kind: f"{prefix}.{kind}" for kind in wanted}
        batch_type = events.get("batch") if isinstance(events, dict) else None
        names["batch"] = batch_type or f"{prefix}.batch"
        try:
            for event_type in names.values():
                validate_event_type(event_type)
        except RealtimeError as exc:
            raise ImproperlyConfigured(f"live.register({name}): {exc.message}") from exc
        if fields is None and serializer is None:
            # As DRF's ModelSerializer since 3.3: never every field by default, or a new
            # column (a password hash, a token) would be broadcast without anyone deciding.
            raise ImproperlyConfigured(
                f"live.register({name}): say what to send: fields=[...] (or '__all__') "
                f"or serializer=..."
            )
        if fields == "__all__":
            fields = [f.name for f in meta.concrete_fields]
        elif isinstance(fields, str):
            raise ImproperlyConfigured(f"live.register({name}): `fields` is a list of names.")
        default_keys = [meta.pk.name, *(n for t in templates for n in t.names if n != "pk")]
        return cls(
            model=model,
            templates=templates,
            callables=callables,
            serializer=serializer,
            fields=[_getter(meta, f) for f in fields] if fields is not None else [],
            key_fields=[_getter(meta, f) for f in dict.fromkeys(key_fields or default_keys)],
            events=names,
            snapshot=snapshot,
            snapshot_limit=snapshot_limit,
            can_subscribe=can_subscribe,
            capture=capture,
            tracked=tuple(dict.fromkeys(tracked)),
        )

    @property
    def label(self) -> str:
        return str(self.model._meta.label_lower)

    @property
    def captured(self) -> bool:
        """Whether bulk ORM writes publish (``capture``, unless ``LIVE_CAPTURE_OFF`` names
        the model)."""
        if not self.capture:
            return False
        off = realtime_settings.LIVE_CAPTURE_OFF
        return not off or self.label not in {label.lower() for label in off}

    def streams_for(self, instance: Any) -> list[str]:
        """Every stream ``instance`` belongs to, in declaration order, without repeats."""
        found: list[str] = []
        for template in self.templates:
            name = template.render(instance)
            if name is not None:
                found.append(name)
        for func in self.callables:
            result = func(instance)
            if result is None:
                continue
            for name in [result] if isinstance(result, str) else result:
                found.append(validate_stream_name(name))
        return list(dict.fromkeys(found))

    def payload(self, instance: Any) -> Any:
        """The event data for a created or updated instance, as plain JSON values."""
        if self.serializer is not None:
            data = self.serializer(instance).data
        else:
            data = {key: get(instance) for key, get in self.fields}
        return normalize(data)[0]

    def key_payload(self, instance: Any) -> dict[str, Any]:
        """The event data for a deleted instance: its last known key fields."""
        return dict(normalize({key: get(instance) for key, get in self.key_fields})[0])
