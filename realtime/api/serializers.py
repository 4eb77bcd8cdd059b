"""What the REST API reads and writes; the OpenAPI schema is generated from these.

The ``*Query`` serializers validate the query parameters and are what the schema documents
them with (``extend_schema(parameters=[...])``), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from realtime.core.publishing import validate_event_type, validate_idempotency_key
from realtime.exceptions import RealtimeError
from realtime.protocol import INVALID_EVENT

MAX_PAGE = 1000  # events, streams or connections per page
DEFAULT_PAGE = 100
# Seqs and offsets are 64-bit in the database; a larger number is refused, not overflowed.
MAX_QUERY_INTEGER = 2**63 - 1


def _wire(exc: RealtimeError) -> serializers.ValidationError:
    """A ``RealtimeError`` as a validation error carrying its wire code (``invalid_event``)."""
    return serializers.ValidationError(exc.message, code=exc.code)


class WireString(serializers.CharField):
    """A JSON string, never coerced (DRF's ``CharField`` would turn ``5`` into ``"5"``)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a JSON string.", code=INVALID_EVENT)
        return str(super().to_internal_value(data))


class PublishSerializer(serializers.Serializer[Any]):
    """``POST streams/<stream>/events/``: the event to publish."""

    event = WireString(
        trim_whitespace=False,
        allow_blank=True,  # so "" is refused as a bad event type, like over WebSocket
        help_text="Event type: 1-100 of A-Z a-z 0-9 _ . : - (not realtime.* or presence.*).",
    )
    # DRF's metaclass takes declared fields off the class: Serializer.data stays the property.
    data = serializers.JSONField(  # type: ignore[assignment]
        required=False,
        allow_null=True,
        default=None,
        help_text="Any JSON value; at most MAX_EVENT_SIZE bytes encoded compactly.",
    )
    key = WireString(
        required=False,
        allow_null=True,
        default=None,
        trim_whitespace=False,
        help_text="Idempotency key (1-64 of A-Z a-z 0-9 _ . : -); the Idempotency-Key header "
        "does the same. A repeat returns the first event and stores nothing.",
    )

    ephemeral = serializers.BooleanField(
        required=False,
        default=False,
        help_text="true: not stored, no seq; sent to live subscribers only (cursors, typing).",
    )

    def validate_event(self, value: str) -> str:
        try:
            return validate_event_type(value)
        except RealtimeError as exc:
            raise _wire(exc) from exc

    def validate_key(self, value: str | None) -> str | None:
        try:
            return validate_idempotency_key(value)
        except RealtimeError as exc:
            raise _wire(exc) from exc


class EventSerializer(serializers.Serializer[Any]):
    """A stored event, as in the WebSocket ``event`` frame (without ``type``)."""

    stream = serializers.CharField()
    seq = serializers.IntegerField(allow_null=True, help_text="null for an ephemeral event.")
    event = WireString()
    # DRF's metaclass takes declared fields off the class: Serializer.data stays the property.
    data = serializers.JSONField(allow_null=True)  # type: ignore[assignment]
    ts = serializers.CharField(help_text="ISO 8601 UTC with milliseconds.")


class PublishedSerializer(EventSerializer):
    """The answer to a publish: the stored event, its stream's epoch, and ``duplicate``."""

    epoch = serializers.CharField()
    duplicate = serializers.BooleanField(
        help_text="True when the idempotency key was used before: this is the first event."
    )


class HistorySerializer(serializers.Serializer[Any]):
    """A page of a stream's history."""

    stream = serializers.CharField()
    epoch = serializers.CharField()
    seq = serializers.IntegerField(help_text="The stream's head: seq of its newest event.")
    since = serializers.IntegerField(help_text="The events are those after this seq.")
    recovered = serializers.BooleanField(
        help_text="False when events after `since` were deleted by retention, or `epoch` "
        "named another history: the page then starts at the oldest retained event."
    )
    events = EventSerializer(many=True)
    next = serializers.CharField(
        allow_null=True, help_text="URL of the next page; null when this page reached the head."
    )


class StreamSerializer(serializers.Serializer[Any]):
    stream = serializers.CharField()
    epoch = serializers.CharField()
    seq = serializers.IntegerField(help_text="Seq of the newest event (0: none yet).")
    trimmed_seq = serializers.IntegerField(
        help_text="Seq of the newest event retention deleted: history is (trimmed_seq, seq]."
    )


class StreamListSerializer(serializers.Serializer[Any]):
    streams = StreamSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="URL of the next page, or null.")


class PresenceMetaSerializer(serializers.Serializer[Any]):
    ref = serializers.CharField()
    meta = serializers.JSONField()


class PresenceMemberSerializer(serializers.Serializer[Any]):
    metas = PresenceMetaSerializer(many=True)


class PresenceCountSerializer(serializers.Serializer[Any]):
    members = serializers.IntegerField()
    connections = serializers.IntegerField()


class PresenceSerializer(serializers.Serializer[Any]):
    """Members as in the ``presence.state`` frame (``null`` for PRESENCE_COUNTS_ONLY)."""

    stream = serializers.CharField()
    members = serializers.DictField(
        child=PresenceMemberSerializer(),
        allow_null=True,
        help_text="Member key -> its connections' metadata; null on counts-only streams.",
    )
    count = PresenceCountSerializer()


class ConnectionSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    transport = serializers.CharField()
    user = serializers.CharField(allow_null=True, help_text="The user's pk, or null.")
    server = serializers.CharField(help_text="hostname:pid of the process holding it.")
    remote_addr = serializers.CharField()
    user_agent = serializers.CharField()
    connected_at = serializers.DateTimeField()


class ConnectionListSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField()
    connections = ConnectionSerializer(many=True)
    next = serializers.CharField(allow_null=True)


class ErrorDetailSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer[Any]):
    error = ErrorDetailSerializer()


# --- query parameters --------------------------------------------------------------------------
class QueryInteger(serializers.IntegerField):
    """A non-negative integer query parameter: ASCII digits only.

    DRF's ``IntegerField`` would also take ``+5``, `` 5``, ``5_000`` and ``5.0``.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_value", MAX_QUERY_INTEGER)
        super().__init__(required=False, **kwargs)

    def to_internal_value(self, data: Any) -> int:
        if not (isinstance(data, str) and data.isascii() and data.isdigit()):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class QueryString(serializers.CharField):
    """An optional text query parameter, taken as sent (no whitespace trimmed; empty: unset)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, allow_blank=True, trim_whitespace=False, **kwargs)


class PageQuery(serializers.Serializer[Any]):
    limit = QueryInteger(
        default=DEFAULT_PAGE, min_value=1, max_value=MAX_PAGE, help_text="Page size."
    )


class HistoryQuery(PageQuery):
    """``GET streams/<stream>/events/``."""

    since = QueryInteger(
        default=0, min_value=0, help_text="Return events after this seq (0: all retained history)."
    )
    epoch = QueryString(
        help_text="The epoch `since` belongs to; another epoch gives `recovered: false` and the "
        "retained history of the current one."
    )


class StreamListQuery(PageQuery):
    """``GET streams/``."""

    prefix = QueryString(help_text="Only streams whose name starts with this.")
    after = QueryString(help_text="Only streams named after this (the `next` cursor).")


class ConnectionListQuery(PageQuery):
    """``GET connections/``."""

    user = QueryString(help_text="Only this user's (primary key).")
    transport = serializers.ChoiceField(
        choices=[("websocket", "WebSocket"), ("sse", "Server-Sent Events")],
        required=False,
        help_text="Only this transport's.",
    )
    offset = QueryInteger(default=0, min_value=0, help_text="Skip this many.")
