"""JSON text as the protocol writes and reads it: compact, strict, UTC timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

# One encoder for every call: ``json.dumps(cls=...)`` builds a new one each time.
_encoder = DjangoJSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON; datetimes, UUIDs and Decimals become strings (DjangoJSONEncoder)."""
    return _encoder.encode(value)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """Strict JSON: ``NaN`` and ``Infinity``, which Python accepts, are errors."""
    return json.loads(text, parse_constant=_no_constants)


_ZERO = timedelta(0)


def format_ts(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-11-27T21:00:00.123Z``."""
    if value.utcoffset() != _ZERO:  # a naive value is local time, as ``astimezone`` takes it
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:23] + "Z"


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
