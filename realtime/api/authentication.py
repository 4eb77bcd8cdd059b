"""Who is calling the REST API: the same credentials as the live endpoints, plus server tokens.

In the order tried (``Authorization`` header first, then the session):

* ``Bearer <token>`` matching one of ``REALTIME["API_TOKENS"]``: a **backend** (a service in
  another language, a worker). It may use the whole API; ``request.auth`` is a
  :class:`ServerToken` and ``request.user`` is anonymous.
* ``Ticket <ticket>``: a one-time connection ticket (``realtime.tickets``).
* ``Token <key>`` or ``Bearer <key>``: a user's token, looked up by ``TOKEN_AUTHENTICATOR``
  (Django REST framework's ``authtoken`` by default) — the function the WebSocket and SSE
  endpoints use, so one credential works on every transport.
* the Django **session** cookie, with DRF's CSRF check on unsafe methods.

Credentials that are sent but wrong are refused (401 ``invalid_credentials``); they never
fall back to anonymous.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from realtime.conf import realtime_settings
from realtime.storage import tickets

# Shorter server tokens are refused as misconfiguration: they could be guessed.
MIN_API_TOKEN_LENGTH = 32


@dataclass(frozen=True)
class ServerToken:
    """``request.auth`` of a backend that sent a configured API token (which one: ``index``)."""

    index: int


def api_tokens() -> list[str]:
    """``REALTIME["API_TOKENS"]``, checked: a list of strings of at least 32 characters."""
    tokens = realtime_settings.API_TOKENS
    if isinstance(tokens, str) or not isinstance(tokens, list | tuple):
        raise ImproperlyConfigured("REALTIME['API_TOKENS'] must be a list of strings.")
    for token in tokens:
        if not isinstance(token, str) or len(token) < MIN_API_TOKEN_LENGTH:
            raise ImproperlyConfigured(
                f"Each of REALTIME['API_TOKENS'] must be a string of at least "
                f"{MIN_API_TOKEN_LENGTH} characters (e.g. secrets.token_urlsafe(32))."
            )
    return list(tokens)


def match_api_token(candidate: str) -> ServerToken | None:
    """The configured token equal to ``candidate``, compared in constant time.

    Every token is compared, so the time taken says nothing about which one was close.
    """
    found: ServerToken | None = None
    given = candidate.encode()
    for index, token in enumerate(api_tokens()):
        if hmac.compare_digest(given, token.encode()) and found is None:
            found = ServerToken(index)
    return found


def _credentials(request: Request) -> tuple[str, str]:
    scheme, _, credential = authentication.get_authorization_header(request).partition(b" ")
    try:
        return scheme.decode("latin-1").lower(), credential.decode("latin-1").strip()
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return "", ""


class ServerTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>`` with a configured server API token."""

    def authenticate(self, request: Request) -> tuple[Any, ServerToken] | None:
        scheme, credential = _credentials(request)
        if scheme != "bearer" or not credential:
            return None
        token = match_api_token(credential)
        if token is None:
            return None  # perhaps a user's token: RealtimeTokenAuthentication decides
        return AnonymousUser(), token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing or wrong.
        return 'Bearer realm="realtime"'


class TicketAuthentication(authentication.BaseAuthentication):
    """``Authorization: Ticket <ticket>``: a one-time connection ticket."""

    def authenticate(self, request: Request) -> tuple[Any, str] | None:
        scheme, credential = _credentials(request)
        if scheme != "ticket":
            return None
        claims = tickets.redeem(credential) if credential else None
        if claims is None:
            raise exceptions.AuthenticationFailed("The ticket is not valid (any more).")
        return claims["user"], credential


class RealtimeTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <key>`` or ``Bearer <key>``, checked by ``TOKEN_AUTHENTICATOR``."""

    def authenticate(self, request: Request) -> tuple[Any, str] | None:
        scheme, credential = _credentials(request)
        if scheme not in ("token", "bearer"):
            return None
        user = realtime_settings.TOKEN_AUTHENTICATOR(credential) if credential else None
        if user is None:
            raise exceptions.AuthenticationFailed("The token is not valid.")
        return user, credential


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication: a signed-in page, with the CSRF token on writes."""


def is_server(request: Request) -> bool:
    """Whether the caller holds a server API token."""
    return isinstance(request.auth, ServerToken)


def is_staff(request: Request) -> bool:
    user = request.user
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


DEFAULT_AUTHENTICATION_CLASSES = [
    ServerTokenAuthentication,
    TicketAuthentication,
    RealtimeTokenAuthentication,
    SessionAuthentication,
]
