"""ASGI routes of the live endpoints, authentication included; in your ``asgi.py``::

    application = ProtocolTypeRouter({
        "http": URLRouter([*realtime.routing.http_urlpatterns, re_path(r"", django_asgi_app)]),
        "websocket": URLRouter(realtime.routing.websocket_urlpatterns),
    })

Each endpoint is wrapped in ``RealtimeAuthMiddlewareStack`` (session, token, ticket) and
checks the WebSocket ``Origin`` itself, so nothing else needs to go around it.
"""

from __future__ import annotations

from django.urls import path

from realtime.auth import RealtimeAuthMiddlewareStack
from realtime.sse import SSEConnection
from realtime.websocket import WebSocketConnection

websocket_urlpatterns = [
    path("realtime/ws/", RealtimeAuthMiddlewareStack(WebSocketConnection.as_asgi())),
]
http_urlpatterns = [
    path("realtime/sse/", RealtimeAuthMiddlewareStack(SSEConnection.as_asgi())),
]
