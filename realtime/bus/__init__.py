"""The bus: the backplane boundary between server processes.

Everything that crosses between processes goes through this package: the backplane
(``backends``: the channel layer or NATS), which channel layer (``layer``), the names of
groups and channels (``groups``), the messages and their checks (``messages``), sending
(``send``, with the Redis fast path in ``redis``), joining groups (``joins``) and sync
callers' long-lived sender (``sender``). Above it, the core (``realtime.core``) and the
publish API; below it, only the protocol and the settings.
"""

from realtime.bus import joins, redis
from realtime.bus.backends import Backplane, BackplaneInterrupted, backplane
from realtime.bus.groups import CONTROL_GROUP, HUB_CHANNEL_PREFIX, group_name
from realtime.bus.layer import LAYER_CONCURRENCY, Layer, layer, slot
from realtime.bus.send import control_send, fan_out, group_send_many

__all__ = [
    "CONTROL_GROUP",
    "HUB_CHANNEL_PREFIX",
    "LAYER_CONCURRENCY",
    "Backplane",
    "BackplaneInterrupted",
    "Layer",
    "backplane",
    "control_send",
    "fan_out",
    "group_name",
    "group_send_many",
    "joins",
    "layer",
    "redis",
    "slot",
]
