"""The app's models: durable history (``Stream``, ``Event``), liveness (``Server`` leases and the
``Connection`` rows hanging off them, ``UserStatus``) and presence (``PresenceMember``,
``Presence``, ``PresenceSession``)."""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from realtime.conf import STREAM_NAME_COLUMN
from realtime.storage.epochs import new_epoch as new_epoch  # migrations name the default here


class Stream(models.Model):
    """A named stream and its position.

    ``last_seq`` is the seq of the newest event ever stored; it is incremented in the
    publishing transaction, whose row lock orders concurrent publishers, so seqs are gapless
    and commit in order. ``trimmed_seq`` is the newest seq that retention deleted: history
    is complete from ``trimmed_seq + 1`` to ``last_seq``.

    The first publish creates the row (subscribing does not: ``realtime.epochs``); pruning
    removes it again once it holds no events and nobody is subscribed.
    """

    name = models.CharField(max_length=STREAM_NAME_COLUMN, unique=True)
    epoch = models.CharField(max_length=32, default=new_epoch)
    last_seq = models.BigIntegerField(default=0)
    trimmed_seq = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Event(models.Model):
    """One stored event; ``(stream, seq)`` is unique and indexes history reads."""

    # No index of its own: the unique (stream, seq) index serves every lookup by stream, and a
    # second index would cost every publish its upkeep.
    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    seq = models.BigIntegerField()  # None on the unsaved Event of an ephemeral publish
    event = models.CharField(max_length=100)
    data = models.JSONField(encoder=DjangoJSONEncoder, null=True)
    ts = models.DateTimeField(default=timezone.now, db_index=True)
    # Set by publishers that may retry (clients after a reconnect, services after a timeout):
    # a second publish with the same key returns the first event instead of storing another.
    idempotency_key = models.CharField(max_length=64, null=True, blank=True)

    # True on the Event that publish() returns for a repeated idempotency key.
    duplicate = False

    class Meta:
        ordering = ["stream", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="realtime_event_stream_seq"),
            models.UniqueConstraint(
                fields=["stream", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="realtime_event_stream_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stream_id}#{self.seq} {self.event}"


class Server(models.Model):
    """One server process's lease, renewed every ``LEASE_INTERVAL``.

    Liveness costs one write per process per interval, however many clients it holds:
    connection and presence rows hang off the lease, and whichever process finds a lease
    expired sweeps them (so a process killed with ``kill -9`` leaves no ghosts).
    """

    id = models.CharField(primary_key=True, max_length=32)
    channel = models.CharField(max_length=200, help_text="The hub's channel-layer channel.")
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["started_at"]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class Connection(models.Model):
    """A live WebSocket or SSE connection, recorded for presence, the admin and operations."""

    TRANSPORTS = [("websocket", "WebSocket"), ("sse", "Server-Sent Events")]

    id = models.CharField(primary_key=True, max_length=32)
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="connections")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="realtime_connections",
    )
    transport = models.CharField(max_length=10, choices=TRANSPORTS)
    remote_addr = models.CharField(max_length=64, blank=True, db_index=True)  # per-IP cap
    user_agent = models.CharField(max_length=300, blank=True)
    connected_at = models.DateTimeField(default=timezone.now)
    # When the record last changed (connect, subscriptions). Liveness is the server's lease:
    # a process removes its connections that go silent, so no write per heartbeat.
    last_seen = models.DateTimeField(default=timezone.now)
    # The streams it is subscribed to; written with the lease renewal when they changed.
    streams = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-connected_at"]

    def __str__(self) -> str:
        return self.id


class UserStatus(models.Model):
    """Whether a user has any live connection; flipped under a row lock, so ``user_online``
    and ``user_offline`` fire exactly once per transition across all processes."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    online = models.BooleanField(default=False)
    changed_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "user statuses"

    def __str__(self) -> str:
        return f"{self.user_id}: {'online' if self.online else 'offline'}"


class PresenceMember(models.Model):
    """A member (a user, or an anonymous client) present on one stream.

    The row lives while the member has a connection in the presence (a ``Presence`` meta):
    it is created by the first join and deleted with the last leave, so presence keeps
    nothing of members who left (``PresenceSession`` is the history). ``version`` counts the
    member's changes under the row lock; messages carry ``presence.version_of`` it, which
    also orders a member's later rows after its earlier ones.
    """

    stream = models.CharField(max_length=STREAM_NAME_COLUMN)
    key = models.CharField(max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    version = models.BigIntegerField(default=0)
    since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["stream", "key"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "key"], name="realtime_member_stream_key")
        ]

    def __str__(self) -> str:
        return f"{self.stream} {self.key}"


class Presence(models.Model):
    """One connection's place in a member's presence, with that connection's metadata."""

    member = models.ForeignKey(PresenceMember, on_delete=models.CASCADE, related_name="metas")
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="presences")
    connection = models.CharField(max_length=32, db_index=True)
    ref = models.CharField(max_length=16)
    meta = models.JSONField(encoder=DjangoJSONEncoder, default=dict)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["joined_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["member", "connection"], name="realtime_presence_member_connection"
            )
        ]

    def __str__(self) -> str:
        return f"{self.member} via {self.connection}"


class PresenceSession(models.Model):
    """History: a member was present on a stream from ``started_at`` to ``ended_at``.

    Kept for ``PRESENCE_HISTORY_RETENTION`` after it ended; anonymous members' sessions are
    recorded only with ``PRESENCE_HISTORY_ANONYMOUS``.
    """

    stream = models.CharField(max_length=STREAM_NAME_COLUMN, db_index=True)
    key = models.CharField(max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.key} on {self.stream} from {self.started_at:%Y-%m-%d %H:%M}"


class TicketUse(models.Model):
    """The nonce of a redeemed connection ticket: a ticket works once (see ``tickets``)."""

    nonce = models.CharField(primary_key=True, max_length=32)
    used_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.nonce
