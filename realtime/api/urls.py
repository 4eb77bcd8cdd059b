"""The REST API's URLs, included by ``realtime.urls`` under ``api/``."""

from django.urls import path

from realtime.api import views
from realtime.api.schema import SchemaView

app_name = "api"

urlpatterns = [
    path("streams/", views.StreamListView.as_view(), name="streams"),
    path("streams/<path:stream>/events/", views.events_view, name="events"),
    path("streams/<path:stream>/presence/", views.PresenceView.as_view(), name="presence"),
    path("connections/", views.ConnectionListView.as_view(), name="connections"),
    path("schema/", SchemaView.as_view(), name="schema"),
]
