"""The Redis layer over TLS and through Redis Sentinel, configured by environment alone.

:func:`realtime.deploy.redis_hosts` turns ``REDIS_URL``/``REDIS_TLS_*``/``REDIS_SENTINEL*``
into channels-redis ``hosts``; the demo's settings and the tests' call it. Here each test
starts its own redis-server processes on free ports (a TLS-only one with certificates openssl
makes for the test, or a master, a replica and a Sentinel), then daphne processes and a
publishing ``manage.py`` that get nothing but those variables: subscribers on two processes
must both receive what a third process publishes. The reconciler is slowed to an hour and
half of the events are ephemeral (never stored), so only the Redis layer can deliver them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from channels_redis.core import RedisChannelLayer
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from realtime.deploy import redis_hosts
from tests.servers import Server, WSClient, arun_manage, free_port

WS = "/realtime/ws/"
MASTER = "mymaster"
# Nothing but the channel layer may bring events: the reconciler would repair a broken
# layer from the database within twice RECONCILE_INTERVAL.
SLOW_RECONCILER = {"REALTIME_RECONCILE_INTERVAL": "3600"}


# --------------------------------------------------------------------------------------
# Certificates and redis-server processes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A CA, and a certificate it signed for 127.0.0.1 that the servers and clients all use
    (redis-server asks clients for a certificate by default: ``tls-auth-clients yes``)."""

    ca: Path
    cert: Path
    key: Path

    def env(self) -> dict[str, str]:
        return {
            "REDIS_TLS_CA": str(self.ca),
            "REDIS_TLS_CERT": str(self.cert),
            "REDIS_TLS_KEY": str(self.key),
        }

    def server_config(self) -> list[str]:
        return [
            f"tls-cert-file {self.cert}",
            f"tls-key-file {self.key}",
            f"tls-ca-cert-file {self.ca}",
            "tls-replication yes",  # replicas and Sentinels talk TLS to the master too
        ]

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca),
            "ssl_certfile": str(self.cert),
            "ssl_keyfile": str(self.key),
        }


def make_tls_files(directory: Path) -> TlsFiles:
    """Made at test time with openssl, so no key sits in the repository."""
    directory.mkdir()
    files = TlsFiles(directory / "ca.crt", directory / "redis.crt", directory / "redis.key")
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    commands = [
        f"req -x509 {key} -keyout ca.key -out ca.crt -days 1 -subj /CN=realtime-test-CA",
        f"req {key} -keyout redis.key -out redis.csr -subj /CN=127.0.0.1",
        "x509 -req -in redis.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out redis.crt "
        "-days 1 -extfile san.cnf",
    ]
    for command in commands:
        done = subprocess.run(
            ["openssl", *command.split()], cwd=directory, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, f"openssl {command} failed:\n{done.stderr}"
    return files


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@dataclass
class RedisServer:
    """One redis-server (or Sentinel) process on 127.0.0.1; see the ``redis_servers`` fixture."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    tls: TlsFiles | None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client_kwargs(self) -> dict[str, Any]:
        tls = self.tls.client_kwargs() if self.tls else {}
        return {"host": "127.0.0.1", "port": self.port, "socket_timeout": 5, **tls}

    def client(self) -> redis.asyncio.Redis:
        return redis.asyncio.Redis(**self.client_kwargs())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 5 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crashed host would go."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(timeout=10)

    def _ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        kwargs = {**self.client_kwargs(), "socket_timeout": 1, "socket_connect_timeout": 1}
        with redis.Redis(**kwargs) as client:
            while time.monotonic() < deadline and self.process.poll() is None:
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                time.sleep(0.05)
        raise AssertionError(
            f"redis-server on port {self.port} did not answer PING within {timeout:g} s "
            f"(exit code {self.process.poll()}). Its output:\n{self.log()}"
        )


StartRedis = Callable[..., RedisServer]


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[StartRedis]:
    """Start redis-server processes on free ports; all are stopped after the test.

    ``start(name, tls=None, config=[...], sentinel=False)``: ``config`` lines go into the
    process's own redis.conf (a Sentinel rewrites its file, so each gets one in tmp_path).
    """
    started: list[RedisServer] = []

    def start(
        name: str,
        *,
        tls: TlsFiles | None = None,
        config: Sequence[str] = (),
        sentinel: bool = False,
    ) -> RedisServer:
        for attempt in range(3):
            port = free_port()
            listen = (
                ["port 0", f"tls-port {port}", *tls.server_config()] if tls else [f"port {port}"]
            )
            lines = ["bind 127.0.0.1", f"dir {tmp_path}", *listen, *config]
            if not sentinel:
                lines += ['save ""', "appendonly no"]
            conf = tmp_path / f"{name}.conf"
            conf.write_text("\n".join(lines) + "\n")
            log_path = tmp_path / f"{name}-{port}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    ["redis-server", str(conf), *(["--sentinel"] if sentinel else [])],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            server = RedisServer(process, port, log_path, tls)
            started.append(server)
            try:
                server._ready(timeout=10)
                return server
            except AssertionError:
                server.kill()
                if "Address already in use" in server.log() and attempt < 2:
                    continue  # another process took the port after free_port()
                raise
        raise AssertionError("unreachable")

    yield start
    for server in reversed(started):
        server.stop()


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: Callable[[], str]
) -> None:
    """Poll ``condition`` until it holds; AssertionError with ``what()`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if await condition():
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout:g} s: {what()}")


async def subscriber(server: Server, stream: str) -> WSClient:
    ws = await WSClient(server.ws_url + WS).connect()
    await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_json({"type": "subscribe", "stream": stream})
    await ws.recv_until(lambda f: f["type"] == "subscribed")
    return ws


async def assert_fan_out(
    env: dict[str, str], clients: Sequence[WSClient], stream: str, n: int, timeout: float = 10
) -> None:
    """A third process publishes a stored and an ephemeral event; every client gets both."""
    data = json.dumps({"n": n})
    stored = await arun_manage("realtime_publish", stream, "note.added", data, env=env)
    await arun_manage("realtime_publish", stream, "cursor.moved", data, "--ephemeral", env=env)
    for ws in clients:
        for event in ("note.added", "cursor.moved"):
            try:
                frame = await ws.recv_until(
                    lambda f, e=event: f["type"] == "event" and f["event"] == e, timeout=timeout
                )
            except AssertionError as exc:  # what the publishing process said, to tell why
                raise AssertionError(f"{exc}\npublisher's stderr: {stored.stderr}") from None
            assert frame["data"] == {"n": n}


async def group_keys(server: RedisServer, prefix: str) -> list[bytes]:
    async with server.client() as client:
        return list(await client.keys(f"{prefix}:group:*"))


async def roundtrip(hosts: list[dict[str, Any]]) -> dict[str, Any]:
    """Send a message to a new channel of a layer on ``hosts`` and receive it back."""
    layer = RedisChannelLayer(hosts=hosts, prefix=f"rt-deploy-{uuid.uuid4().hex[:8]}")
    try:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "ping.me", "n": 1})
        async with asyncio.timeout(10):
            return dict(await layer.receive(channel))
    finally:
        await layer.close_pools()


# --------------------------------------------------------------------------------------
# Environment → hosts, and check W007 on what comes out
# --------------------------------------------------------------------------------------


def test_plain_redis_url_is_as_before() -> None:
    assert redis_hosts({"REDIS_URL": "redis://10.0.0.5:6379/2"}) == [
        {"address": "redis://10.0.0.5:6379/2", "socket_timeout": 15}
    ]


def test_tls_url_takes_the_certificate_files() -> None:
    env = {"REDIS_URL": "rediss://:pw@cache:6380/0", "REDIS_TLS_CA": "/etc/ca.pem"}
    assert redis_hosts(env) == [
        {
            "address": "rediss://:pw@cache:6380/0",
            "socket_timeout": 15,
            "ssl_ca_certs": "/etc/ca.pem",
        }
    ]
    env |= {"REDIS_TLS_CERT": "/etc/c.pem", "REDIS_TLS_KEY": "/etc/c.key"}
    assert redis_hosts(env)[0]["ssl_certfile"] == "/etc/c.pem"
    assert redis_hosts(env)[0]["ssl_keyfile"] == "/etc/c.key"


def test_tls_files_without_rediss_are_refused() -> None:
    """redis-py would fail on the first connection instead, with a TypeError."""
    with pytest.raises(ImproperlyConfigured, match="rediss://"):
        redis_hosts({"REDIS_URL": "redis://cache:6379/0", "REDIS_TLS_CA": "/etc/ca.pem"})


def test_sentinels_name_the_master_and_the_url_says_how() -> None:
    env = {
        "REDIS_SENTINELS": "10.0.0.1:26379, [fd00::2]:26380",
        "REDIS_SENTINEL_MASTER": "cache",
        "REDIS_SENTINEL_PASSWORD": "s3",
        "REDIS_URL": "redis://app:pw@ignored:1/3",
    }
    assert redis_hosts(env) == [
        {
            "sentinels": [("10.0.0.1", 26379), ("fd00::2", 26380)],
            "master_name": "cache",
            "sentinel_kwargs": {"password": "s3"},
            "ssl": False,
            "socket_timeout": 15,
            "username": "app",
            "password": "pw",
            "db": 3,
        }
    ]
    (tls,) = redis_hosts(
        {"REDIS_SENTINELS": "s:26379", "REDIS_URL": "rediss://", "REDIS_TLS_CA": "c"}
    )
    assert tls["master_name"] == MASTER
    assert (tls["ssl"], tls["ssl_ca_certs"]) == (True, "c")
    assert tls["sentinel_kwargs"] == {"ssl": True, "ssl_ca_certs": "c"}


@pytest.mark.parametrize("sentinels", ["s1", "s1:26379,s2", "s1:port", ":26379"])
def test_malformed_sentinel_addresses_are_refused(sentinels: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="host:port"):
        redis_hosts({"REDIS_SENTINELS": sentinels})


def w007(hosts: list[Any]) -> bool:
    from django.core.checks import run_checks

    layers = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": hosts}}
    }
    with override_settings(CHANNEL_LAYERS=layers):
        return "realtime.W007" in [m.id for m in run_checks(include_deployment_checks=True)]


def test_w007_judges_tls_and_sentinel_hosts_by_their_real_timeout() -> None:
    tls = {"REDIS_URL": "rediss://cache:6380/0", "REDIS_TLS_CA": "/etc/ca.pem"}
    sentinel = {"REDIS_SENTINELS": "s:26379", "REDIS_URL": "rediss://", "REDIS_TLS_CA": "c"}
    if int(redis.__version__.split(".")[0]) < 8:
        # Before redis-py 8 reads had no default timeout: W007 has nothing to warn about.
        assert not w007(["rediss://cache:6380/0"])
        return
    assert not w007(redis_hosts(tls))
    assert not w007(redis_hosts(sentinel))
    (entry,) = redis_hosts(sentinel)
    del entry["socket_timeout"]  # the master's connections would get redis-py's 5 s
    assert w007([entry])
    # A URL's ?socket_timeout= wins over the entry's key, as in redis-py's from_url.
    assert not w007(["rediss://cache:6380/0?socket_timeout=30"])
    assert w007(["rediss://cache:6380/0"])
    assert w007([{"address": "redis://cache/0?socket_timeout=3", "socket_timeout": 15}])
    assert not w007([{"address": "redis://cache/0?socket_timeout=30"}])


# --------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------


async def test_tls_layer_needs_the_ca_and_the_client_certificate(
    redis_servers: StartRedis, tls_files: TlsFiles
) -> None:
    server = redis_servers("tls", tls=tls_files)
    env = {"REDIS_URL": server.url, **tls_files.env()}
    assert await roundtrip(redis_hosts(env)) == {"type": "ping.me", "n": 1}
    # What each variable is for: without the CA the server's certificate is not trusted;
    # without a client certificate the server (tls-auth-clients yes) hangs up.
    without_ca = {k: v for k, v in env.items() if k != "REDIS_TLS_CA"}
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        await roundtrip(redis_hosts(without_ca))
    without_cert = {k: v for k, v in env.items() if k not in ("REDIS_TLS_CERT", "REDIS_TLS_KEY")}
    with pytest.raises(redis.ConnectionError):
        await roundtrip(redis_hosts(without_cert))


async def test_tls_fan_out_between_processes(
    redis_servers: StartRedis,  # first: its servers outlive the daphne processes
    daphne_server: Callable[..., Server],
    tls_files: TlsFiles,
    redis_prefix: str,
) -> None:
    tls_redis = redis_servers("tls", tls=tls_files)
    env = {"REDIS_URL": tls_redis.url, **tls_files.env(), **SLOW_RECONCILER}
    servers = [daphne_server(env), daphne_server(env)]
    clients = [await subscriber(server, "public:tls") for server in servers]
    try:
        await assert_fan_out(env, clients, "public:tls", 1)
        # The group memberships live on the TLS server, not on the suite's Redis.
        assert await group_keys(tls_redis, redis_prefix)
    finally:
        for ws in clients:
            await ws.close()


# --------------------------------------------------------------------------------------
# Sentinel
# --------------------------------------------------------------------------------------


@dataclass
class SentinelSet:
    master: RedisServer
    replica: RedisServer
    sentinel: RedisServer

    async def master_port(self) -> int:
        async with self.sentinel.client() as client:
            _, port = await client.sentinel_get_master_addr_by_name(MASTER)
            return int(port)

    async def replica_known(self) -> bool:
        """Whether the Sentinel could promote the replica (connected, not down)."""
        async with self.sentinel.client() as client:
            replicas = await client.sentinel_slaves(MASTER)
        return any(r["port"] == self.replica.port and r["flags"] == "slave" for r in replicas)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} :{s.port} ---\n{s.log()[-3000:]}"
            for name, s in vars(self).items()
            if isinstance(s, RedisServer)
        )


def start_sentinel_set(start: StartRedis, tls: TlsFiles | None) -> SentinelSet:
    """A master, its replica and one Sentinel (quorum 1) that fails over within seconds."""
    master = start("master", tls=tls, config=["repl-diskless-sync-delay 0"])
    replica = start("replica", tls=tls, config=[f"replicaof 127.0.0.1 {master.port}"])
    sentinel = start(
        "sentinel",
        tls=tls,
        sentinel=True,
        config=[
            f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1",
            f"sentinel down-after-milliseconds {MASTER} 1000",
            f"sentinel failover-timeout {MASTER} 10000",
        ],
    )
    return SentinelSet(master, replica, sentinel)


@pytest.mark.parametrize("transport", ["plain", "tls"])
async def test_sentinel_fan_out_survives_a_failover(
    redis_servers: StartRedis,  # first: its servers outlive the daphne processes
    daphne_server: Callable[..., Server],
    tmp_path: Path,
    redis_prefix: str,
    transport: str,
) -> None:
    tls = await asyncio.to_thread(make_tls_files, tmp_path / "tls") if transport == "tls" else None
    redis_set = await asyncio.to_thread(start_sentinel_set, redis_servers, tls)
    await wait_for(
        redis_set.replica_known, 20, lambda: f"Sentinel sees the replica\n{redis_set.logs()}"
    )
    env = {
        # Only the scheme (and credentials, database) of the URL count with Sentinels.
        "REDIS_URL": "rediss://" if tls else "",
        **(tls.env() if tls else {}),
        "REDIS_SENTINELS": f"127.0.0.1:{redis_set.sentinel.port}",
        "REDIS_SENTINEL_MASTER": MASTER,
        **SLOW_RECONCILER,
    }
    servers = [daphne_server(env), daphne_server(env)]
    clients = [await subscriber(server, "public:ha") for server in servers]
    try:
        await assert_fan_out(env, clients, "public:ha", 1)
        assert await group_keys(redis_set.master, redis_prefix)

        # The master's host dies; the Sentinel promotes the replica; the daphne processes
        # find it through the Sentinel, and their WebSocket clients notice nothing.
        async with redis_set.master.client() as client:
            assert await client.execute_command("WAIT", 1, 5000) == 1  # replica has it all
        redis_set.master.kill()

        async def promoted() -> bool:
            return await redis_set.master_port() == redis_set.replica.port

        await wait_for(promoted, 20, lambda: f"failover to the replica\n{redis_set.logs()}")

        async def writable() -> bool:
            # The Sentinel names the new master a moment before it takes writes; a publish
            # in that moment is stored but its fan-out fails (the reconciler, slowed here,
            # would deliver it), which is not what this test is about.
            async with redis_set.replica.client() as client:
                role = await client.execute_command("ROLE")
                return role[0] in (b"master", "master")

        await wait_for(writable, 20, lambda: f"the new master takes writes\n{redis_set.logs()}")
        await assert_fan_out(env, clients, "public:ha", 2, timeout=20)
        assert await group_keys(redis_set.replica, redis_prefix)
        assert all(ws.close_code is None for ws in clients)
    finally:
        for ws in clients:
            await ws.close()
