"""ASGI routes of the live endpoints; mount them in your project's ``asgi.py``::

application = ProtocolTypeRouter({
    "http": AuthMiddlewareStack(URLRouter([*realtime.routing.http_urlpatterns,
                                           re_path(r"", django_asgi_app)])),
    "websocket": AllowedHostsOriginValidator(
        AuthMiddlewareStack(URLRouter(realtime.routing.websocket_urlpatterns))),
})
"""

from __future__ import annotations

from django.urls import path

from realtime.sse import SSEConnection
from realtime.websocket import WebSocketConnection

websocket_urlpatterns = [path("realtime/ws/", WebSocketConnection.as_asgi())]
http_urlpatterns = [path("realtime/sse/", SSEConnection.as_asgi())]
