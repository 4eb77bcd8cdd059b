"""Faults: the database down, Redis restarted, a server killed — nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from realtime.client import Backoff, Client
from realtime.client import Event as ClientEvent
from realtime.models import Event
from tests.servers import ROOT, WSClient, free_port, port_open, server_env

WS = "/realtime/ws/"


def test_publish_with_the_database_down_fails_loudly_and_sends_nothing(tmp_path):
    """A publisher whose database is unreachable gets StoreUnavailable; nothing is stored."""
    script = (
        "import django, realtime; django.setup()\n"
        "from realtime.exceptions import StoreUnavailable\n"
        "try:\n"
        "    realtime.publish('public:x', 'e', {'n': 1})\n"
        "except StoreUnavailable as exc:\n"
        "    print('StoreUnavailable:', exc)\n"
        "    raise SystemExit(3)\n"
    )
    env = server_env({"DATABASE_URL": "postgres://nobody@127.0.0.1:1/nothing"})
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "The event store is unavailable" in result.stdout


class Redis:
    """A private redis-server this test can stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: run `make test`, which installs it"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            if port_open(self.port):
                return
            import time

            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def redis(tmp_path):
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()


PUBLISHER = """
import time, django
django.setup()
import realtime
for n in range({count}):
    realtime.publish("{stream}", "tick", {{"n": n}})
    time.sleep({pause})
"""


async def start_publisher(
    env: dict[str, str], stream: str, count: int, pause: float
) -> asyncio.subprocess.Process:
    """``PUBLISHER`` in a process of its own (sync ``realtime.publish``); its stderr is kept
    for ``communicate()``."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER.format(count=count, stream=stream, pause=pause),
        cwd=ROOT, env=server_env(env),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def collect(ws: WSClient, stream: str, last: int, timeout: float) -> list[int]:
    seqs: list[int] = []
    async with asyncio.timeout(timeout):
        while not seqs or seqs[-1] < last:
            frame = await ws.recv_json(timeout=timeout)
            if frame["type"] == "event" and frame["stream"] == stream:
                seqs.append(frame["seq"])
                await ws.send_json({"type": "received", "count": len(ws.received)})
    return seqs


async def test_redis_restart_loses_nothing(daphne_server, redis):
    env = {
        "REDIS_URL": redis.url,
        "REALTIME_RECONCILE_INTERVAL": "0.5",
        "REALTIME_HEARTBEAT_TIMEOUT": "60",
    }
    servers = [daphne_server(env), daphne_server(env)]
    stream, count = "public:outage", 80
    clients = []
    for server in servers:
        ws = await WSClient(server.ws_url + WS).connect()
        await ws.recv_until(lambda f: f["type"] == "welcome")
        await ws.send_json({"type": "subscribe", "stream": stream, "since": 0})
        await ws.recv_until(lambda f: f["type"] == "subscribed")
        clients.append(ws)
    publisher = await start_publisher(env, stream, count, pause=0.1)
    await asyncio.sleep(1.5)
    redis.stop()  # five seconds without Redis, while events keep being published
    await asyncio.sleep(5)
    redis.start()
    async with asyncio.timeout(60):
        _, err = await publisher.communicate()
    assert publisher.returncode == 0, err.decode()
    assert b"reconciler will deliver it" in err  # some fan-outs really did fail
    for ws in clients:
        assert await collect(ws, stream, count, timeout=20) == list(range(1, count + 1))
        await ws.close()
    assert (
        await asyncio.to_thread(lambda: Event.objects.filter(stream__name=stream).count()) == count
    )


async def test_killed_server_clients_resume_on_the_other(daphne_server):
    """The Python client (realtime.client), given both servers, does what the reference
    client does when its server dies mid-stream: reconnect to the other and resume."""
    env = {"REALTIME_PRESENCE_TIMEOUT": "3", "REALTIME_RECONCILE_INTERVAL": "0.5"}
    a, b = daphne_server(env), daphne_server(env)
    stream, count = "public:failover", 60
    seen: list[int] = []
    client = Client([a.http_url, b.http_url], backoff=Backoff(base=0.1, cap=0.5))
    sub = await client.subscribe(stream, since=0, presence={})
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER.format(count=count, stream=stream, pause=0.05),
        cwd=ROOT, env=server_env(env),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            async for item in sub:
                assert isinstance(item, ClientEvent), item  # a Reset would mean not recovered
                seen.append(item.seq)
                if len(seen) == 15:
                    a.kill()  # mid-stream, no goodbye
                if len(seen) == count:
                    break
        assert client.url == b.http_url and sub.recovered is True
    finally:
        await publisher.wait()
        await client.close()
    assert seen == list(range(1, count + 1))
    # The dead server's lease, connection and presence are swept within the timeout.
    from realtime.models import Connection, Presence, Server

    def leftovers() -> tuple[bool, bool, bool]:
        return (
            Server.objects.filter(pid=a.pid).exists(),
            Connection.objects.filter(server__pid=a.pid).exists(),
            Presence.objects.filter(server__pid=a.pid).exists(),
        )

    async with asyncio.timeout(8):
        while any(await asyncio.to_thread(leftovers)):
            await asyncio.sleep(0.2)
