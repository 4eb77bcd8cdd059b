"""Every API error is ``{"error": {"code", "message"}}`` with a stable code.

The codes are the wire protocol's where one fits (``invalid_stream``, ``forbidden``,
``invalid_event``, ``malformed_json``, ``too_deep``, ``invalid_credentials``,
``authentication_required``, ...); the few that only HTTP needs are defined here.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from realtime.exceptions import RealtimeError
from realtime.protocol import (
    AUTHENTICATION_REQUIRED,
    ERROR_CODES,
    FORBIDDEN,
    INVALID_CREDENTIALS,
    INVALID_FRAME,
    MALFORMED_JSON,
    RATE_LIMITED,
)

# --- Codes of the HTTP API only ----------------------------------------------------------
NOT_FOUND = "not_found"  # no such stream (answered only to callers allowed to know)
PAYLOAD_TOO_LARGE = "payload_too_large"  # body or event data over the limits: 413
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # not application/json: 415
INVALID_PARAMETER = "invalid_parameter"  # a query parameter (since, limit, ...) is wrong
METHOD_NOT_ALLOWED = "method_not_allowed"
NOT_ACCEPTABLE = "not_acceptable"


class APIError(exceptions.APIException):
    """An error with an explicit status and wire code: ``APIError(413, code, message)``."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.auth_header: str | None = None  # a 401's WWW-Authenticate challenge


def from_realtime_error(exc: RealtimeError, status_code: int = 400) -> APIError:
    """A ``RealtimeError`` (bad stream name, bad event, ...) as a 400 with its own code."""
    return APIError(status_code, exc.code, exc.message)


_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.NotAuthenticated: AUTHENTICATION_REQUIRED,
    exceptions.AuthenticationFailed: INVALID_CREDENTIALS,
    exceptions.PermissionDenied: FORBIDDEN,
    exceptions.NotFound: NOT_FOUND,
    exceptions.ParseError: MALFORMED_JSON,
    exceptions.UnsupportedMediaType: UNSUPPORTED_MEDIA_TYPE,
    exceptions.MethodNotAllowed: METHOD_NOT_ALLOWED,
    exceptions.NotAcceptable: NOT_ACCEPTABLE,
    exceptions.Throttled: RATE_LIMITED,
}


def _first_detail(detail: Any) -> tuple[str, str]:
    """The first (field, message) of a ValidationError's nested detail."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            _, message = _first_detail(value)
            return str(field), message
    if isinstance(detail, list) and detail:
        return _first_detail(detail[0])
    return "", str(detail)


def _validation_code(detail: Any) -> str:
    """The wire code a serializer attached (``invalid_event``...), else ``invalid_frame``."""
    if isinstance(detail, dict):
        detail = next(iter(detail.values()), None)
    while isinstance(detail, list) and detail:
        detail = detail[0]
    code = getattr(detail, "code", None)
    return code if code in ERROR_CODES else INVALID_FRAME


def error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        {"error": {"code": code, "message": message}},
        status=status_code,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler, answering in the app's error format.

    Anything else (a bug) is left to Django, which logs it and answers 500.
    """
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, RealtimeError):
        exc = from_realtime_error(exc)
    if not isinstance(exc, exceptions.APIException):
        return None
    set_rollback()
    headers: dict[str, str] = {}
    # NotAuthenticated-like exceptions carry the challenge, Throttled the wait.
    if challenge := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = str(challenge)
    if wait := getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(wait))
    if isinstance(exc, APIError):
        return error_response(exc.status_code, exc.error_code, str(exc.detail), headers)
    if isinstance(exc, exceptions.ValidationError):
        field, message = _first_detail(exc.detail)
        text = f"{field}: {message}" if field and field != "non_field_errors" else message
        return error_response(status.HTTP_400_BAD_REQUEST, _validation_code(exc.detail), text)
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), INVALID_FRAME)
    return error_response(exc.status_code, code, str(exc.detail), headers)
