"""Liveness in the database: each process's lease, its connections, users' online status.

A process writes its ``Server`` row when its hub starts and renews it every
``PRESENCE_TIMEOUT / 3`` seconds with a lease of ``2/3 * PRESENCE_TIMEOUT``: one write per
process per interval, whatever the number of clients. ``Connection`` and ``Presence`` rows
hang off the lease. Every hub also sweeps: a lease that has expired belongs to a process that
died (``kill -9``, a lost machine), and whoever finds it removes its presence (sending the
leaves), its connections (flipping users offline) and the lease. So no member outlives a
crashed process by more than ``PRESENCE_TIMEOUT``.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections, router, transaction
from django.db.models import Count
from django.dispatch import Signal
from django.utils import timezone

from realtime import signals
from realtime.conf import realtime_settings
from realtime.models import Connection, Server, UserStatus
from realtime.storage import presence
from realtime.storage.dbthreads import in_lane
from realtime.storage.groupcommit import committer_for

logger = logging.getLogger("realtime.registry")

# What ``add_connection`` returns for a client that left before its turn came.
GONE = "gone"


def lease_interval() -> float:
    return realtime_settings.PRESENCE_TIMEOUT / 3


def _expiry() -> Any:
    return timezone.now() + timedelta(seconds=2 * lease_interval())


def register_server(server_id: str, channel: str) -> None:
    Server.objects.update_or_create(
        id=server_id,
        defaults={
            "channel": channel,
            "hostname": socket.gethostname()[:255],
            "pid": os.getpid(),
            "expires_at": _expiry(),
        },
    )


def renew_server(server_id: str, streams: dict[str, list[str]] | None = None) -> bool:
    """Extend the lease and refresh its connections' records; False if it was already swept
    (this process stalled too long).

    ``streams`` holds the subscriptions of connections whose subscriptions changed since the
    last renewal. Nothing is written for the others: a connection is alive as long as its
    server's lease is (the server drops the connections that go silent), so liveness costs
    one row update per process per interval, whatever the number of connections.
    """
    now = timezone.now()
    with transaction.atomic():
        if Server.objects.filter(id=server_id).update(expires_at=_expiry()) != 1:
            return False
        if streams:
            _write_streams(streams, now)
    return True


def _write_streams(streams: dict[str, list[str]], now: datetime) -> None:
    """The changed subscription lists in one ``executemany`` (on PostgreSQL psycopg pipelines
    it: one round trip), not an ORM ``update()`` per connection: after a storm that is a
    thousand of them, which held the database thread for seconds."""
    connection = connections[router.db_for_write(Connection)]
    meta, quote = Connection._meta, connection.ops.quote_name
    streams_field, seen_field = meta.get_field("streams"), meta.get_field("last_seen")
    pk_column = meta.pk.column if meta.pk else None
    # Concrete fields always have a column; the stubs type it optional.
    assert streams_field.column and seen_field.column and pk_column
    seen = seen_field.get_db_prep_save(now, connection)
    rows = [
        (streams_field.get_db_prep_save(names, connection), seen, conn_id)
        for conn_id, names in streams.items()
    ]
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {quote(streams_field.column)} = %s,"
        f" {quote(seen_field.column)} = %s WHERE {quote(pk_column)} = %s"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def add_connection(
    conn_id: str,
    server_id: str,
    user_id: Any,
    transport: str,
    remote_addr: str,
    user_agent: str,
    *,
    check_limits: bool = False,
    gone: Callable[[], bool] | None = None,
) -> str | None:
    """Record a connection; with ``check_limits``, first refuse it (returning "user" or "ip")
    if it would pass MAX_CONNECTIONS_PER_USER / _PER_IP, counted over every process.

    One call, one transaction: a connection storm costs one round of queries per client.
    Returns ``GONE``, recording nothing, when ``gone()`` says the client left while this call
    waited for a thread: in a storm, the work of a handshake the server already dropped
    would only delay the clients still waiting.
    """
    if gone is not None and gone():
        return GONE
    with transaction.atomic():
        if check_limits:
            cap = _limit_reached(user_id, remote_addr)
            if cap is not None:
                return cap
        Connection.objects.create(
            id=conn_id,
            server_id=server_id,
            user_id=user_id,
            transport=transport,
            remote_addr=remote_addr[:64],
            user_agent=user_agent[:300],
        )
        if user_id is not None:
            _recount(user_id)
    return None


@dataclass(frozen=True)
class Admission:
    """One handshake's ``add_connection(..., check_limits=True)``, for ``admit``."""

    conn_id: str
    server_id: str
    user_id: Any
    transport: str
    remote_addr: str
    user_agent: str
    gone: Callable[[], bool] | None = None


def admit(group: list[Admission]) -> list[str | BaseException | None]:
    """``add_connection`` with the caps checked, for handshakes that arrived together.

    One transaction for the group: a count per cap for all of it instead of one or two per
    handshake, one insert, and each user's status flipped once (in user order, so two
    processes' groups take the row locks in the same order). Returns what ``add_connection``
    would for each; if the transaction fails, each is tried on its own, so a bad one fails
    alone.
    """
    results: list[str | BaseException | None] = [
        GONE if a.gone is not None and a.gone() else None for a in group
    ]
    todo = [a for a, result in zip(group, results, strict=True) if result is None]
    if not todo:
        return results
    caps: list[str | BaseException | None]
    try:
        with transaction.atomic():
            caps = list(_admit(todo))
    except Exception:
        if len(todo) == 1:
            raise
        logger.warning("Admitting %d connections together failed; one by one.", len(todo))
        caps = [_alone(a) for a in todo]
    answers = iter(caps)
    return [next(answers) if result is None else result for result in results]


def _admit(todo: list[Admission]) -> list[str | None]:
    per_user, per_ip = _caps()
    users = _counts("user_id", {a.user_id for a in todo if a.user_id is not None}, per_user)
    ips = _counts("remote_addr", {a.remote_addr[:64] for a in todo if a.remote_addr}, per_ip)
    caps: list[str | None] = []
    rows = []
    for a in todo:
        addr = a.remote_addr[:64]
        if per_user is not None and a.user_id is not None and users[a.user_id] >= per_user:
            caps.append("user")
        elif per_ip is not None and addr and ips[addr] >= per_ip:
            caps.append("ip")
        else:
            caps.append(None)
            users[a.user_id] += 1
            ips[addr] += 1
            rows.append(
                {
                    "id": a.conn_id,
                    "server_id": a.server_id,
                    "user_id": a.user_id,
                    "transport": a.transport,
                    "remote_addr": addr,
                    "user_agent": a.user_agent[:300],
                }
            )
    _insert_connections(rows)
    _went_online({row["user_id"] for row in rows if row["user_id"] is not None})
    return caps


def _insert_connections(rows: list[dict[str, Any]]) -> None:
    """The group's ``Connection`` rows in one ``executemany``, each value prepared by its
    field as ``bulk_create`` would, the other fields at their defaults (one per group).

    ``bulk_create`` builds a model instance and compiles every value of every row: it was
    about 50 µs a row here, a tenth of a handshake's server time in a 2,000-connection open;
    this is under 10 µs."""
    if not rows:
        return
    connection = connections[router.db_for_write(Connection)]
    fields, quote = Connection._meta.concrete_fields, connection.ops.quote_name
    defaults = {
        f.attname: f.get_db_prep_save(f.get_default(), connection)
        for f in fields
        if f.attname not in rows[0]
    }
    params = [
        [
            defaults[f.attname]
            if f.attname in defaults
            else f.get_db_prep_save(row[f.attname], connection)
            for f in fields
        ]
        for row in rows
    ]
    columns = ", ".join(quote(f.column or f.attname) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {quote(Connection._meta.db_table)} ({columns}) VALUES ({marks})", params
        )


def _went_online(user_ids: set[Any]) -> None:
    """``_recount`` for users just given a connection (so online), in a few statements for
    all of them: their status rows locked in user order (as another process's group locks
    them), the missing ones created, the offline ones flipped."""
    if not user_ids:
        return
    locked = UserStatus.objects.select_for_update().order_by("user_id")
    found = {s.user_id: s for s in locked.filter(user_id__in=user_ids)}
    if missing := user_ids - found.keys():
        UserStatus.objects.bulk_create(
            [UserStatus(user_id=user_id) for user_id in missing], ignore_conflicts=True
        )
        found.update({s.user_id: s for s in locked.filter(user_id__in=missing)})
    offline = sorted((user_id for user_id, s in found.items() if not s.online), key=str)
    if not offline:
        return
    UserStatus.objects.filter(user_id__in=offline).update(online=True, changed_at=timezone.now())
    for user_id in offline:
        transaction.on_commit(
            functools.partial(_announce, signals.user_online, user_id), robust=True
        )


def _alone(a: Admission) -> str | BaseException | None:
    try:
        return add_connection(
            a.conn_id,
            a.server_id,
            a.user_id,
            a.transport,
            a.remote_addr,
            a.user_agent,
            check_limits=True,
        )
    except Exception as exc:
        return exc


def _caps() -> tuple[int | None, int | None]:
    per_user = realtime_settings.MAX_CONNECTIONS_PER_USER
    per_ip = realtime_settings.MAX_CONNECTIONS_PER_IP
    return (
        None if per_user is None else int(per_user),
        None if per_ip is None else int(per_ip),
    )


def _counts(field: str, values: set[Any], cap: int | None) -> Counter[Any]:
    """Recorded connections per value of ``field`` (for the values a cap applies to)."""
    if cap is None or not values:
        return Counter()
    rows = (
        Connection.objects.filter(**{f"{field}__in": values})
        .values_list(field)
        .annotate(n=Count("pk"))
        .order_by()
    )
    return Counter(dict(rows))


async def aadmit(admission: Admission) -> str | None:
    """``admit`` for one handshake; concurrent ones share a transaction (``groupcommit``)."""
    return await committer_for(admit).submit(admission)


def _limit_reached(user_id: Any, remote_addr: str) -> str | None:
    per_user, per_ip = _caps()
    if (
        user_id is not None
        and per_user is not None
        and Connection.objects.filter(user_id=user_id).count() >= per_user
    ):
        return "user"
    if (
        remote_addr
        and per_ip is not None
        and Connection.objects.filter(remote_addr=remote_addr).count() >= per_ip
    ):
        return "ip"
    return None


def remove_connection(conn_id: str, user_id: Any) -> None:
    with transaction.atomic():
        Connection.objects.filter(id=conn_id).delete()
        if user_id is not None:
            _recount(user_id)


def _recount(user_id: Any) -> None:
    """Flip the user's status if their connection count crossed zero (caller is atomic)."""
    # One locking read (plus an insert the first time): every signed-in connect runs this.
    status, _ = UserStatus.objects.select_for_update().get_or_create(user_id=user_id)
    online = Connection.objects.filter(user_id=user_id).exists()
    if online == status.online:
        return
    now = timezone.now()
    status.online, status.changed_at = online, now
    if not online:
        status.last_seen = now
    status.save(update_fields=["online", "changed_at", "last_seen"])
    signal = signals.user_online if online else signals.user_offline
    transaction.on_commit(functools.partial(_announce, signal, user_id), robust=True)


def _announce(signal: Signal, user_id: Any) -> None:
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is not None:
        signal.send(sender=UserStatus, user=user)


@dataclass
class Swept:
    """What a sweep did: the presence messages to fan out, and its worst lag in seconds
    (from a lease expiring to its sweep; 0 when there was nothing to sweep)."""

    messages: list[presence.Message] = field(default_factory=list)
    lag: float = 0.0


def sweep() -> Swept:
    """Remove what expired leases left behind."""
    swept = Swept()
    for server_id in Server.objects.filter(expires_at__lt=timezone.now()).values_list(
        "id", flat=True
    ):
        with transaction.atomic():
            server = (
                Server.objects.select_for_update(skip_locked=True)
                .filter(id=server_id, expires_at__lt=timezone.now())
                .first()
            )
            if server is None:
                continue  # renewed meanwhile, or another process is sweeping it
            swept.messages += presence.leave_server(server.id)
            users = set(
                Connection.objects.filter(server=server)
                .exclude(user__isnull=True)
                .values_list("user_id", flat=True)
            )
            logger.info(
                "Sweeping expired server %s (%s:%s).", server.id, server.hostname, server.pid
            )
            swept.lag = max(swept.lag, (timezone.now() - server.expires_at).total_seconds())
            server.delete()
            for user_id in users:
                _recount(user_id)
    return swept


def unregister_server(server_id: str) -> list[presence.Message]:
    """Orderly shutdown: remove this process's lease and everything under it now."""
    Server.objects.filter(id=server_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    return sweep().messages


def recorded_subscriptions() -> Iterator[str]:
    """Each recorded connection's subscribed stream names, on every process.

    Read in Python so it works the same on every database; one pass over the live
    connections (a few MB for 100 000 of them).
    """
    for streams in Connection.objects.values_list("streams", flat=True).iterator(2000):
        yield from (name for name in streams or () if isinstance(name, str))


aregister_server = in_lane(register_server)
arenew_server = in_lane(renew_server)
aadd_connection = in_lane(add_connection)
aremove_connection = in_lane(remove_connection)
# Off the process's main database thread: a big sweep must not hold up handshakes.
asweep = in_lane(sweep)
aunregister_server = in_lane(unregister_server)
