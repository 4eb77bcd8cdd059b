"""Prometheus metrics of every server process, from whichever process is scraped.

``realtime.urls`` serves them at ``metrics`` (``/realtime/metrics`` when mounted at
``realtime/``); route ``metrics_view`` yourself to serve them elsewhere. The view asks every
live process for its counters over the channel layer (``realtime.gather``) and renders them
with a ``server`` label per process (``hostname:pid``), plus ``realtime_servers_expected``
and ``realtime_servers_reporting`` so a partial scrape is visible as such.

Why not one scrape target per process, or prometheus-client's multiprocess mode? Behind a
load balancer a scrape reaches any one process, and daphne processes are not addressable
one by one from outside; multiprocess mode only aggregates processes that share a disk
directory on one machine. Gathering over the channel layer sees every process on every
machine from any of them. Counters are kept per process (``realtime.stats``) and reset when
it restarts, which Prometheus's ``rate()`` handles; a restarted process is a new ``server``.

Access: a staff user's session, or ``Authorization: Bearer <token>`` with a token from
``REALTIME["METRICS_TOKEN"]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from realtime.conf import realtime_settings
from realtime.core.gather import Gathered, agather
from realtime.core.stats import LATENCY_BUCKETS
from realtime.storage.overview import asweeper_state

# The classic text format (0.0.4), which every Prometheus version reads: the names here need
# none of the 1.0.0 format's UTF-8 escaping (prometheus-client >= 0.22 announces 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds a scrape waits for the processes' answers (a healthy one answers in milliseconds;
# Prometheus's default scrape_timeout is 10 s).
GATHER_TIMEOUT = 1.0
TRANSPORTS = ("websocket", "sse")

# Monotonic counters of ``realtime.stats``: attribute -> (metric name without _total, help).
COUNTERS = {
    "published": ("realtime_events_published", "Events stored by publish() in this process."),
    "group_commits": (
        "realtime_publish_group_commits",
        "Transactions that committed concurrent apublish() calls together (group commit).",
    ),
    "group_committed": (
        "realtime_publish_group_calls",
        "apublish() calls committed by those transactions.",
    ),
    "received": (
        "realtime_events_received",
        "Event messages this process's hub took from the channel layer.",
    ),
    "deliveries": ("realtime_deliveries", "Event frames queued to this process's connections."),
    "resumes": (
        "realtime_resume_requests",
        "Subscriptions that asked for history (since or an SSE cursor).",
    ),
    "replayed": ("realtime_replayed_events", "Events delivered from the database (replays)."),
    "slow_consumer_drops": (
        "realtime_slow_consumer_drops",
        "Connections cut or skipped for not reading fast enough.",
    ),
}


def server_labels(replies: list[dict[str, Any]]) -> list[str]:
    """``hostname:pid`` per reply; the hub id is appended where two would be equal."""
    names = [f"{r.get('hostname', '?')}:{r.get('pid', '?')}" for r in replies]
    return [
        f"{name}/{r['server'][:8]}" if names.count(name) > 1 else name
        for name, r in zip(names, replies, strict=True)
    ]


class RealtimeCollector(Collector):
    """Metric families from one scatter-gather (and the sweeper state from the database)."""

    def __init__(self, gathered: Gathered, expired_leases: int = 0, sweeper_lag: float = 0.0):
        self.gathered = gathered
        self.expired_leases = expired_leases
        self.sweeper_lag = sweeper_lag

    def collect(self) -> Iterator[Metric]:
        gathered = self.gathered
        replies = gathered.replies
        labels = server_labels(replies)

        yield GaugeMetricFamily(
            "realtime_servers_expected",
            "Server processes holding a live lease when the scrape asked.",
            value=gathered.expected,
        )
        yield GaugeMetricFamily(
            "realtime_servers_reporting",
            "Server processes whose figures are in this scrape (less than expected: partial).",
            value=gathered.reporting,
        )
        yield GaugeMetricFamily(
            "realtime_gather_duration_seconds",
            "Seconds this scrape took to gather every process's figures.",
            value=gathered.elapsed,
        )
        yield GaugeMetricFamily(
            "realtime_expired_leases",
            "Leases of dead processes not swept yet (database).",
            value=self.expired_leases,
        )
        yield GaugeMetricFamily(
            "realtime_sweeper_lag_seconds",
            "Seconds the oldest expired lease has waited to be swept (database; 0: none).",
            value=self.sweeper_lag,
        )

        info = GaugeMetricFamily(
            "realtime_server_info",
            "One per reporting process: its hub id, host and pid.",
            labels=["server", "id", "hostname", "pid"],
        )
        started = GaugeMetricFamily(
            "realtime_server_start_time_seconds",
            "When the process's counters started (Unix time).",
            labels=["server"],
        )
        connections = GaugeMetricFamily(
            "realtime_connections",
            "Open connections, by transport.",
            labels=["server", "transport"],
        )
        subscriptions = GaugeMetricFamily(
            "realtime_subscriptions", "Open subscriptions.", labels=["server"]
        )
        counters = {
            key: CounterMetricFamily(name, doc, labels=["server"])
            for key, (name, doc) in COUNTERS.items()
        }
        auth_failures = CounterMetricFamily(
            "realtime_auth_failures",
            "Refused handshakes, by reason code.",
            labels=["server", "code"],
        )
        errors = CounterMetricFamily(
            "realtime_errors", "Error frames sent to clients, by code.", labels=["server", "code"]
        )
        latency = HistogramMetricFamily(
            "realtime_fanout_latency_seconds",
            "Seconds from publish (after commit) to the hub's receipt of the event.",
            labels=["server"],
        )
        sweep_max = GaugeMetricFamily(
            "realtime_sweeper_lag_max_seconds",
            "Worst delay this process's sweeps found between a lease expiring and its sweep.",
            labels=["server"],
        )
        alerts = GaugeMetricFamily(
            "realtime_alert_active",
            "1 for each alert threshold this process is over (REALTIME['ALERTS']).",
            labels=["server", "alert"],
        )

        for label, reply in zip(labels, replies, strict=True):
            stats = reply.get("stats") or {}
            info.add_metric(
                [
                    label,
                    str(reply.get("server", "")),
                    str(reply.get("hostname", "")),
                    str(reply.get("pid", "")),
                ],
                1,
            )
            started.add_metric([label], float(stats.get("started", 0)))
            by_transport = stats.get("connections") or {}
            for transport in sorted({*TRANSPORTS, *by_transport}):
                connections.add_metric([label, transport], by_transport.get(transport, 0))
            subscriptions.add_metric([label], stats.get("subscriptions", 0))
            for key, family in counters.items():
                family.add_metric([label], stats.get(key, 0))
            for code, n in sorted((stats.get("auth_failures") or {}).items()):
                auth_failures.add_metric([label, code], n)
            for code, n in sorted((stats.get("errors") or {}).items()):
                errors.add_metric([label, code], n)
            latency.add_metric([label], *_histogram(stats))
            sweep_max.add_metric([label], float(stats.get("sweeper_lag", 0.0)))
            for alert in reply.get("alerts") or ():
                alerts.add_metric([label, str(alert.get("name"))], 1)

        yield info
        yield started
        yield connections
        yield subscriptions
        yield from counters.values()
        yield auth_failures
        yield errors
        yield latency
        yield sweep_max
        yield alerts


def _histogram(stats: dict[str, Any]) -> tuple[list[tuple[str, float]], float]:
    """``realtime.stats`` keeps a count per bucket; Prometheus wants cumulative counts."""
    counts = list(stats.get("latency_buckets") or [0] * len(LATENCY_BUCKETS))
    buckets, total = [], 0
    for bound, n in zip(LATENCY_BUCKETS, counts, strict=False):
        total += n
        buckets.append((floatToGoString(bound), float(total)))  # type: ignore[no-untyped-call]
    buckets.append(("+Inf", float(stats.get("latency_count", total))))
    return buckets, float(stats.get("latency_sum", 0.0))


def render(gathered: Gathered, expired_leases: int = 0, sweeper_lag: float = 0.0) -> bytes:
    """The Prometheus text exposition of one gather."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RealtimeCollector(gathered, expired_leases, sweeper_lag))
    return generate_latest(registry)


def _tokens() -> list[str]:
    value = realtime_settings.METRICS_TOKEN
    if not value:
        return []
    return [value] if isinstance(value, str) else [t for t in value if t]


def _refuse(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="realtime metrics"'
    return response


async def _access(request: HttpRequest) -> HttpResponse | None:
    """None if the request may read the metrics, else the refusal."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        credentials = credentials.strip()
        # Compare with every token, so the time taken says nothing about which one matched.
        matches = [constant_time_compare(credentials, token) for token in _tokens()]
        if any(matches):
            return None
        return _refuse(401, "Invalid metrics token.")
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else None
    if user is None or not user.is_authenticated:
        return _refuse(401, "Sign in as staff, or send Authorization: Bearer <METRICS_TOKEN>.")
    if not (user.is_active and user.is_staff):
        return _refuse(403, "Only staff users may read the metrics.")
    return None


@require_safe
@never_cache
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET`` → every live process's metrics in the Prometheus text format."""
    refusal = await _access(request)
    if refusal is not None:
        return refusal
    gathered = await agather(GATHER_TIMEOUT)
    expired, lag = await asweeper_state()
    return HttpResponse(render(gathered, expired, lag), content_type=CONTENT_TYPE)
