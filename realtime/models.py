"""Durable history: one ``Stream`` row per stream, one ``Event`` row per stored event."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from realtime.conf import STREAM_NAME_COLUMN


def new_epoch() -> str:
    """A fresh opaque epoch token; a new one means "history was reset: start over"."""
    return secrets.token_hex(8)


class Stream(models.Model):
    """A named stream and its position.

    ``last_seq`` is the seq of the newest event ever stored; it is incremented in the
    publishing transaction, whose row lock orders concurrent publishers, so seqs are gapless
    and commit in order. ``trimmed_seq`` is the newest seq that retention deleted: history
    is complete from ``trimmed_seq + 1`` to ``last_seq``.
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

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    event = models.CharField(max_length=100)
    data = models.JSONField(encoder=DjangoJSONEncoder, null=True)
    ts = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["stream", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="realtime_event_stream_seq")
        ]

    def __str__(self) -> str:
        return f"{self.stream_id}#{self.seq} {self.event}"

    def as_frame(self) -> dict[str, Any]:
        from realtime.protocol import format_ts

        return {
            "type": "event",
            "stream": self.stream.name,
            "seq": self.seq,
            "event": self.event,
            "data": self.data,
            "ts": format_ts(self.ts),
        }
