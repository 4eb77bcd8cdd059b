"""``Hub.drain`` against the real database and Redis, with recording connections: every
connection told to go with its own delay, new ones refused, the lease gone at once, and the
whole bounded even when a connection never leaves."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async

from realtime.core.hub import DRAINING, Hub, get_hub
from realtime.models import Connection, Server

pytestmark = pytest.mark.django_db(transaction=True)


class Leaving:
    """A connection that records its drain delay, then goes (``leaves=False``: it stays)."""

    transport = "websocket"
    remote_addr = "127.0.0.1"
    user_agent = "test"
    user_id = None

    def __init__(self, hub: Hub, leaves: bool = True) -> None:
        self.id = uuid.uuid4().hex
        self.hub = hub
        self.leaves = leaves
        self.delays: list[float] = []
        self.subscriptions: dict[str, Any] = {}

    async def drain(self, delay: float) -> None:
        self.delays.append(delay)
        if self.leaves:
            await asyncio.sleep(0.01)
            self.hub.detach(self)


@database_sync_to_async
def rows(server_id: str) -> tuple[int, int]:
    return Server.objects.filter(id=server_id).count(), Connection.objects.filter(
        server_id=server_id
    ).count()


@pytest.fixture
async def hub():
    hub = get_hub()
    yield hub
    await hub.close()


async def attach(hub: Hub, **kwargs: Any) -> Leaving:
    conn = Leaving(hub, **kwargs)
    assert await hub.attach(conn) is None
    return conn


async def test_drain_tells_each_connection_its_own_delay_and_removes_the_lease(hub) -> None:
    conns = [await attach(hub) for _ in range(8)]
    assert await rows(hub.id) == (1, 8)
    await hub.drain(within=2, spread=3)
    delays = [d for conn in conns for d in conn.delays]
    assert len(delays) == 8 and all(0 <= d <= 3 for d in delays)
    assert len(set(delays)) > 1
    assert await rows(hub.id) == (0, 0)
    assert hub.connections == {}


async def test_a_draining_hub_refuses_new_connections(hub) -> None:
    await attach(hub)
    draining = asyncio.ensure_future(hub.drain(within=2, spread=0))
    await asyncio.sleep(0)
    assert hub.draining
    assert await hub.attach(Leaving(hub)) == DRAINING
    await draining
    assert await rows(hub.id) == (0, 0)


async def test_drain_is_bounded_when_a_connection_never_leaves(hub) -> None:
    stuck = await attach(hub, leaves=False)
    began = time.monotonic()
    await hub.drain(within=0.5, spread=0)
    assert time.monotonic() - began < 1.0
    assert stuck.delays == [0.0]
    assert await rows(hub.id) == (0, 0)  # the lease goes whether or not clients have


async def test_drain_of_a_hub_that_never_started_does_nothing(hub) -> None:
    await hub.drain(within=0.5)
    assert hub.draining


async def test_a_drain_while_the_hub_starts_removes_the_lease_the_start_wrote(hub) -> None:
    starting = asyncio.ensure_future(hub.start())
    await asyncio.sleep(0)
    assert hub._started is not None and not hub._started.done()
    await hub.drain(within=2)
    await starting
    assert await rows(hub.id) == (0, 0)
