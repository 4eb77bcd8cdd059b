"""Every error the app raises on purpose is a ``RealtimeError``."""

from __future__ import annotations


class RealtimeError(Exception):
    """Base of the app's exceptions; ``code`` is the stable wire error code."""

    code = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, frame_id: str | int | None = None
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        # The ``id`` of the client frame at fault, when it had a usable one.
        self.frame_id = frame_id

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidStream(RealtimeError):
    """A stream name breaks the naming rules (see ``realtime.streams``)."""

    code = "invalid_stream"


class InvalidEvent(RealtimeError):
    """An event type or payload cannot be published (bad type, not JSON, too large)."""

    code = "invalid_event"


class PermissionDenied(RealtimeError):
    """The stream policy refused the action."""

    code = "forbidden"


class ProtocolError(RealtimeError):
    """A client frame or cursor does not follow the wire protocol."""

    code = "invalid_frame"


class StoreUnavailable(RealtimeError):
    """The database could not store the event: nothing was stored, nothing was sent."""

    code = "store_unavailable"


class SyncInAsyncContext(RealtimeError):
    """A sync API (``publish``) was called from a running event loop; use the ``a`` twin."""
