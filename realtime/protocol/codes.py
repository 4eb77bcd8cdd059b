"""The protocol's names: version, close codes, error codes, frame types, SSE event names.

Every error code here is in ``schemas/server/error.json``'s enum, and every client frame type
has a schema in ``schemas/client/``; ``tests/e2e/test_schemas.py`` fails when they drift.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1

# --- Close codes (WebSocket) -------------------------------------------------------------
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server is shutting down; reconnect and resume
CLOSE_MESSAGE_TOO_BIG = 1009  # sent by the server (realtime.serve): a message over MAX_FRAME_SIZE
CLOSE_INTERNAL_ERROR = 1011  # unexpected server error; reconnect and resume
# The server is draining for a restart (SIGTERM): reconnect after the delay in the reason
# (``restart_reason``: ``{"retry":<milliseconds>}``) and resume. IANA "Service Restart".
CLOSE_SERVICE_RESTART = 1012
CLOSE_UNAUTHORIZED = 4401  # access revoked: logout, password change, ``realtime.revoke``...
CLOSE_FORBIDDEN = 4403  # handshake refused (closed before accept: the client sees HTTP 403)
CLOSE_HEARTBEAT_TIMEOUT = 4408  # nothing received for HEARTBEAT_TIMEOUT seconds
CLOSE_SLOW_CONSUMER = 4409  # too much unacknowledged (OUTBOX_WINDOW): reconnect and resume
CLOSE_RATE_LIMITED = 4429  # kept sending far over RATE_LIMIT

# --- Error codes (``error`` frames, SSE ``realtime.error`` events, HTTP error bodies) -----
MALFORMED_JSON = "malformed_json"  # the frame is not UTF-8 JSON text
INVALID_FRAME = "invalid_frame"  # JSON, but not an object with the fields its type needs
UNKNOWN_TYPE = "unknown_type"  # ``type`` is not one of the client frame types
UNSUPPORTED_FRAME = "unsupported_frame"  # a binary WebSocket frame
FRAME_TOO_LARGE = "frame_too_large"  # over MAX_FRAME_SIZE bytes
INVALID_STREAM = "invalid_stream"  # the stream name breaks the naming rules
FORBIDDEN = "forbidden"  # unknown or forbidden stream: the policy said no
INVALID_EVENT = "invalid_event"  # bad event type or idempotency key, or data too large
ALREADY_SUBSCRIBED = "already_subscribed"
NOT_SUBSCRIBED = "not_subscribed"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
INVALID_CURSOR = "invalid_cursor"  # an SSE Last-Event-ID / last_event_id that is not ours
PRESENCE_FULL = "presence_full"  # PRESENCE_MAX_MEMBERS reached: join refused
INVALID_PRESENCE = "invalid_presence"  # metadata not an object, or too large
TOO_DEEP = "too_deep"  # JSON nested deeper than MAX_JSON_DEPTH
RATE_LIMITED = "rate_limited"  # over RATE_LIMIT: the frame was dropped
REVOKED = "revoked"  # the server withdrew this connection's or subscription's access
STORE_UNAVAILABLE = "store_unavailable"  # a publish found the database down: nothing stored
INTERNAL_ERROR = "internal_error"

ERROR_CODES = (
    MALFORMED_JSON,
    INVALID_FRAME,
    UNKNOWN_TYPE,
    UNSUPPORTED_FRAME,
    FRAME_TOO_LARGE,
    INVALID_STREAM,
    FORBIDDEN,
    INVALID_EVENT,
    ALREADY_SUBSCRIBED,
    NOT_SUBSCRIBED,
    TOO_MANY_SUBSCRIPTIONS,
    INVALID_CURSOR,
    PRESENCE_FULL,
    INVALID_PRESENCE,
    TOO_DEEP,
    RATE_LIMITED,
    REVOKED,
    STORE_UNAVAILABLE,
    INTERNAL_ERROR,
)

# --- Handshake refusals (SSE: the HTTP status; WebSocket: closed before accept, which the
# client sees as HTTP 403) ---------------------------------------------------------------
INVALID_CREDENTIALS = "invalid_credentials"  # a token or ticket was sent and is not valid
AUTHENTICATION_REQUIRED = "authentication_required"  # AUTH_REQUIRED and nobody signed in
FORBIDDEN_ORIGIN = "forbidden_origin"  # the Origin is not in ALLOWED_ORIGINS
TOO_MANY_CONNECTIONS = "too_many_connections"  # MAX_CONNECTIONS_PER_USER / _PER_IP
SERVER_DRAINING = "server_draining"  # the process is shutting down: connect to another
# --- HTTP endpoints (``realtime.urls``) -----------------------------------------------------
UNKNOWN_CONNECTION = "unknown_connection"  # heartbeat for a connection that is gone

# Event types under these prefixes are the protocol's own (SSE system events, presence).
RESERVED_EVENT_PREFIXES = ("realtime.", "presence.")

# SSE event names of the system events.
SSE_SUBSCRIBED = "realtime.subscribed"
SSE_ERROR = "realtime.error"
SSE_WELCOME = "realtime.welcome"
SSE_SNAPSHOT = "realtime.snapshot"
SSE_GAP = "realtime.gap"

# The frame types a client may send, each with a schema in ``schemas/client/``.
CLIENT_TYPES = ("subscribe", "unsubscribe", "publish", "presence", "ping", "received")
# The frame types the server sends, each with a schema in ``schemas/server/``.
SERVER_TYPES = (
    "welcome",
    "subscribed",
    "event",
    "unsubscribed",
    "ack",
    "pong",
    "error",
    "snapshot",
    "gap",
    "presence.state",
    "presence.join",
    "presence.update",
    "presence.leave",
    "presence.count",
    "batch",
)
