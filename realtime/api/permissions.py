"""The stream policy, asked from the REST API's (synchronous) views.

The API asks the same ``get_policy().has_permission(action, user, stream)`` as the WebSocket
and SSE endpoints, with the same actions: ``publish`` for ``POST .../events/``, ``history``
for reading events, ``presence`` for a stream's members, ``subscribe`` for which streams a
caller sees in the list. Server API tokens may do everything; staff users may also publish.
Endpoints that are not about one stream (the connection list) are for staff users and server
tokens only: :class:`StaffOrServer`.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from realtime.api.authentication import is_server, is_staff
from realtime.api.errors import APIError
from realtime.core.policy import Action, get_policy
from realtime.protocol import FORBIDDEN


def allowed(request: Request, action: Action, stream: str) -> bool:
    """Whether the caller may do ``action`` on ``stream``.

    The policy is a coroutine meant for the event loop; views run in a thread, and
    ``async_to_sync`` runs it on the server's loop (or a fresh one under WSGI) while ORM calls
    it makes through ``database_sync_to_async`` come back to this thread.
    """
    if is_server(request):
        return True
    if action == "publish" and is_staff(request):
        return True
    return bool(async_to_sync(get_policy().has_permission)(action, request.user, stream))


def require(request: Request, action: Action, stream: str) -> None:
    """Raise 403 ``forbidden`` (401 when anonymous: signing in might help) unless allowed.

    The message does not say whether the stream exists, as over WebSocket and SSE.
    """
    if allowed(request, action, stream):
        return
    raise denied(request, f"Not allowed to {action} {stream!r}.")


def denied(request: Request, message: str) -> APIError:
    anonymous = not (request.user and request.user.is_authenticated)
    error = APIError(401 if anonymous else 403, FORBIDDEN, message)
    if anonymous:
        error.auth_header = 'Bearer realm="realtime"'
    return error


class StaffOrServer(BasePermission):
    """Staff users and server tokens only; anyone else is refused as :func:`denied` says."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if is_server(request) or is_staff(request):
            return True
        # Raised rather than returned: DRF would answer 401 authentication_required.
        raise denied(request, "Only staff users and server tokens may do this.")
