"""ASGI routes of the live endpoints, authentication included; in your ``asgi.py``::

    application = ProtocolTypeRouter({
        "http": URLRouter([*realtime.routing.http_urlpatterns, re_path(r"", django_asgi_app)]),
        "websocket": URLRouter(realtime.routing.websocket_urlpatterns),
        "lifespan": realtime.routing.lifespan,  # uvicorn, hypercorn: drain on shutdown
    })

Each endpoint is wrapped in ``RealtimeAuthMiddlewareStack`` (session, token, ticket) and
checks the WebSocket ``Origin`` itself, so nothing else needs to go around it.
"""

from __future__ import annotations

from typing import Any

from django.urls import path

from realtime.endpoints.auth import RealtimeAuthMiddlewareStack
from realtime.endpoints.lifespan import lifespan
from realtime.endpoints.sse import SSEConnection
from realtime.endpoints.websocket import WebSocketConnection

# Channels' URLRouter takes ASGI applications in Django's path(), which django-stubs types
# for views only.
_websocket: Any = RealtimeAuthMiddlewareStack(WebSocketConnection.as_asgi())
_sse: Any = RealtimeAuthMiddlewareStack(SSEConnection.as_asgi())

websocket_urlpatterns = [path("realtime/ws/", _websocket)]
http_urlpatterns = [path("realtime/sse/", _sse)]

__all__ = ["http_urlpatterns", "lifespan", "websocket_urlpatterns"]
