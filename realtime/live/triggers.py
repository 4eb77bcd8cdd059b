"""PostgreSQL capture triggers: changes made outside the ORM publish as ``save()`` would.

Raw SQL, ``psql``, another program or service writing a live model's table: no Python runs,
so a row trigger (``AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW``) writes the events in
the writing transaction, with the same seq assignment as ``realtime.publish`` (the stream's
row bumped under its lock, the event inserted, both rolled back with the change), and
``pg_notify('realtime_capture', stream)`` wakes the servers after the commit (the
reconciler delivers them within ``RECONCILE_INTERVAL`` at worst; NOTIFY is never the only
copy). Writes made by the ORM are published from Python and skipped here (``live.guard``).

``sql(live)`` builds the trigger from a registration, frozen into a migration by ``manage.py
realtime_capture_triggers`` (``realtime.live.operations.CaptureTriggers``). Only what SQL can
compute: ``fields`` (not a serializer) of concrete columns, templates (not callables) whose
placeholders are columns. The payload encodes as the Python path does: datetimes in UTC with
milliseconds (``2026-12-06T21:00:00.123Z``, no fraction when it is zero), dates
``YYYY-MM-DD``, times ``HH:MM:SS[.mmm]``, Decimals and UUIDs as strings of their database
text, JSON as stored; other columns as ``to_jsonb`` gives them.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

from realtime.conf import realtime_settings
from realtime.live.options import LiveModel

CHANNEL = "realtime_capture"
TRIGGER = "realtime_capture"

# What the shared functions of ``realtime``'s migration 0004 are called.
APPEND = "realtime_capture_append"
TS = "realtime_capture_ts"
TIME = "realtime_capture_time"


def function_name(model: type[models.Model]) -> str:
    return f"realtime_capture_{model._meta.db_table}"[:63]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    label = model._meta.label
    if name == "pk":
        return model._meta.pk
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        raise ImproperlyConfigured(
            f"Capture triggers for {label}: {name!r} is not a column (a property or "
            f"method cannot be computed in SQL); capture raw SQL writes without it, or "
            f"leave this model to the ORM paths."
        ) from None
    if not getattr(field, "concrete", False) or field.many_to_many:
        raise ImproperlyConfigured(f"Capture triggers for {label}: {name!r} is not a column.")
    return field  # type: ignore[return-value]


def _value(row: str, field: models.Field[Any, Any]) -> str:
    """The SQL of ``field``'s JSON value in ``row`` (``NEW`` or ``OLD``), as Python encodes it."""
    column = f"{row}.{_quote(str(field.column))}"
    target = field.target_field if field.is_relation else field  # type: ignore[attr-defined]
    kind = target.get_internal_type()
    if kind == "DateTimeField":
        return f"{TS}({column})"
    if kind == "DateField":
        return f"to_jsonb(to_char({column}, 'YYYY-MM-DD'))"
    if kind == "TimeField":
        return f"{TIME}({column})"
    if kind in ("DecimalField", "UUIDField"):
        return f"to_jsonb({column}::text)"
    if kind in ("DurationField", "BinaryField"):
        raise ImproperlyConfigured(
            f"Capture triggers: {field.model._meta.label}.{field.name} is a {kind}, which "
            f"the triggers do not encode; leave it out of `fields`."
        )
    return f"to_jsonb({column})"


def _object(row: str, pairs: list[tuple[str, models.Field[Any, Any]]]) -> str:
    """``jsonb_build_object`` of ``pairs``, in chunks: a function takes at most 100 args."""
    parts = []
    for start in range(0, len(pairs), 50):
        chunk = pairs[start : start + 50]
        args = ", ".join(f"{_literal(key)}, {_value(row, field)}" for key, field in chunk)
        parts.append(f"jsonb_build_object({args})")
    return " || ".join(parts) or "'{}'::jsonb"


def _streams(live: LiveModel, row: str) -> str:
    """An array of ``row``'s stream names (NULL where a placeholder is NULL)."""
    items = []
    for template in live.templates:
        pieces = []
        rest = template.template
        for name in template.names:
            before, _, rest = rest.partition("{" + name + "}")
            pieces.append(_literal(before))
            column = _quote(str(_field(live.model, name).column))
            pieces.append(f"{row}.{column}::text")
        pieces.append(_literal(rest))
        expr = " || ".join(pieces)
        items.append(expr)
    return f"ARRAY[{', '.join(items)}]::text[]"


def body(install: str) -> str:
    """The function body of ``install`` (what ``pg_proc.prosrc`` holds once installed)."""
    return install.split("$realtime$", 2)[1]


def check(live: LiveModel) -> None:
    """Raise ``ImproperlyConfigured`` if SQL cannot publish what ``live`` publishes."""
    label = live.model._meta.label
    if live.serializer is not None:
        raise ImproperlyConfigured(
            f"Capture triggers for {label}: a serializer runs in Python only; use fields=[...]."
        )
    meta = live.model._meta
    if meta.proxy or meta.parents:
        raise ImproperlyConfigured(
            f"Capture triggers for {label}: a proxy or multi-table child shares or splits its "
            f"table with another model; capture writes outside the ORM on a concrete model "
            f"with a table of its own."
        )
    if live.callables:
        raise ImproperlyConfigured(
            f"Capture triggers for {label}: stream callables run in Python only; use "
            f"templates such as 'boards:{{board_id}}'."
        )


def sql(live: LiveModel) -> tuple[str, str]:
    """``(install, remove)``: the SQL creating ``live``'s capture function and trigger, and
    dropping them."""
    check(live)
    model = live.model
    fields = [(key, _field(model, key)) for key, _ in live.fields]
    keys = [(key, _field(model, key)) for key, _ in live.key_fields]
    events = {kind: _literal(event) for kind, event in live.events.items()}
    limit = realtime_settings.MAX_EVENT_SIZE
    table = _quote(model._meta.db_table)
    function = _quote(function_name(model))

    def publish(kind: str, streams: str, payload: str) -> str:
        if kind not in events:
            return ""
        return (
            f"    data := {payload};\n"
            f"    IF octet_length(data::text) > {limit} THEN\n"
            f"      RAISE EXCEPTION 'realtime: % event data is larger than MAX_EVENT_SIZE "
            f"({limit} bytes)', {events[kind]};\n"
            f"    END IF;\n"
            f"    FOREACH s IN ARRAY {streams} LOOP\n"
            f"      PERFORM {APPEND}(s, {events[kind]}, data);\n"
            f"    END LOOP;\n"
        )

    written = ""
    for kind, op in (("created", "INSERT"), ("updated", "UPDATE")):
        body = publish(kind, "new_streams", _object("NEW", fields))
        if body:
            written += f"  IF TG_OP = '{op}' THEN\n{body}  END IF;\n"
    install = f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $realtime$
DECLARE
  new_streams text[] := '{{}}';
  old_streams text[] := '{{}}';
  s text;
  data jsonb;
BEGIN
  -- Written by the ORM: published from Python (realtime.live.guard).
  IF current_setting('realtime.orm_write', true) = 'on' THEN
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    FOREACH s IN ARRAY {_streams(live, "OLD")} LOOP
      IF s IS NOT NULL AND NOT s = ANY(old_streams) THEN
        old_streams := old_streams || s;
      END IF;
    END LOOP;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    FOREACH s IN ARRAY {_streams(live, "NEW")} LOOP
      IF s IS NOT NULL AND NOT s = ANY(new_streams) THEN
        new_streams := new_streams || s;
      END IF;
    END LOOP;
  END IF;
  IF TG_OP = 'DELETE' THEN
{publish("deleted", "old_streams", _object("OLD", keys))}    RETURN NULL;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    -- Streams the row left hear it as deleted, as a save() that moves it tells them.
    old_streams := ARRAY(SELECT x FROM unnest(old_streams) x WHERE NOT x = ANY(new_streams));
{publish("deleted", "old_streams", _object("OLD", keys))}  END IF;
{written}  RETURN NULL;
END
$realtime$;
DROP TRIGGER IF EXISTS {TRIGGER} ON {table};
CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION {function}();
""".strip()
    remove = f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table};\nDROP FUNCTION IF EXISTS {function}();"
    return install, remove
