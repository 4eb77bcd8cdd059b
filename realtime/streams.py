"""Stream names: what is allowed.

A stream name is 1 to ``MAX_STREAM_NAME_LENGTH`` (default 200) ASCII characters: letters,
digits and ``_ - . : @ / = +``, starting with a letter or digit — ``chat:42``, ``orders``,
``user:17/inbox``. (Their channel-layer group names: ``realtime.bus.groups``.)
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from realtime.conf import STREAM_NAME_COLUMN, realtime_settings
from realtime.exceptions import InvalidStream

STREAM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/=+-]*")
PUBLIC_PREFIX = "public:"


def validate_stream_name(name: object) -> str:
    """Return ``name`` if it is a valid stream name, else raise ``InvalidStream``."""
    if not isinstance(name, str):
        raise InvalidStream("Stream name must be a string.")
    limit = min(int(realtime_settings.MAX_STREAM_NAME_LENGTH), STREAM_NAME_COLUMN)
    if not 0 < len(name) <= limit:
        raise InvalidStream(f"Stream name must be 1 to {limit} characters long.")
    if not STREAM_NAME_RE.fullmatch(name):
        raise InvalidStream(
            "Stream name may contain only letters, digits and _ - . : @ / = + "
            "and must start with a letter or digit."
        )
    return name


def matches(stream: str, pattern: str) -> bool:
    """Whether ``stream`` matches a shell-style ``pattern`` (``chat:*``), case-sensitively."""
    return fnmatchcase(stream, pattern)
