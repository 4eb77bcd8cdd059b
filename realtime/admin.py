"""The Django admin of the app: live connections (updating themselves, with a disconnect
action), a dashboard, and read-only views of history, presence, leases and online status.

Everything here is read-only: the rows are the app's own bookkeeping, and editing them would
only make them lie. The one thing an admin may do is disconnect: ``realtime.revoke()`` ends
the connection on whichever server process holds it, and the admin's log records who did it
and why. The pages update themselves over the app's own staff-only streams
(``realtime:admin:connections``, ``realtime:admin:stats``).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.timesince import timesince

from realtime import dashboard
from realtime.admin_filters import EventStreamFilter, StreamFilter, UserFilter
from realtime.models import (
    Connection,
    Event,
    Presence,
    PresenceMember,
    PresenceSession,
    Server,
    Stream,
    UserStatus,
)
from realtime.revocation import revoke

DEFAULT_REASON = "Disconnected by an administrator."


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """View only: no add, change or delete, whoever asks."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def ago(value: Any) -> str:
    """ "12 s ago", "5 min ago", "3 h ago", "2 d ago": short enough for a list column."""
    if not value:
        return "\N{EN DASH}"
    seconds = max(0.0, (timezone.now() - value).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


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
    """ "Chrome 131 · Linux" from a browser's User-Agent; other clients by their first word
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


class PresenceInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Presence
    fields = ["connection", "ref", "meta", "joined_at", "server"]
    readonly_fields = ["connection", "ref", "meta", "joined_at", "server"]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PresenceMember)
class PresenceMemberAdmin(ReadOnlyAdmin):
    list_display = ["stream", "key", "user", "present", "since", "connections", "version"]
    list_filter = ["present"]
    search_fields = ["=stream", "key", "user__username"]
    list_select_related = ["user"]
    inlines = [PresenceInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PresenceMember]:
        queryset: QuerySet[PresenceMember] = super().get_queryset(request)
        return queryset.annotate(n_metas=Count("metas"))

    @admin.display(description="connections", ordering="n_metas")
    def connections(self, obj: Any) -> int:
        return int(obj.n_metas)


@admin.register(Presence)
class PresenceAdmin(ReadOnlyAdmin):
    list_display = ["stream", "key", "connection", "ref", "meta", "joined_at", "server"]
    search_fields = ["=member__stream", "member__key", "=connection"]
    list_select_related = ["member", "server"]

    @admin.display(ordering="member__stream")
    def stream(self, obj: Presence) -> str:
        return obj.member.stream

    @admin.display(ordering="member__key")
    def key(self, obj: Presence) -> str:
        return obj.member.key


@admin.register(PresenceSession)
class PresenceSessionAdmin(ReadOnlyAdmin):
    list_display = ["stream", "key", "user", "started_at", "ended_at", "duration"]
    list_filter = [("ended_at", admin.EmptyFieldListFilter)]
    search_fields = ["=stream", "key", "user__username"]
    list_select_related = ["user"]
    date_hierarchy = "started_at"

    @admin.display()
    def duration(self, obj: PresenceSession) -> str:
        return timesince(obj.started_at, obj.ended_at or timezone.now())


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["stream", "seq", "event", "ts", "preview"]
    list_filter = [EventStreamFilter]
    search_fields = ["=stream__name", "=event"]
    search_help_text = "An exact stream name or event type."
    list_select_related = ["stream"]
    date_hierarchy = "ts"
    ordering = ["-id"]
    show_full_result_count = False  # history can be large: no second COUNT(*)

    @admin.display(description="data")
    def preview(self, obj: Event) -> str:
        return Truncator(json_text(obj.data)).chars(80)


def json_text(value: Any) -> str:
    from realtime.protocol import dumps

    try:
        return dumps(value)
    except (TypeError, ValueError):
        return repr(value)


@admin.register(Stream)
class StreamAdmin(ReadOnlyAdmin):
    list_display = ["name", "last_seq", "trimmed_seq", "kept", "epoch", "created_at", "events"]
    search_fields = ["name"]

    @admin.display(description="events kept")
    def kept(self, obj: Stream) -> int:
        return obj.last_seq - obj.trimmed_seq

    @admin.display(description="history")
    def events(self, obj: Stream) -> str:
        url = reverse("admin:realtime_event_changelist")
        return format_html('<a href="{}?stream={}">events</a>', url, obj.name)


@admin.register(Server)
class ServerAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "id", "started_at", "lease", "connections"]
    search_fields = ["hostname", "=pid", "=id"]
    change_list_template = "admin/realtime/server/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Server]:
        queryset: QuerySet[Server] = super().get_queryset(request)
        return queryset.annotate(n_connections=Count("connections"))

    @admin.display(description="connections", ordering="n_connections")
    def connections(self, obj: Any) -> int:
        return int(obj.n_connections)

    @admin.display(description="lease", ordering="expires_at")
    def lease(self, obj: Server) -> str:
        left = (obj.expires_at - timezone.now()).total_seconds()
        if left > 0:
            return f"live (expires in {left:.0f} s unless renewed)"
        return format_html('<strong class="rt-expired">expired {}</strong>', ago(obj.expires_at))

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra = {"dashboard_url": reverse(f"{self.admin_site.name}:realtime_dashboard")}
        return super().changelist_view(request, {**extra, **(extra_context or {})})


@admin.register(UserStatus)
class UserStatusAdmin(ReadOnlyAdmin):
    list_display = ["user", "online", "changed_at", "last_seen"]
    list_filter = ["online"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
