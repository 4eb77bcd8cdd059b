"""JSON text as the protocol writes and reads it: compact, strict, UTC timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder


def dumps(value: Any) -> str:
    """Compact JSON; datetimes, UUIDs and Decimals become strings (DjangoJSONEncoder)."""
    return json.dumps(
        value, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """Strict JSON: ``NaN`` and ``Infinity``, which Python accepts, are errors."""
    return json.loads(text, parse_constant=_no_constants)


def format_ts(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-11-27T21:00:00.123Z``."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def normalize(data: Any) -> tuple[Any, str]:
    """``data`` as plain JSON values, and its encoded text — what every subscriber sees."""
    try:
        text = dumps(data)
        text.encode()  # a lone surrogate ("\ud800") survives json but not UTF-8
    except (TypeError, ValueError) as exc:
        from realtime.exceptions import InvalidEvent

        raise InvalidEvent(f"Event data is not JSON-serialisable: {exc}") from exc
    return json.loads(text), text


def json_depth(value: Any, stop: int) -> int:
    """Nesting depth of a decoded JSON value, counting no further than ``stop + 1``."""
    depth, level = 0, [(value, 1)]
    while level:
        item, d = level.pop()
        if isinstance(item, dict | list):
            depth = max(depth, d)
            if depth > stop:
                return depth
            children = item.values() if isinstance(item, dict) else item
            level.extend((child, d + 1) for child in children if isinstance(child, dict | list))
    return depth
