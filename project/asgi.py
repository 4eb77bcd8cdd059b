"""ASGI entry point of the demo: Django for HTTP, the realtime app for WebSocket and SSE."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import re_path  # noqa: E402

from realtime.routing import http_urlpatterns, lifespan, websocket_urlpatterns  # noqa: E402

# The realtime routes carry their own authentication (session cookie, "Authorization:
# Token|Bearer|Ticket", WebSocket tickets) and Origin check.
application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                *http_urlpatterns,
                # Static files straight from daphne, so the demo needs no other server.
                re_path(r"", ASGIStaticFilesHandler(django_asgi_app)),
            ]
        ),
        "websocket": URLRouter(websocket_urlpatterns),
        # uvicorn and hypercorn drain the hub on shutdown (realtime.serve does on SIGTERM).
        "lifespan": lifespan,
    }
)
