"""This process's live counters, kept as plain integers.

The hot paths (a delivery per subscriber per event) only add to an int; turning the numbers
into Prometheus metrics, dashboards and alerts happens when someone asks
(``realtime.metrics``), so counting costs next to nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

# Upper bounds, in seconds, of the publish-to-fan-out latency histogram's buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    connections: Counter[str] = field(default_factory=Counter)  # open, by transport
    subscriptions: int = 0  # open
    published: int = 0  # events stored by publish() in this process
    group_commits: int = 0  # transactions that committed concurrent apublish() calls together
    group_committed: int = 0  # the apublish() calls those transactions carried
    received: int = 0  # event messages the hub took from the channel layer
    deliveries: int = 0  # event frames queued to connections
    resumes: int = 0  # subscriptions that asked for history (since/cursor)
    replayed: int = 0  # events delivered from the database
    slow_consumer_drops: int = 0  # connections cut or skipped for not reading
    sweeper_lag: float = 0.0  # latest sweep: worst delay, in s, from a lease expiring to its sweep
    auth_failures: Counter[str] = field(default_factory=Counter)  # refused handshakes, by code
    errors: Counter[str] = field(default_factory=Counter)  # error frames sent, by code
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_count: int = 0
    latency_sum: float = 0.0

    def observe_latency(self, seconds: float) -> None:
        """Publish-to-fan-out latency of one event (commit to the hub's receive)."""
        self.latency_count += 1
        self.latency_sum += seconds
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[index] += 1
                break

    def snapshot(self) -> dict[str, object]:
        """Plain JSON values (for the channel layer and the dashboard)."""
        return {
            "started": self.started,
            "connections": dict(self.connections),
            "subscriptions": self.subscriptions,
            "published": self.published,
            "group_commits": self.group_commits,
            "group_committed": self.group_committed,
            "received": self.received,
            "deliveries": self.deliveries,
            "resumes": self.resumes,
            "replayed": self.replayed,
            "slow_consumer_drops": self.slow_consumer_drops,
            "sweeper_lag": self.sweeper_lag,
            "auth_failures": dict(self.auth_failures),
            "errors": dict(self.errors),
            "latency_buckets": list(self.latency_buckets),
            "latency_count": self.latency_count,
            "latency_sum": self.latency_sum,
        }


stats = Stats()
