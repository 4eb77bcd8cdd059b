"""HTTP endpoints beside the streams: connection tickets, and the heartbeat SSE clients use
to stay present.

An EventSource cannot send anything, so an SSE client that joined presence POSTs here every
``heartbeat`` seconds (the interval its ``realtime.welcome`` event gives). The request may
reach any server process: the process holding the connection is found through its
``Connection`` row and told over the channel layer — no database write per heartbeat.
"""

from __future__ import annotations

import json

from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from realtime.bus import messages
from realtime.conf import realtime_settings
from realtime.core.hub import get_hub
from realtime.models import Connection
from realtime.protocol import AUTHENTICATION_REQUIRED, INVALID_FRAME, UNKNOWN_CONNECTION
from realtime.storage import tickets


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


@database_sync_to_async
def _server_channel(connection_id: str) -> str | None:
    return (
        Connection.objects.filter(id=connection_id)
        .values_list("server__channel", flat=True)
        .first()
    )


# The connection id is a 128-bit secret known only to its client; the request changes nothing
# but that connection's liveness, so it needs no CSRF token (EventSource clients have none).
@csrf_exempt
@require_POST
async def heartbeat(request: HttpRequest) -> HttpResponse:
    """``POST {"connection": "<id>", "received": N}`` → 204, or 404 if the connection is gone.

    ``received`` (optional) acknowledges the frames received so far (``realtime.flow``).
    """
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, INVALID_FRAME, "Body must be JSON.")
    connection_id = request.GET.get("connection")
    if connection_id is None:
        connection_id = body.get("connection") if isinstance(body, dict) else None
    if not isinstance(connection_id, str) or not 0 < len(connection_id) <= 32:
        return _error(400, INVALID_FRAME, 'Give the connection id: {"connection": "..."}.')
    received = body.get("received") if isinstance(body, dict) else None
    if received is not None and (isinstance(received, bool) or not isinstance(received, int)):
        return _error(400, INVALID_FRAME, "'received' must be the number of frames received.")
    hub = get_hub()
    local = hub.connections.get(connection_id)
    if local is not None:
        local.touch()
        if received is not None:
            local.acknowledge(received)
        return HttpResponse(status=204)
    channel = await _server_channel(connection_id)
    if channel is None:
        return _error(404, UNKNOWN_CONNECTION, "No such connection: reconnect.")
    await hub.backplane.send(channel, messages.touch(connection_id, received))
    return HttpResponse(status=204)


@require_POST
def ticket(request: HttpRequest) -> JsonResponse:
    """``POST`` (signed in, with the CSRF token) → ``{"ticket", "expires_in"}``.

    The page passes the ticket to the WebSocket as the subprotocol ``realtime.ticket.<ticket>``
    (or to SSE/HTTP in ``Authorization: Ticket <ticket>``); it works once, within
    ``TICKET_MAX_AGE`` seconds, and ends with the session that asked for it.
    """
    if not request.user.is_authenticated:
        return _error(401, AUTHENTICATION_REQUIRED, "Sign in to get a connection ticket.")
    issued = tickets.issue(request.user, request.session.session_key)
    return JsonResponse(
        {"ticket": issued, "expires_in": realtime_settings.TICKET_MAX_AGE},
        headers={"Cache-Control": "no-store"},
    )
