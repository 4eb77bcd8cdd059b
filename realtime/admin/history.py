"""Read-only admins of history and state: events, streams, presence, leases, online status."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.timesince import timesince

from realtime.admin.base import ReadOnlyAdmin, ago
from realtime.admin.filters import EventStreamFilter
from realtime.models import (
    Event,
    Presence,
    PresenceMember,
    PresenceSession,
    Server,
    Stream,
    UserStatus,
)
from realtime.protocol import dumps


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
    list_display = ["stream", "key", "user", "since", "connections", "version"]
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
