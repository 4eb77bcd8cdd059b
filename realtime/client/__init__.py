"""``realtime.client``: an asyncio client for protocol 1, over WebSocket or SSE
(docs/python-client.md). Needs the ``client`` extra: ``pip install django-realtime[client]``."""

from __future__ import annotations

from realtime.client.backoff import Backoff
from realtime.client.client import Client
from realtime.client.errors import ClientClosed, ClientError, ConnectionRefused, RequestError
from realtime.client.items import Event, Gap, Item, PublishResult, Reset, Snapshot, StateChange
from realtime.client.subscription import Presence, Subscription

__all__ = [
    "Backoff",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectionRefused",
    "Event",
    "Gap",
    "Item",
    "Presence",
    "PublishResult",
    "RequestError",
    "Reset",
    "Snapshot",
    "StateChange",
    "Subscription",
]
