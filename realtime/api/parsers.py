"""Request bodies: strict JSON, bounded in size and depth before anything is stored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.parsers import BaseParser

from realtime.api.errors import PAYLOAD_TOO_LARGE, APIError
from realtime.conf import realtime_settings
from realtime.protocol import MALFORMED_JSON, TOO_DEEP, json_depth, loads

# Room in a body for everything around ``data``: the event type, the key, JSON punctuation.
ENVELOPE = 4096


def max_body_size() -> int:
    """Largest body read: ``data`` may be ``MAX_EVENT_SIZE`` compact; allow it indented."""
    return 2 * realtime_settings.MAX_EVENT_SIZE + ENVELOPE


class StrictJSONParser(BaseParser):
    """``application/json`` as the wire protocol reads it: no ``NaN``, bounded depth.

    A body over :func:`max_body_size` is refused with 413 before it is parsed; the event's
    ``data`` is measured again, compact, against ``MAX_EVENT_SIZE`` when it is published.
    """

    media_type = "application/json"

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = max_body_size()
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and str(declared).isdigit() and int(declared) > limit:
            raise APIError(413, PAYLOAD_TOO_LARGE, f"The body is larger than {limit} bytes.")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise APIError(413, PAYLOAD_TOO_LARGE, f"The body is larger than {limit} bytes.")
        try:
            value = loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise APIError(400, MALFORMED_JSON, f"The body is not valid JSON: {exc}") from exc
        depth_limit = realtime_settings.MAX_JSON_DEPTH
        if json_depth(value, depth_limit) > depth_limit:
            raise APIError(400, TOO_DEEP, f"JSON nested deeper than {depth_limit} levels.")
        return value
