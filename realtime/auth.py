"""Public path of the handshake's authentication; the code is ``realtime.endpoints.auth``."""

from realtime.endpoints.auth import (
    RealtimeAuthMiddleware,
    RealtimeAuthMiddlewareStack,
    drf_token_user,
)

__all__ = ["RealtimeAuthMiddleware", "RealtimeAuthMiddlewareStack", "drf_token_user"]
