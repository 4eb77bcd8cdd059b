"""List filters of the realtime admin, each bounded so the sidebar stays short and cheap
however many connections, users and streams there are."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.db import connection as db_connection
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from realtime.models import Connection, Stream
from realtime.storage.overview import subscriber_counts

# Choices offered in a filter's sidebar; any other value still works in the URL.
CHOICES = 20


def with_stream(queryset: QuerySet[Connection], stream: str) -> QuerySet[Connection]:
    """Connections whose recorded ``streams`` (a JSON list) contain ``stream`` exactly.

    PostgreSQL answers with jsonb containment (``@>``). SQLite has no containment lookup
    for JSON (``streams__contains`` is refused there), so a case-insensitive match of the
    quoted name on the JSON text narrows the rows (``"public:a"`` never matches inside
    ``"public:ab"``) and Python keeps the exact ones: stream names are case-sensitive.
    """
    if db_connection.vendor == "postgresql":
        return queryset.filter(streams__contains=[stream])
    candidates = queryset.filter(streams__icontains=json.dumps(stream)).values_list("pk", "streams")
    return queryset.filter(pk__in=[pk for pk, names in candidates if stream in (names or ())])


class StreamFilter(admin.SimpleListFilter):
    """Connections subscribed to a stream (as of their last lease renewal)."""

    title = "stream"
    parameter_name = "stream"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        counts = subscriber_counts()
        return [(name, f"{name} ({n})") for name, n in counts.most_common(CHOICES)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        return with_stream(queryset, value) if value else queryset


class UserFilter(admin.SimpleListFilter):
    """Signed-in or anonymous, or one user (the users with the most connections)."""

    title = "user"
    parameter_name = "user"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        top = (
            Connection.objects.exclude(user=None)
            .order_by()
            .values_list("user_id", "user__username")
            .annotate(n=Count("id"))
            .order_by("-n", "user__username")[:CHOICES]
        )
        return [
            ("signed-in", "Signed in"),
            ("anonymous", "Anonymous"),
            *[(str(pk), f"{username} ({n})") for pk, username, n in top],
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value == "signed-in":
            return queryset.exclude(user=None)
        if value == "anonymous":
            return queryset.filter(user=None)
        if value:
            try:
                return queryset.filter(user_id=value)
            except (ValueError, ValidationError) as exc:
                raise IncorrectLookupParameters(exc) from exc
        return queryset


class EventStreamFilter(admin.SimpleListFilter):
    """Events of one stream; the choices are the streams with the most events ever."""

    title = "stream"
    parameter_name = "stream"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        top = Stream.objects.order_by("-last_seq", "name").values_list("name", flat=True)
        return [(name, name) for name in top[:CHOICES]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        return queryset.filter(stream__name=value) if value else queryset
