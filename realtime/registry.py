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

import logging
import os
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from realtime import presence, signals
from realtime.conf import realtime_settings
from realtime.models import Connection, Server, UserStatus
from realtime.stats import stats

logger = logging.getLogger("realtime.registry")

# What ``add_connection`` returns for a client that left before its turn came.
GONE = "gone"


def lease_interval() -> float:
    return float(realtime_settings.PRESENCE_TIMEOUT) / 3


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
        for conn_id, names in (streams or {}).items():
            Connection.objects.filter(id=conn_id).update(streams=names, last_seen=now)
    return True


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


def _limit_reached(user_id: Any, remote_addr: str) -> str | None:
    per_user = realtime_settings.MAX_CONNECTIONS_PER_USER
    if (
        user_id is not None
        and per_user is not None
        and Connection.objects.filter(user_id=user_id).count() >= int(per_user)
    ):
        return "user"
    per_ip = realtime_settings.MAX_CONNECTIONS_PER_IP
    if (
        remote_addr
        and per_ip is not None
        and Connection.objects.filter(remote_addr=remote_addr).count() >= int(per_ip)
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

    def send() -> None:
        user = get_user_model()._default_manager.filter(pk=user_id).first()
        if user is not None:
            signal.send(sender=UserStatus, user=user)

    transaction.on_commit(send, robust=True)


def sweep() -> list[presence.Message]:
    """Remove what expired leases left behind; returns the presence messages to fan out."""
    messages: list[presence.Message] = []
    stats.sweeper_lag = 0.0  # the latest sweep's lag, so the alert clears once caught up
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
            messages += presence.leave_server(server.id)
            users = set(
                Connection.objects.filter(server=server)
                .exclude(user_id=None)
                .values_list("user_id", flat=True)
            )
            logger.info(
                "Sweeping expired server %s (%s:%s).", server.id, server.hostname, server.pid
            )
            lag = (timezone.now() - server.expires_at).total_seconds()
            stats.sweeper_lag = max(stats.sweeper_lag, lag)
            server.delete()
            for user_id in users:
                _recount(user_id)
    return messages


def unregister_server(server_id: str) -> list[presence.Message]:
    """Orderly shutdown: remove this process's lease and everything under it now."""
    Server.objects.filter(id=server_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    return sweep()


def recorded_subscriptions() -> Iterator[str]:
    """Each recorded connection's subscribed stream names, on every process.

    Read in Python so it works the same on every database; one pass over the live
    connections (a few MB for 100 000 of them).
    """
    for streams in Connection.objects.values_list("streams", flat=True).iterator(2000):
        yield from (name for name in streams or () if isinstance(name, str))


aregister_server = database_sync_to_async(register_server, thread_sensitive=False)
arenew_server = database_sync_to_async(renew_server, thread_sensitive=False)
aadd_connection = database_sync_to_async(add_connection, thread_sensitive=False)
aremove_connection = database_sync_to_async(remove_connection, thread_sensitive=False)
# Off the process's main database thread: a big sweep must not hold up handshakes.
asweep = database_sync_to_async(sweep, thread_sensitive=False)
aunregister_server = database_sync_to_async(unregister_server, thread_sensitive=False)
