"""``LISTEN``: the PostgreSQL notifications that wake servers when a trigger stored events.

The capture triggers (``realtime.live.triggers``) call ``pg_notify('realtime_capture',
stream)``, which PostgreSQL delivers after the writing transaction commits (and never if it
rolls back), once per stream and transaction. ``listen`` holds one connection of its own
per process, in autocommit mode, outside Django's connection handling (it lives as long as
the server, on the event loop, through psycopg 3's async API), and yields the stream names.
A notification is only a wake-up: the events are in the database, and the reconciler reads
them within ``RECONCILE_INTERVAL`` even if the notification is lost with its connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.db import connections

from realtime.storage.store import database

CHANNEL = "realtime_capture"

# Django's connection parameters that are not libpq's (psycopg 3 adapters, cursors, pools).
_NOT_LIBPQ = ("context", "cursor_factory", "prepare_threshold", "server_side_binding", "pool")


def available() -> bool:
    """Whether the event store's database can notify: PostgreSQL with psycopg 3."""
    if connections[database()].vendor != "postgresql":
        return False
    try:
        import psycopg  # noqa: F401
    except ImportError:  # pragma: no cover - psycopg2: nothing listens, the reconciler serves
        return False
    return True


def _params() -> dict[str, Any]:
    params = dict(connections[database()].get_connection_params())
    for key in _NOT_LIBPQ:
        params.pop(key, None)
    return params


async def listen(channel: str = CHANNEL) -> AsyncIterator[str]:
    """The payloads of the notifications on ``channel``, as they come; ends with an error
    when the connection is lost (the caller reconnects)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(**_params(), autocommit=True) as conn:
        await conn.execute(f'LISTEN "{channel}"')
        async for notification in conn.notifies():
            yield notification.payload
