"""channels-redis' ``RedisChannelLayer``: many groups' messages in two scripts per host, and
many joins in one.

On that layer ``group_send_many`` is two scripts per Redis host, however many groups: one
reads the groups' members, dropping expired members as ``group_send`` does; one delivers,
keeping the layer's capacity and expiry rules. Each member channel (a server process's hub)
gets **one** message carrying everything for it, in order, instead of one per group. The
layer's own ``group_send`` makes four round trips per group, and the receiving hub four more
per message it pops (``BZPOPMIN`` with its backup queue), so a group commit over 64 streams
cost 64 group sends and up to 64 receives per process; now it costs two scripts and one
receive.

``add_many`` is ``group_add`` (a ZADD and an EXPIRE, two round trips) for many groups in one
script per host: a storm of handshakes on streams of their own joins as many groups.

This reads channels-redis' group and channel keys the way its ``group_send`` and
``group_add`` do (``channels_redis/core.py``, 4.x: ``_group_key``, ``non_local_name``,
``consistent_hash``, ``get_capacity``, ``serialize``, ``group_expiry``), and is taken only
when the layer's class does not override ``group_send`` or ``group_add`` (``batchable``,
``joinable``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from realtime.bus.messages import batches

logger = logging.getLogger("realtime.publish")

Message = dict[str, Any]


def batchable(found: object) -> bool:
    """Whether ``send_many`` may stand in for ``found``'s ``group_send``."""
    return _keeps(found, "group_send")


def joinable(found: object) -> bool:
    """Whether ``add_many`` may stand in for ``found``'s ``group_add``."""
    return _keeps(found, "group_add")


def _keeps(found: object, method: str) -> bool:
    """``found`` is a ``RedisChannelLayer`` whose class keeps channels-redis' ``method``."""
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:  # pragma: no cover - channels-redis is a dependency
        return False
    return isinstance(found, RedisChannelLayer) and getattr(type(found), method) is getattr(
        RedisChannelLayer, method
    )


# KEYS: group keys. ARGV[1]: the newest membership score that has expired.
# Returns each group's members, after dropping expired ones as ``group_send`` does.
MEMBERS = """
local found = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[1])
    found[i] = redis.call('ZRANGE', KEYS[i], 0, -1)
end
return found
"""

# KEYS: channel keys (one may repeat). ARGV: n payloads, n capacities, n scores, then the
# newest message score that has expired and the keys' expiry. Returns how many were dropped
# because their channel was full (``group_send``'s rule: a full channel loses the message).
DELIVER = """
local n = #KEYS
local dropped = 0
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[3 * n + 1])
    if redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], ARGV[2 * n + i], ARGV[i])
        redis.call('EXPIRE', KEYS[i], ARGV[3 * n + 2])
    else
        dropped = dropped + 1
    end
end
return dropped
"""


# KEYS: group keys. ARGV[1]: the membership score (now), ARGV[2]: the groups' expiry, then
# one channel per key: ``group_add``'s ZADD and EXPIRE for each.
JOIN = """
for i = 1, #KEYS do
    redis.call('ZADD', KEYS[i], ARGV[1], ARGV[i + 2])
    redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return #KEYS
"""


async def add_many(found: Any, pairs: Sequence[tuple[str, str]]) -> None:
    """``group_add(group, channel)`` for each pair, in one script per Redis host (the names
    checked by the caller, as ``group_add`` checks them)."""
    by_host: dict[int, list[tuple[str, str]]] = {}
    for group, channel in pairs:
        by_host.setdefault(found.consistent_hash(group), []).append((group, channel))
    for index, joins in by_host.items():
        await found.connection(index).eval(
            JOIN,
            len(joins),
            *(found._group_key(group) for group, _ in joins),
            time.time(),
            found.group_expiry,
            *(channel for _, channel in joins),
        )


async def send_many(found: Any, items: Sequence[tuple[str, Message]]) -> None:
    """Each ``(group, message)`` to the group's members, as few layer messages per member
    channel as ``messages.batches`` makes of them."""
    now = time.time()
    groups = list(dict.fromkeys(group for group, _ in items))
    members: dict[str, list[str]] = {}
    by_host: dict[int, list[str]] = {}
    for group in groups:
        by_host.setdefault(found.consistent_hash(group), []).append(group)
    for index, names in by_host.items():
        keys = [found._group_key(group) for group in names]
        replies = await found.connection(index).eval(
            MEMBERS, len(keys), *keys, int(now) - found.group_expiry
        )
        for group, reply in zip(names, replies, strict=True):
            members[group] = [channel.decode() for channel in reply]
    for_channel: dict[str, list[Message]] = {}
    for group, message in items:
        for channel in members[group]:
            for_channel.setdefault(channel, []).append(message)
    await _deliver(found, for_channel, now)


async def _deliver(found: Any, for_channel: dict[str, list[Message]], now: float) -> None:
    """Each channel's messages as few layer messages as ``BATCH_EVENTS`` allows, in order."""
    outgoing: dict[int, list[tuple[bytes, int, bytes]]] = {}
    for channel, messages in for_channel.items():
        local = found.non_local_name(channel) if "!" in channel else channel
        key = (found.prefix + local).encode()
        capacity = found.get_capacity(channel)
        host = outgoing.setdefault(found.consistent_hash(local), [])
        for payload in batches(messages):
            if "!" in channel:
                payload = {**payload, "__asgi_channel__": channel}
            host.append((key, capacity, found.serialize(payload)))
    for index, entries in outgoing.items():
        scores = _scores(len(entries), now)
        dropped = await found.connection(index).eval(
            DELIVER,
            len(entries),
            *(key for key, _, _ in entries),
            *(payload for _, _, payload in entries),
            *(capacity for _, capacity, _ in entries),
            *(repr(score) for score in scores),
            int(now) - int(found.expiry),
            int(found.expiry),
        )
        if dropped:
            logger.info(
                "%s of %s layer messages dropped: their channels were full.", dropped, len(entries)
            )


_score_lock = threading.Lock()
_last_score = 0.0


def _scores(count: int, now: float) -> list[float]:
    """Increasing scores from about ``now``: a channel's messages pop in score order, and
    equal scores would pop in the order of their (randomly prefixed) bytes."""
    global _last_score
    with _score_lock:
        first = max(now, _last_score + 1e-6)
        _last_score = first + (count - 1) * 1e-6
    return [first + n * 1e-6 for n in range(count)]
