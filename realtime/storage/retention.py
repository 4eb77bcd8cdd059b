"""How much history each stream keeps.

``REALTIME["RETENTION"]`` maps stream patterns to rules, first match wins::

    "RETENTION": {
        "cursors:*": {"max_events": 0},            # nothing kept beyond the live edge
        "chat:*": {"max_events": 1000, "max_age": 86400},
        "*": {"max_events": 10_000, "max_age": timedelta(days=7)},
    }

``max_events`` is enforced exactly, in the publishing transaction. ``max_age`` is enforced by
a sweep every ``PRUNE_INTERVAL`` seconds in each server process and by the ``realtime_prune``
management command. A stream that matches no pattern keeps everything.

Presence history (``PresenceSession`` rows) has its own ``PRESENCE_HISTORY_RETENTION``,
enforced by the same sweep (``realtime.cleanup``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from realtime.conf import realtime_settings
from realtime.streams import matches


@dataclass(frozen=True)
class Rule:
    pattern: str
    max_events: int | None = None
    max_age: timedelta | None = None


KEEP_ALL = Rule("*")


@realtime_settings.derived
@lru_cache(maxsize=1)
def rules() -> tuple[Rule, ...]:
    """The configured rules, validated, in match order."""
    config = realtime_settings.RETENTION
    if not isinstance(config, dict):
        raise ImproperlyConfigured("REALTIME['RETENTION'] must be a dict of pattern: rule.")
    parsed = []
    for pattern, rule in config.items():
        if not isinstance(pattern, str) or not isinstance(rule, dict):
            raise ImproperlyConfigured(
                f"REALTIME['RETENTION'][{pattern!r}] must be a dict such as "
                "{'max_events': 1000, 'max_age': 86400}."
            )
        unknown = set(rule) - {"max_events", "max_age"}
        if unknown:
            raise ImproperlyConfigured(
                f"REALTIME['RETENTION'][{pattern!r}] has unknown key(s) {sorted(unknown)}; "
                "use max_events and/or max_age."
            )
        max_events = rule.get("max_events")
        if max_events is not None and (
            isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0
        ):
            raise ImproperlyConfigured(
                f"REALTIME['RETENTION'][{pattern!r}]['max_events'] must be an int >= 0 or None."
            )
        max_age = _duration(rule.get("max_age"), f"REALTIME['RETENTION'][{pattern!r}]['max_age']")
        parsed.append(Rule(pattern, max_events, max_age))
    return tuple(parsed)


def presence_history() -> timedelta | None:
    """How long ended presence sessions are kept (``PRESENCE_HISTORY_RETENTION``)."""
    return _duration(
        realtime_settings.PRESENCE_HISTORY_RETENTION, "REALTIME['PRESENCE_HISTORY_RETENTION']"
    )


def _duration(value: Any, name: str) -> timedelta | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if value is not None and (not isinstance(value, timedelta) or value.total_seconds() <= 0):
        raise ImproperlyConfigured(f"{name} must be positive seconds, a timedelta, or None.")
    return value


def rule_for(stream: str) -> Rule:
    """The retention rule of ``stream``: the first whose pattern matches."""
    for rule in rules():
        if matches(stream, rule.pattern):
            return rule
    return KEEP_ALL
