"""SIGTERM to ``python -m realtime.serve``: the process drains (docs/operations.md).

Every WebSocket client gets close code 1012 with its own reconnect delay, the SSE client a
``retry:`` field and the end of its response, the process's lease, connection records and
presence are gone from the database within a second, and the process exits within
``DRAIN_TIMEOUT``. A client of another process sees the members leave once their hold
(``DRAIN_SPREAD`` + ``PRESENCE_GRACE``) is over, unless they came back by then: then it
sees an update, never a leave.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from realtime.models import Connection, Presence, Server
from realtime.protocol import CLOSE_SERVICE_RESTART
from tests.servers import Server as Process
from tests.servers import WSClient, open_sse, settings_env

pytestmark = pytest.mark.django_db(transaction=True)

WS = "/realtime/ws/"
STREAM = "public:drain"
SPREAD = 2.0  # seconds
TIMEOUT = 4.0  # seconds
SSE_RETRY = 9999  # the usual retry hint, told apart from the drain's
GRACE = 0.5  # PRESENCE_GRACE, seconds
HOLD = SPREAD + GRACE  # how long the other processes hold a drained member's leave


def start(daphne_server: Any, server: str) -> Process:
    overrides = {
        "DRAIN_SPREAD": SPREAD,
        "DRAIN_TIMEOUT": TIMEOUT,
        "SSE_RETRY": SSE_RETRY,
        "PRESENCE_GRACE": GRACE,
    }
    return daphne_server(settings_env(overrides), server=server)


async def joined(server: Process, client_id: str) -> WSClient:
    ws = WSClient(f"{server.ws_url}{WS}?client_id={client_id}")
    await ws.connect()
    await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_json({"type": "subscribe", "id": 1, "stream": STREAM, "presence": {}})
    await ws.recv_until(lambda f: f["type"] == "presence.state")
    return ws


def left_behind(pid: int) -> tuple[int, int, int]:
    """The drained process's Server, Connection and Presence rows."""
    servers = Server.objects.filter(pid=pid)
    return (
        servers.count(),
        Connection.objects.filter(server__in=servers).count(),
        Presence.objects.filter(server__in=servers).count(),
    )


async def wait_for(predicate: Any, timeout: float, what: str) -> float:
    """Poll ``predicate`` (sync, run in a thread) until true; the time it took."""
    began = time.monotonic()
    while not await sync_to_async(predicate)():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - began


async def test_sigterm_drains_clients_lease_and_presence(daphne_server: Any) -> None:
    drained = start(daphne_server, "realtime")
    other = start(daphne_server, "daphne")
    observer = await joined(other, "observer")
    clients = [await joined(drained, f"ws-{n}") for n in range(5)]
    params = {"stream": STREAM, "presence": STREAM, "client_id": "sse-1"}
    async with open_sse(drained.http_url + "/realtime/sse/", params=params) as sse:
        assert sse.status_code == 200
        await sse.next_event()  # welcome
        keys = {f"anon:ws-{n}" for n in range(5)} | {"anon:sse-1"}
        await wait_for(lambda: left_behind(drained.pid)[2] == 6, 5, "six members joined")
        await observer.recv_until(
            lambda f: f["type"] == "presence.join" and f["key"] == "anon:sse-1", timeout=5
        )

        drained.terminate()
        signalled = time.monotonic()

        # The database: lease, connection records and presence gone within a second.
        took = await wait_for(
            lambda: left_behind(drained.pid) == (0, 0, 0), 5, "the lease and its rows removed"
        )
        assert took < 1.0, f"rows removed {took:.2f} s after SIGTERM"

        # Another process's client sees every member of the drained process leave, once
        # the hold is over (none of these clients comes back).
        leaves: set[str] = set()
        while leaves != keys:
            frame = await observer.recv_until(
                lambda f: f["type"] == "presence.leave",
                timeout=max(0.05, signalled + HOLD + 1.0 - time.monotonic()),
            )
            assert time.monotonic() - signalled > HOLD - 0.3, f"left before the hold: {frame}"
            leaves.add(frame["key"])

        # WebSocket clients: 1012, each with its own delay inside the spread.
        delays = []
        for ws in clients:
            assert await ws.wait_closed(timeout=TIMEOUT) == CLOSE_SERVICE_RESTART
            reason = json.loads(ws.connection.close_reason or "{}")
            assert set(reason) == {"retry"}
            assert 0 <= reason["retry"] <= SPREAD * 1000
            delays.append(reason["retry"])
        assert len(set(delays)) > 1, f"every client got the same delay: {delays}"

        # SSE: a retry field with the delay, then the end of the response.
        async with asyncio.timeout(TIMEOUT):
            async for _ in sse.events(timeout=TIMEOUT):
                pass
        assert sse.ended
        assert sse.retries[0] == SSE_RETRY  # the welcome's usual hint
        assert len(sse.retries) == 2 and 0 <= sse.retries[-1] <= SPREAD * 1000

    # The process exits within the bound, and cleanly.
    code = await asyncio.to_thread(drained.process.wait, TIMEOUT + 3)
    assert code == 0, drained.log()
    assert time.monotonic() - signalled < TIMEOUT + 3
    await observer.close()


async def test_a_draining_server_refuses_new_connections(daphne_server: Any) -> None:
    drained = start(daphne_server, "realtime")
    ws = await joined(drained, "stays")
    drained.terminate()
    assert await ws.wait_closed(timeout=TIMEOUT) == CLOSE_SERVICE_RESTART
    late = WSClient(f"{drained.ws_url}{WS}")
    with pytest.raises(OSError):
        await late.connect(timeout=2)
    await asyncio.to_thread(drained.process.wait, TIMEOUT + 3)


async def test_a_member_back_within_the_hold_never_leaves_the_others_view(
    daphne_server: Any,
) -> None:
    drained = start(daphne_server, "realtime")
    other = start(daphne_server, "daphne")
    observer = await joined(other, "observer")
    moving, staying = await joined(drained, "moving"), await joined(drained, "gone")
    await observer.recv_until(lambda f: f["type"] == "presence.join" and f["key"] == "anon:gone")
    drained.terminate()
    signalled = time.monotonic()
    assert await moving.wait_closed(timeout=TIMEOUT) == CLOSE_SERVICE_RESTART
    assert await staying.wait_closed(timeout=TIMEOUT) == CLOSE_SERVICE_RESTART
    await wait_for(lambda: left_behind(drained.pid) == (0, 0, 0), 5, "the lease removed")
    back = await joined(other, "moving")  # the same member, on the other process
    frames = []
    while not any(f["type"] == "presence.leave" for f in frames):
        frames.append(
            await observer.recv_until(
                lambda f: f["type"].startswith("presence."),
                timeout=max(0.05, signalled + HOLD + 1.0 - time.monotonic()),
            )
        )
    assert [(f["type"], f["key"]) for f in frames] == [
        ("presence.update", "anon:moving"),
        ("presence.leave", "anon:gone"),
    ]
    assert time.monotonic() - signalled > HOLD - 0.3
    await back.close()
    await observer.close()


@pytest.mark.parametrize(("server", "code"), [("uvicorn-lifespan", 1012), ("hypercorn", 1011)])
async def test_lifespan_shutdown_drains_the_hub(daphne_server: Any, server: str, code: int) -> None:
    """uvicorn and hypercorn close their WebSockets themselves (uvicorn 1012 with no delay,
    hypercorn after ``--graceful-timeout``), then run the lifespan shutdown: the lease and
    presence go at once there too."""
    drained = start(daphne_server, server)
    other = start(daphne_server, "daphne")
    observer = await joined(other, "observer")
    clients = [await joined(drained, f"ws-{n}") for n in range(2)]
    # hypercorn serves from a worker process: the rows carry the worker's pid.
    pid = await sync_to_async(lambda: Server.objects.exclude(pid=other.pid).get().pid)()
    await wait_for(lambda: left_behind(pid)[2] == 2, 5, "two members joined")
    # hypercorn's workers leave signals to their parent (a SIGTERM to the whole group kills
    # them at once: docs/deployment.md); uvicorn is one process.
    drained.process.send_signal(signal.SIGTERM)
    for ws in clients:
        assert await ws.wait_closed(timeout=TIMEOUT) == code
    closed = time.monotonic()
    took = await wait_for(lambda: left_behind(pid) == (0, 0, 0), 5, "rows removed")
    assert took < 1.0, f"rows removed {took:.2f} s after the connections closed"
    # The server closed them: their leaves are held for the grace only, or for the spread as
    # well if the drain began before the hub saw them go (hypercorn: they may be closing).
    leaves = {
        (await observer.recv_until(lambda f: f["type"] == "presence.leave", timeout=HOLD + 1))[
            "key"
        ]
        for _ in clients
    }
    assert leaves == {"anon:ws-0", "anon:ws-1"}
    await asyncio.to_thread(drained.process.wait, TIMEOUT + 3)
    assert time.monotonic() - closed < TIMEOUT + 3
    await observer.close()
