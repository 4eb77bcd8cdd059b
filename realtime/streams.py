"""Stream names: what is allowed, and how a name maps onto a channel-layer group.

A stream name is 1 to ``MAX_STREAM_NAME_LENGTH`` (default 200) ASCII characters: letters,
digits and ``_ - . : @ / = +``, starting with a letter or digit — ``chat:42``, ``orders``,
``user:17/inbox``. Channel-layer group names are narrower (``[a-zA-Z0-9_.-]``, under 100
characters), so a group name is a readable prefix of the stream plus a hash of the whole
name: two streams never share a group, whatever their length or punctuation.
"""

from __future__ import annotations

import hashlib
import re
from fnmatch import fnmatchcase
from functools import lru_cache

from realtime.conf import STREAM_NAME_COLUMN, realtime_settings
from realtime.exceptions import InvalidStream

STREAM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/=+-]*")
PUBLIC_PREFIX = "public:"

_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


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


@lru_cache(maxsize=4096)  # a hash per publish otherwise; bounded, so names cannot grow it
def group_name(stream: str) -> str:
    """The channel-layer group of ``stream``: ``realtime.s.<readable>.<hash>``."""
    digest = hashlib.blake2b(stream.encode(), digest_size=12).hexdigest()
    readable = _GROUP_UNSAFE.sub("_", stream[:40])
    return f"realtime.s.{readable}.{digest}"


def matches(stream: str, pattern: str) -> bool:
    """Whether ``stream`` matches a shell-style ``pattern`` (``chat:*``), case-sensitively."""
    return fnmatchcase(stream, pattern)
