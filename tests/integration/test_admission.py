"""Admission under a storm: a handshake the server already dropped costs no database work.

daphne drops a WebSocket handshake the application has not accepted within
``--websocket_connect_timeout`` and tells the application with ``websocket.disconnect``.
The endpoint runs here in this process on queues (Redis and the database are real), so the
disconnect can be delivered at the moment each test needs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser

from realtime.core.hub import get_hub
from realtime.endpoints.websocket import WebSocketConnection
from realtime.models import Connection
from realtime.storage import registry

pytestmark = pytest.mark.django_db(transaction=True)

SCOPE = {
    "type": "websocket",
    "path": "/realtime/ws/",
    "headers": [],
    "client": ("10.1.2.3", 5000),
    "user": AnonymousUser(),
    "realtime.auth": {},
}


@pytest.fixture
async def hub(settings):
    settings.REALTIME = {"PRESENCE_GRACE": 0}
    hub = get_hub()
    yield hub
    await hub.close()


async def handshake(before_admission: bool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the endpoint until it answers; the client leaves before or right after its
    connection is recorded. Returns the message types the endpoint sent."""
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await received.put({"type": "websocket.connect"})
    if before_admission:
        await received.put({"type": "websocket.disconnect", "code": 1006})
    else:
        admit = registry.aadmit

        async def add_then_leave(admission: registry.Admission) -> str | None:
            cap = await admit(admission)
            await received.put({"type": "websocket.disconnect", "code": 1006})
            await asyncio.sleep(0)  # the endpoint's watcher takes it
            return cap

        monkeypatch.setattr(registry, "aadmit", add_then_leave)
    async with asyncio.timeout(10):
        await WebSocketConnection.as_asgi()(dict(SCOPE), received.get, send)
    return sent


async def rows() -> int:
    return await sync_to_async(Connection.objects.count)()


def test_a_client_gone_before_its_turn_records_nothing(db) -> None:
    gone = registry.add_connection(
        "c1", "srv", None, "websocket", "10.0.0.1", "", check_limits=True, gone=lambda: True
    )
    assert gone == registry.GONE
    assert not Connection.objects.exists()
    grouped = registry.admit([admission("c2", gone=lambda: True)])
    assert grouped == [registry.GONE]
    assert not Connection.objects.exists()


def admission(conn_id: str, addr: str = "10.0.0.1", user_id: Any = None, **kw: Any) -> Any:
    return registry.Admission(conn_id, "srv", user_id, "websocket", addr, "agent", **kw)


def test_handshakes_admitted_together_share_the_caps(db, settings) -> None:
    """A group counts what it admits as it goes: the cap holds inside one group too."""
    from django.contrib.auth.models import User

    from realtime.models import UserStatus

    registry.register_server("srv", "x")
    alice = User.objects.create(username="alice")
    settings.REALTIME = {"MAX_CONNECTIONS_PER_IP": 3, "MAX_CONNECTIONS_PER_USER": 2}
    registry.add_connection("c0", "srv", None, "websocket", "10.0.0.1", "")
    got = registry.admit(
        [
            admission("c1"),
            admission("c2", gone=lambda: True),
            admission("c3"),
            admission("c4"),  # the fourth of 10.0.0.1
            admission("c5", "10.0.0.2", alice.pk),
            admission("c6", "10.0.0.3", alice.pk),
            admission("c7", "10.0.0.4", alice.pk),  # alice's third
        ]
    )
    assert got == [None, registry.GONE, None, "ip", None, None, "user"]
    assert sorted(Connection.objects.values_list("id", flat=True)) == [
        "c0", "c1", "c3", "c5", "c6",
    ]  # fmt: skip
    assert UserStatus.objects.get(user=alice).online


def test_a_group_records_each_connection_as_one_on_its_own_would(db) -> None:
    """The group's rows (one ``executemany``, not the ORM's ``bulk_create``) hold what
    ``add_connection`` records through the ORM: every field, the cuts and the defaults."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    registry.register_server("srv", "x")
    alice = User.objects.create(username="alice")
    began = timezone.now()
    agent, addr = "a" * 400, "2001:db8::1"
    registry.add_connection("alone", "srv", alice.pk, "sse", addr, agent, check_limits=True)
    got = registry.admit(
        [registry.Admission("grouped", "srv", alice.pk, "sse", addr, agent), admission("anon")]
    )
    assert got == [None, None]
    fields = ["server_id", "user_id", "transport", "remote_addr", "user_agent", "streams"]
    alone, grouped = (Connection.objects.values(*fields).get(id=i) for i in ("alone", "grouped"))
    assert grouped == alone
    assert grouped["user_agent"] == "a" * 300 and grouped["streams"] == []
    row = Connection.objects.get(id="grouped")
    assert began <= row.connected_at <= timezone.now() and row.last_seen >= began
    assert Connection.objects.get(id="anon").user_id is None


def test_a_group_that_fails_is_admitted_one_by_one(db) -> None:
    """A handshake whose row cannot be written fails alone; the rest of its group gets in."""
    registry.register_server("srv", "x")
    got = registry.admit([admission("d1"), admission("d2", user_id=999_999), admission("d3")])
    assert got[0] is None and got[2] is None
    assert isinstance(got[1], Exception)  # no such user: the foreign key fails
    assert sorted(Connection.objects.values_list("id", flat=True)) == ["d1", "d3"]


async def test_a_dropped_handshake_is_neither_recorded_nor_accepted(hub, monkeypatch) -> None:
    sent = await handshake(True, monkeypatch)
    assert sent == ["websocket.close"]
    assert await rows() == 0


async def test_a_client_leaving_while_recorded_is_forgotten_again(hub, monkeypatch) -> None:
    sent = await handshake(False, monkeypatch)
    assert sent == ["websocket.close"]
    async with asyncio.timeout(5):
        while await rows():
            await asyncio.sleep(0.05)


def test_a_group_flips_each_user_online_once(db) -> None:
    """Two tabs of one user in one group: one ``user_online``; a user already online: none."""
    from django.contrib.auth.models import User

    from realtime import signals
    from realtime.models import UserStatus

    registry.register_server("srv", "x")
    bob, carol = User.objects.create(username="bob"), User.objects.create(username="carol")
    registry.add_connection("e0", "srv", carol.pk, "websocket", "10.0.0.9", "")
    went: list[str] = []

    def receiver(sender: Any, user: Any, **kwargs: Any) -> None:
        went.append(user.username)

    signals.user_online.connect(receiver)
    try:
        got = registry.admit(  # commits: the signals go out on commit
            [
                admission("e1", "10.0.0.5", bob.pk),
                admission("e2", "10.0.0.6", bob.pk),
                admission("e3", "10.0.0.7", carol.pk),
            ]
        )
    finally:
        signals.user_online.disconnect(receiver)
    assert got == [None, None, None]
    assert went == ["bob"]
    assert UserStatus.objects.get(user=bob).online and UserStatus.objects.get(user=carol).online
