"""Backplanes other than the channel layer (``REALTIME["BACKPLANE"]``): NATS and Redis
Cluster, each on real servers of the test's own (stopped and started again for the outage
tests). The backends themselves, and real daphne processes fanning out over each: delivery
across processes (a third joining mid-stream), presence, revocation, gathering figures, an
outage that loses nothing."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

import realtime
from realtime.bus import BackplaneInterrupted, backplane, messages
from realtime.bus.backends.nats import NatsBackplane
from realtime.bus.backends.rediscluster import RedisClusterBackplane
from realtime.bus.groups import group_name
from realtime.core.gather import agather
from realtime.models import Event
from tests.e2e.test_faults import Redis, collect, start_publisher
from tests.servers import WSClient, arun_manage, free_port, port_open, server_env

WS = "/realtime/ws/"
# Debian installs nats-server in /usr/sbin, which is not on every PATH.
NATS_SERVER = shutil.which("nats-server", path=f"{sys.exec_prefix}/bin:/usr/bin:/usr/sbin")
REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")

pytestmark = pytest.mark.django_db(transaction=True)


def prefix() -> str:
    return f"rt-test-{django_settings.TEST_SESSION}"


def wait_for(ready: Any, what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not start within {within:g} s")
        time.sleep(0.05)


class Nats:
    """A private nats-server this test can stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}?prefix={prefix()}"

    def start(self) -> None:
        assert NATS_SERVER is not None
        self.process = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), "nats-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop_for(self, stream: str) -> None:
        """Stop what carries ``stream``'s messages: the server."""
        self.stop()

    def restart(self) -> None:
        self.start()


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a port too, and free."""
    while True:
        port = free_port()
        if port < 55000 and not port_open(port + 10000):
            return port


class RedisCluster:
    """Three redis-server primaries in cluster mode (no replicas; a node's slots are down
    while it is), each startable and stoppable on its port, its nodes.conf kept."""

    def __init__(self, workdir: Path) -> None:
        self.ports = [cluster_port() for _ in range(3)]
        self.workdir = workdir
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.stopped: list[int] = []

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])
        return f"redis-cluster://{nodes}?prefix={prefix()}"

    def start_node(self, port: int) -> None:
        assert REDIS_SERVER is not None
        folder = self.workdir / f"node-{port}"
        folder.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
             "--cluster-require-full-coverage", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: port_open(port), f"redis-server {port}")

    def cli(self, port: int, *args: str) -> str:
        assert REDIS_CLI is not None
        return subprocess.run(
            [REDIS_CLI, "-p", str(port), *args], capture_output=True, text=True, timeout=30,
            check=True,
        ).stdout  # fmt: skip

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        self.cli(self.ports[0], "--cluster", "create", *nodes, "--cluster-yes")
        self.wait_ok()

    def wait_ok(self) -> None:
        wait_for(
            lambda: all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in self.ports),
            "the cluster",
            within=30,
        )

    def stop_node(self, port: int) -> None:
        process = self.processes.pop(port, None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        for port in list(self.processes):
            self.stop_node(port)

    def stop_for(self, stream: str) -> None:
        """Stop the node that owns the slot of ``stream``'s group."""
        found = backplane()
        subject = found.group_subject(group_name(stream))  # type: ignore[attr-defined]
        slot = int(self.cli(self.ports[0], "cluster", "keyslot", subject))
        for line in self.cli(self.ports[0], "cluster", "nodes").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    self.stopped.append(port)
                    self.stop_node(port)
                    return
        raise AssertionError(f"no node owns slot {slot}")

    def restart(self) -> None:
        for port in self.stopped:
            self.start_node(port)
        self.stopped.clear()
        self.wait_ok()


SERVERS = {"nats": Nats, "redis-cluster": RedisCluster}
MISSING = {
    "nats": NATS_SERVER is None,
    "redis-cluster": REDIS_SERVER is None or REDIS_CLI is None,
}


@pytest.fixture(params=list(SERVERS))
def plane(request: pytest.FixtureRequest, settings: Any, tmp_path: Path) -> Any:
    """A backplane's servers of this test's own, and the pytest process's backplane on them."""
    if MISSING[request.param]:
        pytest.fail(f"{request.param}: its server is not installed (`make test` installs it)")
    server = SERVERS[request.param](tmp_path)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    settings.REALTIME = {**settings.REALTIME, "BACKPLANE": server.url}
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {"hosts": [NO_REDIS]}}}
    yield server
    server.stop()


@pytest.fixture
def nats(settings: Any, tmp_path: Path) -> Any:
    """The NATS backplane on a nats-server of this test's own."""
    if NATS_SERVER is None:
        pytest.fail("nats-server is not installed (`make test` installs it)")
    server = Nats(tmp_path)
    server.start()
    settings.REALTIME = {**settings.REALTIME, "BACKPLANE": server.url}
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {"hosts": [NO_REDIS]}}}
    yield server
    server.stop()


# No Redis answers here: whatever still went through the channel layer would fail.
NO_REDIS = "redis://127.0.0.1:1/0"


def env_for(plane: Any, **extra: str) -> dict[str, str]:
    return {
        "REALTIME_BACKPLANE": plane.url,
        "REALTIME_RECONCILE_INTERVAL": "0.5",
        "REDIS_URL": NO_REDIS,
        **extra,
    }


def message(stream: str, seq: int, size: int = 10) -> dict[str, Any]:
    return {"type": "realtime.event", "stream": stream, "seq": seq, "frame": "x" * size}


async def receive_all(bp: Any, channel: str, count: int, timeout: float = 5) -> list[Any]:
    """``count`` messages of ``channel``, batches unpacked."""
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += messages.unbatch(await bp.receive(channel))
    return got


async def assert_silent(bp: Any, channel: str) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            pytest.fail(f"unexpected message: {await bp.receive(channel)}")


# --- the backend ---------------------------------------------------------------------------


async def test_each_member_gets_each_group_message_once_in_order(plane: Any) -> None:
    bp = backplane()
    assert type(bp).__name__ in ("NatsBackplane", "RedisClusterBackplane")
    one, two = await bp.new_channel("realtime.hub"), await bp.new_channel("realtime.hub")
    await bp.group_add("realtime.s.a.1", one)
    await bp.group_add("realtime.s.a.1", one)  # again: still one subscription
    await bp.group_add("realtime.s.a.1", two)
    await bp.group_add("realtime.s.b.2", one)
    items = [("realtime.s.a.1", message("a", n)) for n in range(1, 151)]
    items.insert(70, ("realtime.s.b.2", message("b", 1)))
    await bp.group_send_many(items)
    got = await receive_all(bp, one, 151)
    assert [m["seq"] for m in got if m["stream"] == "a"] == list(range(1, 151))
    assert [m["seq"] for m in got if m["stream"] == "b"] == [1]
    assert [m["seq"] for m in await receive_all(bp, two, 150)] == list(range(1, 151))
    await assert_silent(bp, one)
    await assert_silent(bp, two)

    await bp.group_discard("realtime.s.a.1", two)
    await bp.send(two, message("direct", 1))  # a channel of its own still receives
    await bp.group_send("realtime.s.a.1", message("a", 151))
    assert (await bp.receive(one))["seq"] == 151
    assert (await bp.receive(two))["stream"] == "direct"
    await assert_silent(bp, two)

    await bp.close_channel(one)  # left its groups: the group has no member now
    await bp.group_send("realtime.s.a.1", message("a", 152))
    await bp.group_add("realtime.s.a.1", two)
    await bp.group_send("realtime.s.a.1", message("a", 153))
    assert (await bp.receive(two))["seq"] == 153


async def test_bad_names_fail_their_caller_and_big_batches_are_split(nats: Nats) -> None:
    bp = backplane()
    channel = await bp.new_channel("realtime.hub")
    with pytest.raises(TypeError, match="not valid"):
        await bp.group_add("spaces are not allowed", channel)
    with pytest.raises(TypeError, match="not valid"):
        await bp.group_send("g>", message("a", 1))
    await bp.group_add("big", channel)
    # 100 events of 30 kB: 3 MB, over the server's max_payload (1 MB) as one batch.
    await bp.group_send_many([("big", message("big", n, 30_000)) for n in range(1, 101)])
    events = [m["seq"] for m in await receive_all(bp, channel, 100)]
    assert events == list(range(1, 101))
    many = messages.events("big", [message("big", n, 30_000) for n in range(101, 201)], None)
    await bp.group_send("big", many)
    got = [e["seq"] for m in await receive_all(bp, channel, 2) for e in m["events"]]
    while len(got) < 100:  # split in halves until each part fits
        got += [e["seq"] for m in await receive_all(bp, channel, 1) for e in m["events"]]
    assert got == list(range(101, 201))


async def test_a_reconnect_interrupts_receive_once_then_delivery_resumes(nats: Nats) -> None:
    bp = backplane()
    channel = await bp.new_channel("realtime.hub")
    await bp.group_add("g", channel)
    nats.stop()
    await asyncio.sleep(1)
    nats.start()
    with pytest.raises(BackplaneInterrupted):
        async with asyncio.timeout(10):
            await bp.receive(channel)
    # nats-py subscribed again: a message sent now arrives.
    async with asyncio.timeout(10):
        while True:
            await bp.group_send("g", message("g", 1))
            try:
                async with asyncio.timeout(0.5):
                    assert (await bp.receive(channel))["seq"] == 1
                    break
            except TimeoutError:
                continue


def test_the_setting_is_checked(settings: Any) -> None:
    from realtime.conf import SettingError, realtime_settings

    for wrong in ("redis://127.0.0.1", "nats://", 4222):
        settings.REALTIME = {"BACKPLANE": wrong}
        with pytest.raises(SettingError, match="BACKPLANE"):
            realtime_settings.validate()
    settings.REALTIME = {"BACKPLANE": "nats://a:4222,nats://b:4222?prefix=app-1"}
    found = backplane()
    assert isinstance(found, NatsBackplane)
    assert (found.servers, found.prefix) == (["nats://a:4222", "nats://b:4222"], "app-1")
    assert found.group_subject("realtime.s.x.1") == "realtime.app-1.g.realtime~s~x~1"
    settings.REALTIME = {"BACKPLANE": "redis-cluster://a:7000,b?prefix=app-2"}
    cluster = backplane()
    assert isinstance(cluster, RedisClusterBackplane)
    assert (cluster.nodes, cluster.prefix) == ([("a", 7000), ("b", 6379)], "app-2")
    assert cluster.channel_subject("realtime.hub.1!x") == "realtime.app-2.c.realtime~hub~1!x"


# --- daphne processes over NATS ------------------------------------------------------------


async def open_ws(server: Any, stream: str | None = None, **fields: Any) -> WSClient:
    ws = await WSClient(server.ws_url + WS).connect()
    await ws.recv_until(lambda f: f["type"] == "welcome")
    if stream is not None:
        await ws.send_json({"type": "subscribe", "stream": stream, **fields})
        await ws.recv_until(lambda f: f["type"] == "subscribed")
    return ws


async def test_every_process_gets_every_event_once_and_a_third_joins_mid_stream(
    daphne_server: Any, plane: Any
) -> None:
    env = env_for(plane)
    servers = [daphne_server(env), daphne_server(env)]
    stream = "public:nats"
    clients = [await open_ws(server, stream, since=0) for server in servers]
    for n in range(1, 31):
        await realtime.apublish(stream, "tick", {"n": n})
    # The sync path (the sender thread, flushed at exit), from a process of its own.
    await arun_manage("realtime_publish", stream, "tick", '{"n": 31}', env=server_env(env))
    third = daphne_server(env)  # joins mid-stream: no change to the others
    late = await open_ws(third, stream, since=0)
    for n in range(32, 61):
        await realtime.apublish(stream, "tick", {"n": n})
    for ws in [*clients, late]:
        assert await collect(ws, stream, 60, timeout=5) == list(range(1, 61))
        await ws.close()
    # Over NATS, not repaired by the reconciler: each hub received the events live (the
    # third at least those published after it joined).
    received = sorted((await received_by_server()).values())
    assert len(received) == 3 and received[0] >= 29 and received[1] >= 60, received


async def test_uvicorn_and_hypercorn_fan_out_over_nats(daphne_server: Any, nats: Nats) -> None:
    """The other ASGI servers (uvicorn on uvloop where installed) over the NATS backplane."""
    env = env_for(nats)
    servers = [daphne_server(env, server=name) for name in ("uvicorn", "hypercorn", "daphne")]
    stream = "public:servers"
    clients = [await open_ws(server, stream, since=0) for server in servers]
    for n in range(1, 6):
        await realtime.apublish(stream, "tick", {"n": n})
    for ws in clients:
        assert await collect(ws, stream, 5, timeout=5) == [1, 2, 3, 4, 5]
        await ws.close()
    received = sorted((await received_by_server()).values())
    assert received == [5, 5, 5], received


async def test_presence_and_revocation_cross_processes(daphne_server: Any, plane: Any) -> None:
    env = env_for(plane)
    one, two = daphne_server(env), daphne_server(env)
    stream = "public:chat:nats"
    watcher = await open_ws(one)
    await watcher.send_json({"type": "subscribe", "stream": stream, "presence": {}})
    await watcher.recv_until(lambda f: f["type"] == "presence.state")
    joiner = await WSClient(two.ws_url + WS + "?client_id=tab").connect()
    welcome = await joiner.recv_until(lambda f: f["type"] == "welcome")
    await joiner.send_json({"type": "subscribe", "stream": stream, "presence": {"v": 1}})
    joined = await watcher.recv_until(lambda f: f["type"] == "presence.join", timeout=5)
    assert joined["key"] == "anon:tab"
    await realtime.arevoke(connection=welcome["connection_id"])
    assert await joiner.wait_closed(timeout=5) == 4401
    left = await watcher.recv_until(lambda f: f["type"] == "presence.leave", timeout=10)
    assert left["key"] == "anon:tab"
    await watcher.close()


async def test_figures_are_gathered_from_every_process(daphne_server: Any, plane: Any) -> None:
    env = env_for(plane)
    servers = [daphne_server(env), daphne_server(env)]
    clients = [await open_ws(server) for server in servers]  # each hub starts (a lease)
    gathered = await agather(3.0)
    assert gathered.error is None
    assert (gathered.expected, gathered.reporting) == (2, 2)
    assert len({reply["server"] for reply in gathered.replies}) == 2
    for ws in clients:
        await ws.close()


async def test_the_admin_stream_shows_every_process(daphne_server: Any, plane: Any) -> None:
    """Each process's figures (ephemeral ``server.stats`` events on the staff-only admin
    stream) reach a staff client on one process from both."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model
    from django.test import Client

    def staff_cookie() -> str:
        user = get_user_model().objects.create_user("staff", password="x", is_staff=True)
        client = Client()
        client.force_login(user)
        return f"sessionid={client.cookies['sessionid'].value}"

    cookie = await sync_to_async(staff_cookie)()
    env = env_for(plane, REALTIME_TEST_OVERRIDES='{"STATS_INTERVAL": 0.5}')
    one, two = daphne_server(env), daphne_server(env)
    other = await open_ws(two)  # its hub starts, and reports
    ws = await WSClient(one.ws_url + WS, headers={"Cookie": cookie}).connect()
    await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_json({"type": "subscribe", "stream": "realtime:admin:stats"})
    await ws.recv_until(lambda f: f["type"] == "subscribed")
    seen: set[str] = set()
    async with asyncio.timeout(15):
        while len(seen) < 2:
            frame = await ws.recv_until(lambda f: f["type"] == "event", timeout=15)
            seen.add(frame["data"]["server"])
    await ws.close()
    await other.close()


async def test_an_outage_loses_nothing_and_delivery_resumes(daphne_server: Any, plane: Any) -> None:
    """NATS stopped, or the cluster node that carries the stream, for five seconds."""
    env = env_for(plane, REALTIME_HEARTBEAT_TIMEOUT="60")
    servers = [daphne_server(env), daphne_server(env)]
    stream, count = "public:outage", 80
    clients = [await open_ws(server, stream, since=0) for server in servers]
    publisher = await start_publisher(env, stream, count, pause=0.1)
    await asyncio.sleep(1.5)
    plane.stop_for(stream)  # five seconds without it, while events keep being published
    await asyncio.sleep(5)
    await asyncio.to_thread(plane.restart)
    async with asyncio.timeout(60):
        _, err = await publisher.communicate()
    assert publisher.returncode == 0, err.decode()
    for ws in clients:
        assert await collect(ws, stream, count, timeout=20) == list(range(1, count + 1))
    assert (
        await asyncio.to_thread(lambda: Event.objects.filter(stream__name=stream).count()) == count
    )
    # Live again by itself: the next events come over NATS (each hub's "received" counts
    # the backplane's events, never the reconciler's).
    before = await received_by_server()
    for n in range(1, 11):
        await realtime.apublish(stream, "tick", {"after": n})
    for ws in clients:
        assert await collect(ws, stream, count + 10, timeout=5) == list(range(81, 91))
        await ws.close()
    after = await received_by_server()
    assert set(after) == set(before) and len(after) == 2
    assert all(after[server] - before[server] >= 10 for server in after), (before, after)


async def received_by_server() -> dict[str, int]:
    gathered = await agather(3.0)
    assert gathered.complete, gathered
    return {reply["server"]: reply["stats"]["received"] for reply in gathered.replies}


# --- the channel layer, sharded over two Redis servers ------------------------------------


async def test_the_channel_layer_sharded_over_two_redis_servers(
    daphne_server: Any, settings: Any, tmp_path: Path
) -> None:
    """channels-redis with two ``hosts`` (each group and channel on one of them, by hash):
    the Redis fast path sends and joins per host, and every process gets every event."""
    shards = [Redis(tmp_path), Redis(tmp_path)]
    for shard in shards:
        shard.start()
    try:
        urls = [shard.url for shard in shards]
        layer = settings.CHANNEL_LAYERS["default"]
        hosts = [{"address": url, "socket_timeout": 15} for url in urls]
        config = {**layer["CONFIG"], "hosts": hosts}
        settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": config}}
        env = {"REDIS_SHARDS": ",".join(urls), "REALTIME_RECONCILE_INTERVAL": "60"}
        servers = [daphne_server(env), daphne_server(env)]
        streams = [f"public:shard-{n}" for n in range(8)]
        clients = []
        for server in servers:
            ws = await open_ws(server)
            for stream in streams:
                await ws.send_json({"type": "subscribe", "stream": stream, "since": 0})
                await ws.recv_until(lambda f: f["type"] == "subscribed")
            clients.append(ws)
        for n in range(1, 6):
            for stream in streams:
                await realtime.apublish(stream, "tick", {"n": n})
        await realtime.apublish_many(streams[0], [("tick", {"n": n}) for n in range(6, 11)])
        for ws in clients:
            got: dict[str, list[int]] = {stream: [] for stream in streams}
            async with asyncio.timeout(10):  # the reconciler (60 s) cannot have delivered them
                while sum(map(len, got.values())) < 8 * 5 + 5:
                    frame = await ws.recv_json(timeout=10)
                    if frame["type"] == "event":
                        got[frame["stream"]].append(frame["seq"])
            assert got[streams[0]] == list(range(1, 11))
            assert all(got[stream] == [1, 2, 3, 4, 5] for stream in streams[1:])
        # Both servers hold groups (the streams' and the control group): really sharded.
        counts = [await asyncio.to_thread(keys_in, url) for url in urls]
        assert all(count > 0 for count in counts), counts
        for ws in clients:
            await ws.close()
        for server in servers:
            server.stop()  # before their Redis servers
    finally:
        for shard in shards:
            shard.stop()


def keys_in(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as client:
        return int(client.dbsize())
