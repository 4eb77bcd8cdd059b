"""The channel-layer boundary for fan-out: which layer, calls in flight, batched group sends.

``group_send_many`` sends a list of ``(group, message)`` pairs — a group commit's events
over many streams, what the process's sender queued — in as few round trips as the layer
allows. On channels-redis' ``RedisChannelLayer`` that is two scripts per Redis host, however
many groups: one reads the groups' members, one delivers, and each member channel (a
server process's hub) gets **one** message carrying everything for it, in order, instead
of one per group. The layer's own ``group_send`` makes four round trips per group, and the
receiving hub four more per message it pops (``BZPOPMIN`` with its backup queue), so a
group commit over 64 streams cost 64 group sends and up to 64 receives per process; now it
costs two scripts and one receive. Several messages for one channel travel as a
``realtime.batch`` message (``{"type": "realtime.batch", "messages": [...]}``) that the hub
unpacks in order; one travels as itself.

The batched path reads channels-redis' group and channel keys the way its ``group_send``
does (``channels_redis/core.py``, 4.x: ``_group_key``, ``non_local_name``,
``consistent_hash``, ``get_capacity``, ``serialize``), keeps its expiry and capacity rules,
and is taken only when the layer's class does not override ``group_send``. Any other layer
(in-memory, pub/sub, a subclass) gets the layer's own ``group_send`` per message: each
group's messages in order, groups concurrently.

Every layer call of the core holds a slot here first (``slot``): channels-redis takes a
connection from redis-py's pool for every call, and redis-py 8's asyncio pool raises
``MaxConnectionsError`` ("Too many connections") once 100 are in use instead of waiting.
Two thousand clients leaving at once made as many ``group_discard`` calls, most of which
failed; with the slots, bursts queue for a moment instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from channels.layers import BaseChannelLayer, get_channel_layer

from realtime.conf import realtime_settings

logger = logging.getLogger("realtime.publish")

Message = dict[str, Any]

# Layer calls in flight per event loop: under the pool's 100, leaving room for the hub's
# receive and for code of the project's own that uses the same layer.
LAYER_CONCURRENCY = 50
# Most messages one ``realtime.batch`` carries, counting each event of a ``realtime.events``
# message: keeps one Redis value (and one hub dispatch) small.
BATCH_EVENTS = 100

_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def layer() -> BaseChannelLayer:
    """The channel layer named by ``REALTIME["CHANNEL_LAYER"]``."""
    found = get_channel_layer(realtime_settings.CHANNEL_LAYER)
    if found is None:
        from realtime.exceptions import InvalidEvent

        raise InvalidEvent(
            f"No channel layer {realtime_settings.CHANNEL_LAYER!r} in CHANNEL_LAYERS."
        )
    return found


@asynccontextmanager
async def slot() -> AsyncIterator[None]:
    """Hold one of the running loop's ``LAYER_CONCURRENCY`` slots for a layer call."""
    loop = asyncio.get_running_loop()
    found = _slots.get(loop)
    if found is None:
        for old in [old for old in _slots if old.is_closed()]:
            del _slots[old]
        found = _slots[loop] = asyncio.Semaphore(LAYER_CONCURRENCY)
    async with found:
        yield


async def group_send_many(items: Sequence[tuple[str, Message]]) -> None:
    """Send each ``(group, message)``; messages to one group arrive in the order given."""
    if not items:
        return
    found = layer()
    if _batchable(found):
        async with slot():
            await _redis_send_many(found, items)
        return
    by_group: dict[str, list[Message]] = {}
    for group, message in items:
        by_group.setdefault(group, []).append(message)
    await asyncio.gather(*(_send_in_order(found, g, ms) for g, ms in by_group.items()))


async def _send_in_order(found: BaseChannelLayer, group: str, messages: list[Message]) -> None:
    for message in messages:
        async with slot():
            await found.group_send(group, message)


def _batchable(found: BaseChannelLayer) -> bool:
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:  # pragma: no cover - channels-redis is a dependency
        return False
    return (
        isinstance(found, RedisChannelLayer)
        and type(found).group_send is RedisChannelLayer.group_send
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


async def _redis_send_many(found: Any, items: Sequence[tuple[str, Message]]) -> None:
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


def unbatch(message: Message) -> list[Message]:
    """The messages a received layer message carries: a ``realtime.batch``'s, or itself."""
    if message.get("type") == "realtime.batch":
        return list(message["messages"])
    return [message]


def batches(messages: list[Message]) -> list[Message]:
    """``messages`` as layer messages of at most ``BATCH_EVENTS`` events (one alone as itself)."""
    out: list[list[Message]] = []
    weight = 0
    for message in messages:
        size = len(message.get("events", ())) or 1
        if not out or weight + size > BATCH_EVENTS:
            out.append([])
            weight = 0
        out[-1].append(message)
        weight += size
    return [
        chunk[0] if len(chunk) == 1 else {"type": "realtime.batch", "messages": chunk}
        for chunk in out
    ]


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
