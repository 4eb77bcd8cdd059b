"""Live connections: the list that refreshes itself, and the disconnect action.

Disconnecting calls ``realtime.revoke(connection=id, reason=...)``: the process holding the
connection, whichever it is, sends the client an ``error`` (``revoked``) with the reason and
closes it; the admin's log records who did it and why.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from realtime.admin import dashboard
from realtime.admin.base import ReadOnlyAdmin, ago
from realtime.admin.filters import StreamFilter, UserFilter
from realtime.core.revocation import revoke
from realtime.models import Connection

DEFAULT_REASON = "Disconnected by an administrator."

BROWSERS = [("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome")]
SYSTEMS = [
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Mac OS X", "macOS"),
    ("Windows", "Windows"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
]


def short_agent(agent: str) -> str:
    """A browser's User-Agent as "Chrome 131 · Linux"; other clients by their first word
    ("python-httpx/0.28")."""
    if not agent:
        return "\N{EN DASH}"
    name = next(
        (
            f"{label} {agent.split(token, 1)[1].split('.', 1)[0]}"
            for token, label in BROWSERS
            if token in agent
        ),
        None,
    )
    if name is None and "Safari/" in agent and "Version/" in agent:
        name = "Safari " + agent.split("Version/", 1)[1].split(".", 1)[0]
    if name is None:
        return Truncator(agent.split(" ", 1)[0]).chars(30)
    system = next((label for token, label in SYSTEMS if token in agent), None)
    return f"{name} · {system}" if system else name


class DisconnectForm(forms.Form):
    reason = forms.CharField(
        max_length=200,
        required=False,
        initial=DEFAULT_REASON,
        help_text="Sent to the client in the error frame that precedes the close.",
        widget=forms.TextInput(attrs={"size": 60}),
    )


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdmin):
    list_display = [
        "short_id",
        "who",
        "via",
        "stream_list",
        "server",
        "connected",
        "agent",
        "remote_addr",
    ]
    list_filter = [
        "transport",
        ("server", admin.RelatedOnlyFieldListFilter),
        UserFilter,
        StreamFilter,
    ]
    search_fields = ["user__username", "remote_addr"]
    list_select_related = ["user", "server"]
    list_per_page = 100
    actions = ["disconnect"]
    change_list_template = "admin/realtime/connection/change_list.html"
    fields = [
        "id",
        "user",
        "transport",
        "server",
        "remote_addr",
        "user_agent",
        "connected_at",
        "last_seen",
        "streams",
    ]

    @property
    def media(self) -> forms.Media:
        # Django's actions.js binds to the rows present at load; this page swaps its rows
        # as connections come and go, so connections.js handles selection instead.
        return forms.Media(js=["admin/js/core.js"])

    @admin.display(description="connection", ordering="id")
    def short_id(self, obj: Connection) -> str:
        return format_html('<span class="rt-id" title="{}">{}</span>', obj.id, obj.id[:8])

    @admin.display(description="user", ordering="user__username")
    def who(self, obj: Connection) -> str:
        return obj.user.get_username() if obj.user else "anonymous"

    @admin.display(description="transport", ordering="transport")
    def via(self, obj: Connection) -> str:
        return "SSE" if obj.transport == "sse" else obj.get_transport_display()

    @admin.display(description="client")
    def agent(self, obj: Connection) -> str:
        return format_html(
            '<span title="{}">{}</span>', obj.user_agent, short_agent(obj.user_agent)
        )

    @admin.display(description="connected", ordering="connected_at")
    def connected(self, obj: Connection) -> str:
        return format_html(
            '<time datetime="{}">{}</time>', obj.connected_at.isoformat(), ago(obj.connected_at)
        )

    @admin.display(description="streams")
    def stream_list(self, obj: Connection) -> str:
        names = [n for n in obj.streams or () if isinstance(n, str)]
        shown = format_html_join(", ", "<code>{}</code>", ((n,) for n in names[:3]))
        more = f" +{len(names) - 3}" if len(names) > 3 else ""
        return format_html("{}{}", shown, more) if names else "\N{EN DASH}"

    # --- disconnecting -----------------------------------------------------------------
    def has_disconnect_permission(self, request: HttpRequest) -> bool:
        """Disconnecting takes the model's change permission (superusers have it)."""
        return bool(request.user.has_perm("realtime.change_connection"))

    @admin.action(description="Disconnect selected connections", permissions=["disconnect"])
    def disconnect(
        self, request: HttpRequest, queryset: QuerySet[Connection]
    ) -> HttpResponse | None:
        """Ask for a reason, then revoke each connection on whichever process holds it."""
        form = DisconnectForm(request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"].strip() or DEFAULT_REASON
            count = 0
            for conn in queryset.select_related("user", "server"):
                revoke(connection=conn.id, reason=reason)
                self.log_change(request, conn, f"Disconnected: {reason}")
                count += 1
            self.message_user(
                request,
                f"Disconnecting {count} connection{'s' if count != 1 else ''}: {reason}",
                messages.SUCCESS,
            )
            return None
        shown = list(queryset.select_related("user", "server")[:20])
        context = {
            **self.admin_site.each_context(request),
            "title": "Disconnect connections?",
            "opts": self.model._meta,
            "form": form,
            "connections": shown,
            "count": queryset.count(),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across") == "1",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/realtime/connection/disconnect_confirmation.html", context
        )

    # --- live updates and the dashboard --------------------------------------------------
    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra = {
            "title": "Live connections",
            "realtime_live": dashboard.live_context(),
            "dashboard_url": reverse(f"{self.admin_site.name}:realtime_dashboard"),
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def get_urls(self) -> list[URLPattern]:
        views = dashboard.DashboardViews(self.admin_site, self)
        return [
            # Async views: django-stubs' path() does not know them yet.
            path("dashboard/", views.page, name="realtime_dashboard"),  # type: ignore[arg-type]
            path("dashboard/data/", views.data, name="realtime_dashboard_data"),  # type: ignore[arg-type]
            *super().get_urls(),
        ]
