"""Who is connecting: resolved before a WebSocket is accepted or an SSE response starts.

``RealtimeAuthMiddlewareStack`` wraps the live endpoints (see ``docs/security.md``). It
accepts, in this order:

* a signed connection **ticket** (``realtime.tickets``) — for browsers, which cannot put
  headers on ``WebSocket`` or ``EventSource``: in the WebSocket subprotocol list as
  ``realtime.ticket.<ticket>``, or in an ``Authorization: Ticket <ticket>`` header. Never in
  the URL, so it never reaches an access log;
* a **token** in ``Authorization: Token <key>`` or ``Bearer <key>`` — for services and native
  clients; looked up by ``TOKEN_AUTHENTICATOR`` (DRF's ``authtoken`` by default);
* the Django **session** cookie (Channels' ``AuthMiddlewareStack``).

Credentials that are present but wrong (unknown token, forged or expired ticket) make
``scope["realtime.auth"]["error"]`` a stable code; the endpoints refuse such a connection at
the handshake instead of falling back to anonymous.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any, cast
from urllib.parse import urlsplit

from channels.auth import get_user
from channels.db import database_sync_to_async
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.http.request import validate_host

from realtime.conf import realtime_settings
from realtime.storage import tickets
from realtime.storage.dbthreads import in_lane

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

SUBPROTOCOL = "realtime.v1"
TICKET_SUBPROTOCOL_PREFIX = "realtime.ticket."

INVALID_CREDENTIALS = "invalid_credentials"


# Channels' get_user, but on a database lane rather than on the process's one sync thread: in
# a storm of signed-in clients, session lookups would otherwise queue behind each other.
# (``get_user`` is a ``database_sync_to_async`` wrapper; ``func`` is the sync function.)
_get_user = in_lane(cast(Any, get_user).func)


def drf_token_user(key: str) -> Any:
    """Default ``TOKEN_AUTHENTICATOR``: the active user of a DRF ``authtoken`` token."""
    if not apps.is_installed("rest_framework.authtoken"):
        return None
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def offered_subprotocols(scope: Scope) -> list[str]:
    return list(scope.get("subprotocols") or [])


def origin_allowed(scope: Scope) -> bool:
    """Whether the WebSocket's ``Origin`` may connect (cross-site WebSocket hijacking).

    Browsers always send ``Origin`` on a WebSocket handshake; a client without one is not a
    browser, so no other site's page can be using it, and it is let through.
    """
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    allowed = realtime_settings.ALLOWED_ORIGINS
    if allowed is not None:
        return "*" in allowed or origin.rstrip("/") in [o.rstrip("/") for o in allowed]
    parsed = urlsplit(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]  # what Django allows in that case
    host = parsed.hostname if ":" not in parsed.hostname else f"[{parsed.hostname}]"
    return validate_host(host, hosts)


class RealtimeAuthMiddleware:
    """Replace the session user with a ticket's or token's user when the client sent one."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        scope = dict(scope)
        auth: dict[str, Any] = {"method": None, "error": None, "token": None, "session": None}
        if "session" not in scope:
            await self._session_user(scope)
        session = scope.get("session")
        if scope.get("user") is not None and scope["user"].is_authenticated:
            auth["method"] = "session"
            auth["session"] = getattr(session, "session_key", None)
        ticket = self._ticket(scope)
        scheme, _, credential = (_header(scope, b"authorization") or "").partition(" ")
        scheme = scheme.lower()
        if ticket is None and scheme == "ticket":
            ticket = credential.strip()
        if ticket is not None:
            claims = await database_sync_to_async(tickets.redeem)(ticket)
            if claims is None:
                auth.update(method="ticket", error=INVALID_CREDENTIALS)
                scope["user"] = AnonymousUser()
            else:
                auth.update(method="ticket", session=claims.get("session"))
                scope["user"] = claims["user"]
        elif scheme in ("token", "bearer") and credential.strip():
            key = credential.strip()
            user = await database_sync_to_async(realtime_settings.TOKEN_AUTHENTICATOR)(key)
            if user is None:
                auth.update(method="token", error=INVALID_CREDENTIALS)
                scope["user"] = AnonymousUser()
            else:
                auth.update(method="token", token=key, session=None)
                scope["user"] = user
        scope["realtime.auth"] = auth
        await self.inner(scope, receive, send)

    @staticmethod
    async def _session_user(scope: Scope) -> None:
        """The session cookie's user, as Channels' ``AuthMiddlewareStack`` finds it.

        Done here rather than with that stack because its ``SessionMiddleware`` wraps
        ``send`` to save the session after each HTTP response — on every frame sent, which
        costs several percent of a busy stream, for a session these endpoints never change.
        """
        cookies = parse_cookie(_header(scope, b"cookie") or "")
        engine = import_module(settings.SESSION_ENGINE)
        key = cookies.get(settings.SESSION_COOKIE_NAME)
        scope["session"] = engine.SessionStore(key)
        # No cookie, nobody to look up: skip the thread pool, where in a reconnect storm the
        # hop would wait behind every other client's database work before the handshake goes on.
        scope["user"] = await _get_user(scope) if key else AnonymousUser()

    @staticmethod
    def _ticket(scope: Scope) -> str | None:
        for protocol in offered_subprotocols(scope):
            if protocol.startswith(TICKET_SUBPROTOCOL_PREFIX):
                return protocol[len(TICKET_SUBPROTOCOL_PREFIX) :]
        return None


def RealtimeAuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """Session, token and ticket authentication for the live endpoints."""
    return RealtimeAuthMiddleware(inner)
