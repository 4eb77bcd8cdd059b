"""The app's HTTP URLs; mount them at ``realtime/``:
``path("realtime/", include("realtime.urls"))``."""

from django.urls import include, path

from realtime.endpoints import metrics, views

app_name = "realtime"

urlpatterns = [
    path("heartbeat/", views.heartbeat, name="heartbeat"),
    path("ticket/", views.ticket, name="ticket"),
    path("api/", include("realtime.api.urls")),  # the REST API: docs/api.md
    path("metrics", metrics.metrics_view, name="metrics"),  # Prometheus: docs/operations.md
]
