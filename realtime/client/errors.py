"""The client's exceptions: every one a ``ClientError`` carrying a stable ``code``.

Codes are the protocol's (``realtime.protocol.ERROR_CODES`` and the handshake refusals,
docs/protocol.md#error-codes) or the client's own, the same as the browser client's
(docs/client.md#errors): ``queue_full``, ``disconnected``, ``closed``, ``max_attempts``,
``revoked``, ``http_<status>``.
"""

from __future__ import annotations

from realtime.exceptions import RealtimeError


class ClientError(RealtimeError):
    """A failure of the Python client; branch on ``code``, never on the message.

    ``status`` is the HTTP status of a refused request (SSE, HTTP publish, a WebSocket
    handshake answered 403), ``stream`` the stream the error is about, when known.
    """

    code = "client_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        stream: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.stream = stream

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class RequestError(ClientError):
    """The server answered a request (subscribe, publish, presence...) with an ``error``
    frame, or an HTTP error body; ``code`` is the protocol's error code."""


class ConnectionRefused(ClientError):
    """The server refused the connection, and retrying cannot help (SSE: 4xx with the
    protocol's code in its body; WebSocket: close 4401, access revoked)."""


class ClientClosed(ClientError):
    """The client is closed (``close()``, a refusal, or ``max_attempts`` retries failed);
    ``code`` says which: ``closed``, ``max_attempts``, ``revoked`` or the refusal's."""

    code = "closed"
