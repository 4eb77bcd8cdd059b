"""ASGI entry point serving only the naive consumer, at ``/naive/ws/`` (for ``bench.fanout``).

The middleware stack is the same as ``project.asgi``'s WebSocket one, so both sides of the
benchmark pay the same per-connection costs.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from bench.naive import NaiveConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([path("naive/ws/", NaiveConsumer.as_asgi())]))
        ),
    }
)
