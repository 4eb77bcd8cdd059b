"""What the database says about the deployment right now: server leases, connections,
streams, presence, and how far the sweeper is behind.

Read by the admin dashboard and ``manage.py realtime_status``; it works with no server
running. Live per-process figures (rates, counters, alerts) come from ``realtime.gather``.
Every query here is bounded by an index or by the number of live connections.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Count, Min
from django.utils import timezone

from realtime.models import Connection, Event, PresenceMember, Server, Stream, UserStatus
from realtime.storage import registry

# Busiest streams are counted over this window (Event.ts is indexed).
BUSY_WINDOW = timedelta(minutes=5)
# The stored-events rate is measured over this window.
RATE_WINDOW = timedelta(minutes=1)


@dataclass
class ServerRow:
    id: str
    hostname: str
    pid: int
    started_at: datetime
    expires_at: datetime
    connections: dict[str, int] = field(default_factory=dict)  # by transport

    @property
    def name(self) -> str:
        return f"{self.hostname}:{self.pid}"

    @property
    def expired(self) -> bool:
        return self.expires_at <= timezone.now()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "hostname": self.hostname,
            "pid": self.pid,
            "started_at": self.started_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "expired": self.expired,
            "connections": dict(self.connections),
        }


@dataclass
class StreamRow:
    name: str
    last_seq: int = 0
    events: int = 0  # stored in BUSY_WINDOW
    subscribers: int = 0  # recorded connections subscribed (as of their last lease renewal)

    @property
    def events_per_second(self) -> float:
        return self.events / BUSY_WINDOW.total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "last_seq": self.last_seq,
            "events": self.events,
            "events_per_second": round(self.events_per_second, 3),
            "subscribers": self.subscribers,
        }


@dataclass
class Overview:
    servers: list[ServerRow]
    connections: dict[str, int]  # by transport, all servers
    by_events: list[StreamRow]  # busiest streams: most events in BUSY_WINDOW
    by_subscribers: list[StreamRow]  # most subscribed streams
    users_online: int
    presence_members: int
    presence_streams: int
    expired_leases: int
    sweeper_lag: float  # seconds the oldest expired lease has waited to be swept (0: none)
    events_recent: int  # events stored in the last RATE_WINDOW, by any publisher
    at: datetime

    @property
    def total_connections(self) -> int:
        return sum(self.connections.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "servers": [s.as_dict() for s in self.servers],
            "connections": {"total": self.total_connections, **self.connections},
            "streams_by_events": [s.as_dict() for s in self.by_events],
            "streams_by_subscribers": [s.as_dict() for s in self.by_subscribers],
            "busy_window_seconds": BUSY_WINDOW.total_seconds(),
            "users_online": self.users_online,
            "presence": {"members": self.presence_members, "streams": self.presence_streams},
            "sweeper": {"expired_leases": self.expired_leases, "lag_seconds": self.sweeper_lag},
            "events": {
                "window_seconds": RATE_WINDOW.total_seconds(),
                "stored": self.events_recent,
                "per_second": round(self.events_recent / RATE_WINDOW.total_seconds(), 3),
            },
        }


def servers() -> list[ServerRow]:
    rows = {
        s.id: ServerRow(s.id, s.hostname, s.pid, s.started_at, s.expires_at)
        for s in Server.objects.all()
    }
    counts = (
        Connection.objects.order_by().values_list("server_id", "transport").annotate(n=Count("id"))
    )
    for server_id, transport, n in counts:
        if server_id in rows:
            rows[server_id].connections[transport] = n
    return sorted(rows.values(), key=lambda s: (s.hostname, s.pid))


def subscriber_counts() -> Counter[str]:
    """Subscribers per stream, from every recorded connection's ``streams``."""
    return Counter(registry.recorded_subscriptions())


def busiest_streams(limit: int = 10, subscribers: Counter[str] | None = None) -> list[StreamRow]:
    """The streams with the most events stored in the last ``BUSY_WINDOW``."""
    since = timezone.now() - BUSY_WINDOW
    top = (
        Event.objects.filter(ts__gte=since)
        .order_by()
        .values_list("stream_id")
        .annotate(n=Count("id"))
        .order_by("-n")[:limit]
    )
    counts = dict(top)
    streams = Stream.objects.in_bulk(list(counts))
    subscribers = subscribers if subscribers is not None else Counter()
    rows = [
        StreamRow(s.name, s.last_seq, counts[pk], subscribers.get(s.name, 0))
        for pk, s in streams.items()
    ]
    return sorted(rows, key=lambda r: (-r.events, r.name))


def most_subscribed(subscribers: Counter[str], limit: int = 10) -> list[StreamRow]:
    top = subscribers.most_common(limit)
    heads = dict(
        Stream.objects.filter(name__in=[name for name, _ in top]).values_list("name", "last_seq")
    )
    since = timezone.now() - BUSY_WINDOW
    events = dict(
        Event.objects.filter(stream__name__in=[name for name, _ in top], ts__gte=since)
        .order_by()
        .values_list("stream__name")
        .annotate(n=Count("id"))
    )
    return [StreamRow(name, heads.get(name, 0), events.get(name, 0), n) for name, n in top]


def sweeper_state() -> tuple[int, float]:
    """Expired leases not swept yet, and how long the oldest has waited, in seconds."""
    now = timezone.now()
    expired = Server.objects.filter(expires_at__lte=now).aggregate(
        n=Count("id"), oldest=Min("expires_at")
    )
    oldest = expired["oldest"]
    return expired["n"], (now - oldest).total_seconds() if oldest else 0.0


def overview(limit: int = 10) -> Overview:
    server_rows = servers()
    connections: Counter[str] = Counter()
    for row in server_rows:
        connections.update(row.connections)
    subscribers = subscriber_counts()
    expired, lag = sweeper_state()
    present = PresenceMember.objects.all()
    return Overview(
        servers=server_rows,
        connections=dict(connections),
        by_events=busiest_streams(limit, subscribers),
        by_subscribers=most_subscribed(subscribers, limit),
        users_online=UserStatus.objects.filter(online=True).count(),
        presence_members=present.count(),
        presence_streams=present.values("stream").distinct().count(),
        expired_leases=expired,
        sweeper_lag=lag,
        events_recent=Event.objects.filter(ts__gte=timezone.now() - RATE_WINDOW).count(),
        at=timezone.now(),
    )


# For async HTTP views: the request cycle closes the connection (see realtime.gather).
aoverview = sync_to_async(overview)
asweeper_state = sync_to_async(sweeper_state)
