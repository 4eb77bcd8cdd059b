"""Stream names: what is allowed.

A stream name is 1 to ``MAX_STREAM_NAME_LENGTH`` (default 200) ASCII characters: letters,
digits and ``_ - . : @ / = +``, starting with a letter or digit — ``chat:42``, ``orders``,
``user:17/inbox``. (Their channel-layer group names: ``realtime.bus.groups``.)
"""

from __future__ import annotations

import re
from functools import lru_cache

from realtime.conf import STREAM_NAME_COLUMN, realtime_settings
from realtime.exceptions import InvalidStream

STREAM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/=+-]*")
PUBLIC_PREFIX = "public:"


def validate_stream_name(name: object) -> str:
    """Return ``name`` if it is a valid stream name, else raise ``InvalidStream``."""
    if not isinstance(name, str):
        raise InvalidStream("Stream name must be a string.")
    limit = min(realtime_settings.MAX_STREAM_NAME_LENGTH, STREAM_NAME_COLUMN)
    if not 0 < len(name) <= limit:
        raise InvalidStream(f"Stream name must be 1 to {limit} characters long.")
    if not STREAM_NAME_RE.fullmatch(name):
        raise InvalidStream(
            "Stream name may contain only letters, digits and _ - . : @ / = + "
            "and must start with a letter or digit."
        )
    return name


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A stream pattern as a regex: ``*`` any run of characters, ``?`` one, ``{user_id}`` one
    name part (no ``:`` or ``/``, captured); everything else literal.

    The one pattern syntax of every setting that takes stream patterns (``RULES``,
    ``RETENTION``, ``SLOW_CONSUMERS``, ``PRESENCE_COUNTS_ONLY``), of snapshots and of
    ``revoke(streams=...)``. Unlike ``fnmatch``, ``[`` is an ordinary character.
    """
    parts = re.split(r"(\{user_id\}|\*|\?)", pattern)
    regex = "".join(
        "(?P<user_id>[^:/]+)"
        if part == "{user_id}"
        else ".*"
        if part == "*"
        else "."
        if part == "?"
        else re.escape(part)
        for part in parts
    )
    return re.compile(regex)


@lru_cache(maxsize=1024)  # patterns come from settings: a handful
def _compiled(pattern: str) -> re.Pattern[str]:
    return compile_pattern(pattern)


def matches(stream: str, pattern: str) -> bool:
    """Whether ``stream`` matches ``pattern`` (``chat:*``; see ``compile_pattern``)."""
    return _compiled(pattern).fullmatch(stream) is not None
