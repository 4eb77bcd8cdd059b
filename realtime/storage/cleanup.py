"""Retention of everything a server keeps besides live state, in one sweep.

Each server process runs ``prune()`` every ``PRUNE_INTERVAL`` seconds, and the
``realtime_prune`` command runs it on demand: events beyond their stream's retention rule,
stream rows left with no events and no subscribers, ended presence sessions older than
``PRESENCE_HISTORY_RETENTION``, and the nonces of expired connection tickets.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TypedDict

from realtime.storage import presence, registry, store, tickets
from realtime.storage.dbthreads import in_lane


class Pruned(TypedDict):
    """What one sweep deleted, by kind."""

    events: int
    streams: int
    presence_sessions: int
    tickets: int


def prune(subscribed: Collection[str] = ()) -> Pruned:
    """Run every retention rule once; returns how many rows of each kind went.

    ``subscribed`` adds streams the caller knows to have subscribers that the connection
    records may not show yet (they are written with the next lease renewal).
    """
    return {  # in this order: streams emptied by the events' sweep go in the same run
        "events": store.prune(),
        "streams": store.prune_streams({*registry.recorded_subscriptions(), *subscribed}),
        "presence_sessions": presence.prune_history(),
        "tickets": tickets.prune(),
    }


aprune = in_lane(prune)
