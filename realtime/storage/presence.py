"""Presence: who is on a stream, per member, across tabs, devices and server processes.

A member is a user (key: the user's pk) or an anonymous client (key: ``anon:<client id>``);
each of its connections that joined adds one *meta* (that connection's metadata) under it.
``presence.join`` is sent when a member's first connection joins, ``presence.leave`` when its
last one leaves, ``presence.update`` for everything in between (another tab, new metadata).

Every change runs in one transaction holding the member's row lock and bumps the member's
``version``; the resulting message carries it, so a hub can drop a message that arrives after
a newer one from another process, and a subscriber can drop buffered messages its snapshot
already contains. Messages are idempotent (they carry the member's full metas), so the state
a client builds from ``presence.state`` plus the messages is the database's.

A member's row is deleted when its last connection leaves, so what presence keeps is bounded
by who is present now. The version a message carries is ``version_of(member)``: the row's
primary key above its change count. Primary keys are never reused (PostgreSQL sequences;
SQLite ``AUTOINCREMENT``, which Django uses), so a member who leaves and comes back gets a
higher version than anything its earlier row sent, and hubs can go on dropping stale
messages by comparing numbers.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from realtime import signals
from realtime.bus import messages as layer_messages
from realtime.bus.messages import PresenceKind, PresenceMessage
from realtime.conf import realtime_settings
from realtime.exceptions import RealtimeError
from realtime.models import Presence, PresenceMember, PresenceSession
from realtime.protocol import INVALID_PRESENCE, PRESENCE_FULL, normalize
from realtime.storage import retention
from realtime.storage.dbthreads import in_lane
from realtime.streams import matches, validate_stream_name

Message = PresenceMessage

# Anonymous members' keys start with this (``anon:<client id>``); users' are their pk.
ANONYMOUS_PREFIX = "anon:"


@dataclass(frozen=True)
class Meta:
    """One connection of a member: its metadata and when it joined."""

    ref: str
    meta: Any
    connection: str
    joined_at: datetime


@dataclass(frozen=True)
class Member:
    key: str
    user_id: Any
    since: datetime | None
    metas: list[Meta]


def counts_only(stream: str) -> bool:
    """Whether ``stream`` matches ``PRESENCE_COUNTS_ONLY``: occupancy counts, no member lists."""
    return any(matches(stream, pattern) for pattern in realtime_settings.PRESENCE_COUNTS_ONLY)


def check_meta(meta: Any) -> Any:
    """Normalised metadata, or ``RealtimeError(invalid_presence)``."""
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise RealtimeError("Presence metadata must be a JSON object.", code=INVALID_PRESENCE)
    try:
        value, text = normalize(meta)
    except RealtimeError as exc:
        raise RealtimeError(exc.message, code=INVALID_PRESENCE) from exc
    limit = realtime_settings.PRESENCE_MAX_META_SIZE
    if len(text.encode()) > limit:
        raise RealtimeError(
            f"Presence metadata is larger than PRESENCE_MAX_META_SIZE ({limit} bytes).",
            code=INVALID_PRESENCE,
        )
    return value


def _metas(member: PresenceMember) -> list[dict[str, Any]]:
    return [
        {"ref": p.ref, "meta": p.meta}
        for p in Presence.objects.filter(member=member).order_by("joined_at", "pk")
    ]


def version_of(member: PresenceMember) -> int:
    """What messages carry as the member's version: ordered across the member's rows."""
    return (member.pk << 32) | member.version


def _message(member: PresenceMember, kind: PresenceKind, metas: list[dict[str, Any]]) -> Message:
    return layer_messages.presence(member.stream, member.key, version_of(member), kind, metas)


def _records_history(user_id: Any) -> bool:
    return user_id is not None or realtime_settings.PRESENCE_HISTORY_ANONYMOUS


def _lock_member(stream: str, key: str, user_id: Any) -> tuple[PresenceMember, bool]:
    """The member's row, locked, created if needed; and whether it was created."""
    for _ in range(10):
        member, created = PresenceMember.objects.get_or_create(
            stream=stream, key=key, defaults={"user_id": user_id}
        )
        locked = PresenceMember.objects.select_for_update().filter(pk=member.pk).first()
        if locked is not None:
            return locked, created
        # Its last connection left (deleting the row) while we waited for the lock.
    raise RuntimeError(f"Presence member {key!r} on {stream!r} kept vanishing; giving up.")


def join(
    stream: str, key: str, user_id: Any, connection: str, server: str, meta: Any
) -> tuple[Message, str]:
    """Add (or refresh) ``connection``'s meta under member ``key``; returns message and ref."""
    with transaction.atomic():
        member, created = _lock_member(stream, key, user_id)
        limit = realtime_settings.PRESENCE_MAX_MEMBERS
        if created and limit is not None:
            present = PresenceMember.objects.filter(stream=stream).count()
            if present > int(limit):
                raise RealtimeError(
                    f"Presence on {stream!r} is full ({limit} members).", code=PRESENCE_FULL
                )
        ref = secrets.token_hex(6)
        row, new_meta = Presence.objects.get_or_create(
            member=member,
            connection=connection,
            defaults={"server_id": server, "ref": ref, "meta": meta},
        )
        if not new_meta:
            row.meta = meta
            row.save(update_fields=["meta"])
        member.version += 1
        kind: PresenceKind = "join" if created else "update"
        if created:
            member.since = timezone.now()
            if _records_history(user_id):
                PresenceSession.objects.create(
                    stream=stream, key=key, user_id=user_id, started_at=member.since
                )
        member.save(update_fields=["version", "since"])
        message = _message(member, kind, _metas(member))
        if created:
            transaction.on_commit(
                lambda: signals.presence_joined.send(
                    sender=PresenceMember, stream=stream, key=key, user=member.user, meta=meta
                ),
                robust=True,
            )
    return message, row.ref


def leave(connection: str, streams: list[str] | None = None) -> list[Message]:
    """Remove ``connection``'s metas (on ``streams``, or everywhere); returns the messages."""
    rows = Presence.objects.filter(connection=connection)
    if streams is not None:
        rows = rows.filter(member__stream__in=streams)
    return _leave_rows(list(rows.values_list("member_id", "pk")))


def leave_server(server: str) -> list[Message]:
    """Remove every meta of a (dead) server process."""
    return _leave_rows(
        list(Presence.objects.filter(server_id=server).values_list("member_id", "pk"))
    )


def _leave_rows(rows: list[tuple[int, int]]) -> list[Message]:
    """Delete these metas and move their members on, in one transaction whatever their
    number: a crashed process may leave thousands, and its sweep must stay short."""
    if not rows:
        return []
    by_member: dict[int, list[int]] = {}
    for member_id, pk in rows:
        by_member.setdefault(member_id, []).append(pk)
    ids = list(by_member)
    messages = []
    with transaction.atomic():
        members = {m.pk: m for m in PresenceMember.objects.select_for_update().filter(pk__in=ids)}
        Presence.objects.filter(pk__in=[pk for pks in by_member.values() for pk in pks]).delete()
        remaining: dict[int, list[dict[str, Any]]] = {pk: [] for pk in members}
        for row in Presence.objects.filter(member_id__in=ids).order_by("joined_at", "pk"):
            remaining[row.member_id].append({"ref": row.ref, "meta": row.meta})
        gone = [pk for pk, metas in remaining.items() if not metas]
        PresenceMember.objects.filter(pk__in=ids).exclude(pk__in=gone).update(
            version=F("version") + 1
        )
        PresenceMember.objects.filter(pk__in=gone).delete()
        now = timezone.now()
        for pk in gone:
            member = members[pk]
            if _records_history(member.user_id):
                PresenceSession.objects.filter(
                    stream=member.stream, key=member.key, ended_at__isnull=True
                ).update(ended_at=now)
            transaction.on_commit(
                _left_signal(member.stream, member.key, member.user_id), robust=True
            )
        for pk, member in members.items():
            member.version += 1
            kind: PresenceKind = "update" if remaining[pk] else "leave"
            messages.append(_message(member, kind, remaining[pk]))
    return messages


def _left_signal(stream: str, key: str, user_id: Any) -> Any:
    def send() -> None:
        user = None
        if user_id is not None:
            from django.contrib.auth import get_user_model

            user = get_user_model()._default_manager.filter(pk=user_id).first()
        signals.presence_left.send(sender=PresenceMember, stream=stream, key=key, user=user)

    return send


def snapshot(stream: str) -> tuple[dict[str, Any], dict[str, int]]:
    """``members`` as sent in ``presence.state``, and each member's version."""
    members: dict[str, Any] = {}
    versions: dict[str, int] = {}
    for member in PresenceMember.objects.filter(stream=stream):
        members[member.key] = {"metas": []}
        versions[member.key] = version_of(member)
    rows = Presence.objects.filter(member__stream=stream).select_related("member")
    for row in rows.order_by("joined_at", "pk"):
        if row.member.key in members:
            members[row.member.key]["metas"].append({"ref": row.ref, "meta": row.meta})
    return members, versions


def counts(stream: str) -> dict[str, int]:
    """Occupancy: unique members and connections present on ``stream``."""
    connections = Presence.objects.filter(member__stream=stream).count()
    members = PresenceMember.objects.filter(stream=stream).count()
    return {"members": members, "connections": connections}


def members(stream: str) -> list[Member]:
    """Who is present on ``stream``, with each member's connections (metas)."""
    validate_stream_name(stream)
    result = []
    rows = PresenceMember.objects.filter(stream=stream).prefetch_related("metas")
    for member in rows:
        metas = [
            Meta(p.ref, p.meta, p.connection, p.joined_at)
            for p in sorted(member.metas.all(), key=lambda p: (p.joined_at, p.pk))
        ]
        result.append(Member(member.key, member.user_id, member.since, metas))
    return result


def prune_history(now: datetime | None = None) -> int:
    """Delete presence sessions that ended longer than ``PRESENCE_HISTORY_RETENTION`` ago,
    and (with ``PRESENCE_HISTORY_ANONYMOUS`` off) every anonymous one; returns how many."""
    keep = retention.presence_history()
    old = PresenceSession.objects.none()
    if keep is not None:
        old = PresenceSession.objects.filter(ended_at__lt=(now or timezone.now()) - keep)
    if not realtime_settings.PRESENCE_HISTORY_ANONYMOUS:
        old |= PresenceSession.objects.filter(key__startswith=ANONYMOUS_PREFIX)
    return int(old.delete()[0])


presence = members
apresence = database_sync_to_async(members)
ajoin = in_lane(join)
aleave = in_lane(leave)
asnapshot = in_lane(snapshot)
acounts = in_lane(counts)
