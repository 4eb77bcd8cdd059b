"""The app's HTTP endpoints, as the client calls them: the heartbeat of an SSE connection,
publishing over HTTP (the REST API, for a client on SSE), and asking why a WebSocket
handshake was refused (the browser client's ``client/http.js``). ``httpx``, the ``client``
extra.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from realtime.client.errors import ClientError, ConnectionRefused, RequestError

if TYPE_CHECKING:
    import httpx

    from realtime.client.publishing import Publish

# Refusals of a connection that retrying cannot fix.
FATAL_REFUSALS = ("invalid_credentials", "authentication_required", "forbidden_origin")


async def heartbeat(
    http: httpx.AsyncClient, url: str, connection: str, received: int
) -> int | None:
    """POST the heartbeat of an SSE connection with its flow-control count; the status, or
    None without an answer (the stream itself tells whether the server is gone)."""
    try:
        response = await http.post(url, json={"connection": connection, "received": received})
    except Exception:
        return None
    return response.status_code


async def why_refused(http: httpx.AsyncClient, url: str) -> ClientError | None:
    """A refused WebSocket handshake is a bare 403. The event-stream endpoint (``url``)
    checks the same credentials and origin first and says why: asked without a stream, it
    answers 400 when they are good. A ``ConnectionRefused`` for a refusal retrying cannot
    fix; None for anything else (too many connections, a draining server, no answer)."""
    try:
        response = await http.get(url, headers={"Accept": "text/event-stream"})
        error = response.json().get("error") or {}
        code = error.get("code")
    except Exception:  # no answer of ours: retry the handshake
        return None
    if code not in FATAL_REFUSALS:
        return None
    message = f"The server refused the connection: {error.get('message', code)}"
    return ConnectionRefused(message, code=code, status=response.status_code)


async def post(
    http: httpx.AsyncClient, url: str, entry: Publish, headers: Mapping[str, str]
) -> Literal["done", "retry"]:
    """POST one publish to the REST API; settles it unless the outcome is ``retry``
    (network trouble, or 5xx/429 for a stored event: its key makes sending it again safe)."""
    import httpx

    body: dict[str, Any] = {"event": entry.event, "data": entry.data}
    request_headers = {"Content-Type": "application/json", **headers}
    if entry.ephemeral:
        body["ephemeral"] = True
    elif entry.key is not None:
        body["key"] = entry.key
        request_headers["Idempotency-Key"] = entry.key
    try:
        response = await http.post(url, content=json.dumps(body), headers=request_headers)
    except httpx.HTTPError:
        if entry.ephemeral:
            entry.reject(ClientError("The publish request failed.", code="disconnected"))
            return "done"
        return "retry"
    try:
        body_read = response.json()
    except ValueError:
        body_read = None
    payload: dict[str, Any] = body_read if isinstance(body_read, dict) else {}
    if response.is_success:
        entry.resolve(payload.get("seq"), bool(payload.get("duplicate")))
        return "done"
    status = response.status_code
    if (status >= 500 or status == 429) and not entry.ephemeral:
        return "retry"
    error: dict[str, Any] = payload.get("error") or payload
    error = error if isinstance(error, dict) else payload
    code = str(error.get("code") or f"http_{status}")
    message = str(error.get("message") or error.get("detail") or f"Publishing failed ({status}).")
    entry.reject(RequestError(message, code=code, status=status, stream=entry.stream))
    return "done"
