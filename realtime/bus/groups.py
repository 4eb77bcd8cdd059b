"""Where messages go: a stream's channel-layer group, the control group, hub channel names.

Channel-layer group names are narrower than stream names (``[a-zA-Z0-9_.-]``, under 100
characters), so a group name is a readable prefix of the stream plus a hash of the whole
name: two streams never share a group, whatever their length or punctuation.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

# Every hub joins it: revocations and stats requests.
CONTROL_GROUP = "realtime.control"
# The prefix of a hub's channel. Reply channels share it on purpose: channels-redis receives
# every "<prefix>.<client>!..." channel of a process through one BZPOPMIN loop per prefix,
# under one lock. A reply channel with its own prefix would wait for the hub's blocking pop
# to time out (5 s) before its own list is read; with the same prefix, whichever receive
# holds the lock pops the reply and hands it over at once.
HUB_CHANNEL_PREFIX = "realtime.hub"

_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@lru_cache(maxsize=4096)  # a hash per publish otherwise; bounded, so names cannot grow it
def group_name(stream: str) -> str:
    """The channel-layer group of ``stream``: ``realtime.s.<readable>.<hash>``."""
    digest = hashlib.blake2b(stream.encode(), digest_size=12).hexdigest()
    readable = _GROUP_UNSAFE.sub("_", stream[:40])
    return f"realtime.s.{readable}.{digest}"


# Channel-layer names (``channels.layers``: letters, digits, ``_.-`` and ``!``), which a
# backplane's subjects keep readable; anything else is refused as channel layers refuse it.
_NAME = re.compile(r"^[A-Za-z0-9_.!-]{1,99}$")


def subject_token(name: str, kind: str) -> str:
    """A group or channel name as one token of a NATS subject or Redis channel: its dots as
    ``~`` (which names cannot hold, so two names never share a token). Raises ``TypeError``
    for a name a channel layer would refuse; ``kind`` ("Group", "Channel") says which."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise TypeError(
            f"{kind} name {name!r} is not valid: 1-99 letters, digits, '_', '.', '-' or '!'."
        )
    return name.replace(".", "~")
