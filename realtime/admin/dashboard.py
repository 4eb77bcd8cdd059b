"""The admin dashboard: connections per server and transport, rates, busiest streams, alerts.

The page is rendered from the database (``realtime.overview``) and one scatter-gather of
every live process's figures (``realtime.gather``); then it updates itself: each process
publishes its ``describe()`` to the staff-only ephemeral stream ``realtime:admin:stats``
every ``STATS_INTERVAL`` seconds, and the page re-reads the database part from
``dashboard/data/`` every few seconds. The views are async, so the gather's wait never
holds the process's ORM thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.cache import never_cache

from realtime.conf import realtime_settings
from realtime.core.gather import Gathered, agather
from realtime.core.reporting import ADMIN_CONNECTIONS_STREAM, ADMIN_STATS_STREAM
from realtime.core.stats import LATENCY_BUCKETS
from realtime.storage.overview import Overview, aoverview

# Seconds the page waits for the processes' figures before rendering without the missing.
GATHER_TIMEOUT = 0.5
# Seconds between the page's re-reads of the database part.
DATA_INTERVAL = 5.0

View = Callable[[HttpRequest], Awaitable[HttpResponse]]


def live_context() -> dict[str, Any]:
    """What the admin pages' scripts need to follow the app's own streams."""
    return {
        "ws_path": f"{get_script_prefix()}realtime/ws/",
        "stats_stream": ADMIN_STATS_STREAM,
        "connections_stream": ADMIN_CONNECTIONS_STREAM,
        "stats_interval": realtime_settings.STATS_INTERVAL,
        "presence_grace": realtime_settings.PRESENCE_GRACE,
        "data_interval": DATA_INTERVAL,
        "latency_buckets": list(LATENCY_BUCKETS),
    }


def latency_p99(stats: dict[str, Any]) -> str:
    """The publish-to-fan-out p99 since the process started, as its histogram bucket:
    "≤ 5 ms"; "\N{EN DASH}" before any event. (dashboard.js computes the same from live figures.)"""
    count = int(stats.get("latency_count") or 0)
    if not count:
        return "\N{EN DASH}"
    running = 0
    for bound, n in zip(LATENCY_BUCKETS, stats.get("latency_buckets") or (), strict=False):
        running += n
        if running >= 0.99 * count:
            return f"≤ {bound * 1000:g} ms"
    return f"> {LATENCY_BUCKETS[-1] * 1000:g} ms"


def uptime(since: datetime) -> str:
    seconds = (timezone.now() - since).total_seconds()
    return timesince(since) if seconds >= 60 else "under a minute"


def server_entry(row: dict[str, Any] | None, reply: dict[str, Any] | None) -> dict[str, Any]:
    """One server's line: the lease from the database, figures from the process itself."""
    if row is not None:
        entry: dict[str, Any] = {
            "id": row["id"],
            "name": row["name"],
            "started_at": row["started_at"],
            "expires_at": row["expires_at"],
            "expired": row["expired"],
            "connections": dict(row["connections"]),
        }
    else:
        assert reply is not None
        entry = {
            "id": reply.get("server"),
            "name": f"{reply.get('hostname')}:{reply.get('pid')}",
            "started_at": None,
            "expires_at": None,
            "expired": False,
            "connections": {},
        }
    started = ((reply or {}).get("stats") or {}).get("started")
    if started:
        since: datetime | None = datetime.fromtimestamp(float(started), tz=UTC)
    else:
        since = datetime.fromisoformat(row["started_at"]) if row else None
    entry.update(
        uptime=uptime(since) if since else None,
        reporting=reply is not None,
        subscriptions=None,
        events_per_second=None,
        deliveries_per_second=None,
        latency_p99="\N{EN DASH}",
        alerts=[],
    )
    if reply is not None:
        stats = reply.get("stats") or {}
        rates = reply.get("rates") or {}
        entry["connections"] = {k: v for k, v in (stats.get("connections") or {}).items() if v}
        entry["subscriptions"] = stats.get("subscriptions", 0)
        entry["events_per_second"] = rates.get("published_per_second")
        entry["deliveries_per_second"] = rates.get("deliveries_per_second")
        entry["latency_p99"] = latency_p99(stats)
        entry["alerts"] = list(reply.get("alerts") or [])
    return entry


def snapshot(view: Overview, gathered: Gathered) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON values (the page and ``data/`` share it)."""
    db = view.as_dict()
    replies = {r["server"]: r for r in gathered.replies}
    servers = [server_entry(row, replies.pop(row["id"], None)) for row in db["servers"]]
    servers += [server_entry(None, reply) for reply in replies.values()]
    totals: dict[str, float] = {"websocket": 0, "sse": 0, "subscriptions": 0}
    totals.update(events_per_second=0.0, deliveries_per_second=0.0)
    alerts = []
    for server in servers:
        for transport, n in server["connections"].items():
            totals[transport] = totals.get(transport, 0) + n
        for key in ("subscriptions", "events_per_second", "deliveries_per_second"):
            totals[key] += server[key] or 0
        alerts += [{**alert, "server_name": server["name"]} for alert in server["alerts"]]
    totals["connections"] = sum(n for s in servers for n in s["connections"].values())
    return {
        "at": timezone.now().isoformat(),
        "expected": gathered.expected,
        "reporting": gathered.reporting,
        "gather_error": gathered.error,
        "servers": servers,
        "totals": totals,
        "alerts": alerts,
        "streams": db["streams_by_events"],
        "busy_window_minutes": round(db["busy_window_seconds"] / 60),
        "events": db["events"],
        "users_online": db["users_online"],
        "presence": db["presence"],
        "sweeper": db["sweeper"],
    }


class DashboardViews:
    """The dashboard page and its data endpoint, for one admin site (see ``ConnectionAdmin``)."""

    def __init__(self, admin_site: Any, model_admin: Any) -> None:
        self.admin_site = admin_site
        self.model_admin = model_admin
        self.page: View = never_cache(self._page)
        self.data: View = never_cache(self._data)

    async def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        """As ``AdminSite.admin_view``: active staff, else the login page; and the
        Connection model's view permission, else 403."""
        user = await request.auser()
        if not (user.is_active and user.is_staff):
            login = reverse("admin:login", current_app=self.admin_site.name)
            return redirect_to_login(request.get_full_path(), login)
        if not await sync_to_async(self.model_admin.has_view_permission)(request):
            raise PermissionDenied
        return None

    async def _gather(self) -> tuple[Overview, Gathered]:
        gathered = await agather(GATHER_TIMEOUT)
        return await aoverview(), gathered

    async def _page(self, request: HttpRequest) -> HttpResponse:
        refusal = await self._refusal(request)
        if refusal is not None:
            return refusal
        view, gathered = await self._gather()
        site_context = await sync_to_async(self.admin_site.each_context)(request)
        opts = self.model_admin.model._meta
        context = {
            **site_context,
            "title": "Realtime dashboard",
            "opts": opts,
            "app_label": opts.app_label,
            "snapshot": snapshot(view, gathered),
            "live": live_context(),
            "data_url": reverse(f"{self.admin_site.name}:realtime_dashboard_data"),
            "connections_url": reverse(f"{self.admin_site.name}:realtime_connection_changelist"),
        }
        return TemplateResponse(request, "admin/realtime/dashboard.html", context)

    async def _data(self, request: HttpRequest) -> HttpResponse:
        refusal = await self._refusal(request)
        if refusal is not None:
            return refusal
        view, gathered = await self._gather()
        return JsonResponse(snapshot(view, gathered))
