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

from realtime import registry
from realtime.hub import get_hub
from realtime.models import Connection
from realtime.websocket import WebSocketConnection

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
        add = registry.aadd_connection

        async def add_then_leave(*args: Any, **kwargs: Any) -> str | None:
            cap = await add(*args, **kwargs)
            await received.put({"type": "websocket.disconnect", "code": 1006})
            await asyncio.sleep(0)  # the endpoint's watcher takes it
            return cap

        monkeypatch.setattr(registry, "aadd_connection", add_then_leave)
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
