"""Messages over ``MAX_FRAME_SIZE``: the documented server (``python -m realtime.serve``, see
docs/deployment.md) refuses them as their frame header arrives and closes with 1009 and a close
frame, never a bare TCP drop (1006); the app's ``frame_too_large`` answers only what a larger
server limit lets through. And the system checks that say so (``realtime.W008``, ``W009``).

The servers here run the documented command line, not the plain ``daphne`` the rest of the
suite starts (``tests/servers.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.checks import Error, Warning, run_checks
from django.test import override_settings
from websockets.exceptions import ConnectionClosed

import realtime
from realtime.endpoints import serve
from realtime.models import Event
from realtime.protocol import CLOSE_MESSAGE_TOO_BIG, FRAME_TOO_LARGE
from tests.servers import ASGI_APP, ROOT, Server, ServerError, WSClient, free_port, server_env

WS = "/realtime/ws/"
LIMIT = 64 * 1024  # MAX_FRAME_SIZE's default, which project.settings keeps
DOCUMENTED = [sys.executable, "-m", "realtime.serve"]  # docs/deployment.md, make run

Serve = Callable[..., Server]


@pytest.fixture
def realtime_serve(transactional_db: None, tmp_path: Path) -> Iterator[Serve]:
    """Start ``python -m realtime.serve -b 127.0.0.1 -p <free port> *options project.asgi``
    on the test database; every server is stopped after the test.

    ``env`` is merged into the environment as ``daphne_server``'s argument is.
    """
    servers: list[Server] = []

    def start(*options: str, env: Mapping[str, str] | None = None) -> Server:
        full_env = server_env(env)
        for attempt in range(3):
            port = free_port()
            log_path = tmp_path / f"serve-{port}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [*DOCUMENTED, "-b", "127.0.0.1", "-p", str(port), *options, ASGI_APP],
                    cwd=ROOT,
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            server = Server(process=process, port=port, log_path=log_path, env=full_env)
            servers.append(server)
            try:
                server._wait_ready(20)
                return server
            except ServerError:
                server.kill()
                if "Address already in use" in server.log() and attempt < 2:
                    continue  # another process took the port first
                raise
        raise AssertionError("unreachable")

    yield start
    for server in servers:
        server.stop()


def settings_env(overrides: Mapping[str, Any]) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "REALTIME_TEST_OVERRIDES": json.dumps(dict(overrides)),
    }


def ping(size: int, frame_id: str = "big") -> str:
    """A valid ``ping`` frame of exactly ``size`` bytes."""
    text = json.dumps({"type": "ping", "id": frame_id, "pad": ""})
    text = text[:-2] + "x" * (size - len(text)) + '"}'
    assert len(text.encode()) == size
    return text


async def connect(server: Server) -> WSClient:
    client = await WSClient(server.ws_url + WS).connect()
    assert (await client.recv_json())["type"] == "welcome"
    return client


async def assert_alive(client: WSClient, frame_id: str = "alive") -> None:
    await client.send_json({"type": "ping", "id": frame_id})
    assert await client.recv_until(lambda f: f["type"] == "pong") == {
        "type": "pong",
        "id": frame_id,
    }


async def refused_with(client: WSClient, payload: str | bytes, server: Server) -> int | None:
    """Send ``payload``; wait for the server to close; the close frame's code (None: none came).

    Also checks that the connection is really gone: TCP closed, no more frames.
    """
    with contextlib.suppress(ConnectionClosed):  # the close may already be in when send ends
        await client.send_raw(payload)
    with pytest.raises((AssertionError, ConnectionClosed)):
        await client.recv_json(timeout=5)  # nothing but the close comes back
    await client.wait_closed(timeout=5)
    received = client.connection.protocol.close_rcvd
    assert server.running, server.log()
    return received.code if received is not None else None


@sync_to_async
def stored_events() -> list[tuple[Any, ...]]:
    return list(Event.objects.order_by("pk").values_list("pk", "stream__name", "seq", "data"))


async def watched(server: Server) -> tuple[WSClient, list[tuple[Any, ...]]]:
    """A client subscribed to ``public:fs`` (which holds two events) and the stored events."""
    for n in range(2):
        await realtime.apublish("public:fs", "before", {"n": n})
    victim = await connect(server)
    await victim.send_json({"type": "subscribe", "stream": "public:fs"})
    assert (await victim.recv_json())["type"] == "subscribed"
    return victim, await stored_events()


async def assert_unharmed(server: Server, victim: WSClient, before: list[tuple[Any, ...]]) -> None:
    """Stored events unchanged; the other client still receives; new clients are served."""
    assert await stored_events() == before, "stored events changed"
    stored = await realtime.apublish("public:fs", "after", {"ok": True})
    frame = await victim.recv_until(lambda f: f["type"] == "event")
    assert (frame["seq"], frame["data"]) == (stored.seq, {"ok": True})
    async with await connect(server) as newcomer:
        await assert_alive(newcomer)
    assert server.running, server.log()


# --- the documented server --------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(ping(LIMIT + 1), id="one-byte-over"),
        pytest.param(ping(2 * 1024 * 1024), id="over-daphne-default-1MiB"),
        pytest.param(b"\x00" * (LIMIT + 1), id="binary"),
    ],
)
async def test_a_message_over_max_frame_size_gets_close_1009(
    realtime_serve: Serve, payload: str | bytes
) -> None:
    server = realtime_serve()
    victim, before = await watched(server)
    async with victim, await connect(server) as client:
        await client.send_raw(ping(LIMIT))  # exactly at the limit: served
        assert await client.recv_json() == {"type": "pong", "id": "big"}
        code = await refused_with(client, payload, server)
        assert code == CLOSE_MESSAGE_TOO_BIG, (code, server.log())
        assert client.close_code == 1009
        close = client.connection.protocol.close_rcvd
        assert close is not None and f"exceeds payload limit of {LIMIT} octets" in close.reason
        await assert_unharmed(server, victim, before)


async def test_what_the_server_sends_is_not_held_to_max_frame_size(realtime_serve: Serve) -> None:
    """MAX_FRAME_SIZE bounds what clients send. A catch-up's ``batch`` frame (up to 256 KiB)
    is the server's own and goes out whole: autobahn held it to the clients' limit, failed the
    send and the connection was closed."""
    server = realtime_serve()
    for n in range(60):
        await realtime.apublish("public:fs-big", "big", {"n": n, "pad": "x" * 2000})
    async with WSClient(server.ws_url + WS + "?batch=1", unbatch=True) as client:
        assert (await client.recv_json())["type"] == "welcome"
        await client.send_json({"type": "subscribe", "stream": "public:fs-big", "since": 0})
        events = [await client.recv_until(lambda f: f["type"] == "event") for _ in range(60)]
        assert [e["data"]["n"] for e in events] == list(range(60))
        assert max(len(json.dumps(batch)) for batch in client.batches) > LIMIT
        await assert_alive(client)
    assert "PayloadExceededError" not in server.log()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def raw_websocket(server: Server) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    """A WebSocket on a bare TCP connection, after its ``welcome``: to send what no client
    library sends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {WS} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 "), head
            opcode, welcome = await read_frame(reader)
        assert (opcode, json.loads(welcome)["type"]) == (1, "welcome")
        yield reader, writer
    finally:
        writer.close()


async def close_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next frame, which must be a close frame: (code, reason). Then, as the client does
    not answer it, the server gives up the closing handshake and aborts the connection."""
    async with asyncio.timeout(5):
        opcode, payload = await read_frame(reader)
    assert opcode == 0x8, (opcode, payload)
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(5):
            await reader.read(65536)
    return struct.unpack("!H", payload[:2])[0], payload[2:]


async def test_an_oversized_frame_is_refused_at_its_header(realtime_serve: Serve) -> None:
    """The close comes before any of the payload is sent: nothing of it is buffered."""
    server = realtime_serve()
    async with raw_websocket(server) as (reader, writer):
        # A masked text frame announcing 1 GiB, and not one byte of it.
        writer.write(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 2**30) + os.urandom(4))
        code, reason = await close_frame(reader)
    assert code == CLOSE_MESSAGE_TOO_BIG
    assert f"size {2**30} exceeds payload limit of {LIMIT}".encode() in reason
    assert server.running, server.log()


async def test_a_protocol_error_gets_close_1002(realtime_serve: Serve) -> None:
    server = realtime_serve()
    async with raw_websocket(server) as (reader, writer):
        writer.write(bytes([0x81, 2]) + b"{}")  # not masked, as client frames must be
        code, reason = await close_frame(reader)
    assert (code, reason) == (1002, b"unmasked client-to-server frame")
    assert server.running, server.log()


async def test_the_limit_follows_max_frame_size(realtime_serve: Serve) -> None:
    server = realtime_serve(env=settings_env({"MAX_FRAME_SIZE": 1000}))
    async with await connect(server) as client:
        await client.send_raw(ping(1000))
        assert await client.recv_json() == {"type": "pong", "id": "big"}
        assert await refused_with(client, ping(1001), server) == CLOSE_MESSAGE_TOO_BIG


async def test_invalid_utf8_gets_close_1007(realtime_serve: Serve) -> None:
    """Autobahn's other failures come with a close frame too, rather than a drop."""
    server = realtime_serve()
    async with await connect(server) as client:
        with contextlib.suppress(ConnectionClosed):
            await client.connection.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
        await client.wait_closed()
        assert client.connection.protocol.close_rcvd is not None
        assert client.close_code == 1007


async def test_a_larger_server_limit_leaves_frame_too_large_in_between(
    realtime_serve: Serve,
) -> None:
    """Given ``--websocket-max-message-size`` above MAX_FRAME_SIZE, frames in between are read,
    then refused by the app with ``frame_too_large`` on an open connection (and the server
    says so when it starts); over that limit, 1009 still."""
    server = realtime_serve("--websocket-max-message-size", str(4 * LIMIT))
    victim, before = await watched(server)
    async with victim, await connect(server) as client:
        await client.send_raw(ping(LIMIT + 1))
        error = await client.recv_json()
        assert (error["type"], error["code"], error["id"]) == ("error", FRAME_TOO_LARGE, None)
        await assert_alive(client)
        await client.send_raw(ping(4 * LIMIT))
        assert (await client.recv_json())["code"] == FRAME_TOO_LARGE
        assert await refused_with(client, ping(4 * LIMIT + 1), server) == CLOSE_MESSAGE_TOO_BIG
        await assert_unharmed(server, victim, before)
    assert "are read into memory before the app refuses" in server.log()


async def test_an_invalid_max_frame_size_stops_the_server(realtime_serve: Serve) -> None:
    """0 would tell autobahn "no limit"; the server refuses to start instead."""
    with pytest.raises(ServerError, match=r"MAX_FRAME_SIZE'\] must be a positive whole number"):
        realtime_serve(env=settings_env({"MAX_FRAME_SIZE": 0}))


def test_an_old_daphne_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve, "daphne_version", lambda: (4, 1, 2))
    with pytest.raises(SystemExit, match=r"needs daphne >= 4\.2\.2"):
        serve.main(["project.asgi:application"])


def test_make_run_and_the_deployment_docs_use_realtime_serve() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    serving = recipe.strip().splitlines()[-1].strip()
    assert serving == "$(PY) -m realtime.serve -b $(HOST) -p $(PORT) project.asgi:application"
    docs = (ROOT / "docs" / "deployment.md").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", docs, re.MULTILINE)
    assert exec_start is not None
    assert " -m realtime.serve " in exec_start.group(1)
    assert "--websocket-max-message-size" not in exec_start.group(1)  # follows MAX_FRAME_SIZE


# --- system checks ----------------------------------------------------------------------


def realtime_checks(*, deploy: bool = False) -> list[Any]:
    return [
        m
        for m in run_checks(include_deployment_checks=deploy)
        if m.id in {"realtime.E001", "realtime.W008", "realtime.W009"}
    ]


def test_the_default_limits_pass_the_checks() -> None:
    assert realtime_checks(deploy=True) == []


@pytest.mark.parametrize(
    ("settings", "found"),
    [
        ({"DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE": 1000}, "MAX_MESSAGE_SIZE = 1000 is below it"),
        ({"DAPHNE_WEBSOCKET_MAX_FRAME_SIZE": 10 * LIMIT}, f"= {10 * LIMIT} is above it"),
        ({"DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE": 0}, "MAX_MESSAGE_SIZE = 0 sets no limit"),
        (
            {"REALTIME": {"MAX_FRAME_SIZE": 2 * 1024 * 1024}},
            "MAX_FRAME_SIZE (unset: 1048576) is below it",
        ),
    ],
)
def test_runserver_limits_unlike_max_frame_size_warn(settings: dict[str, Any], found: str) -> None:
    with override_settings(**settings):
        messages = realtime_checks()
    assert [m.id for m in messages] == ["realtime.W008"]
    assert isinstance(messages[0], Warning)
    assert found in messages[0].msg
    assert "realtime.serve" in messages[0].hint


def test_runserver_limits_equal_to_max_frame_size_pass() -> None:
    limits = {"DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE": 1000, "DAPHNE_WEBSOCKET_MAX_FRAME_SIZE": 1000}
    with override_settings(REALTIME={"MAX_FRAME_SIZE": 1000}, **limits):
        assert realtime_checks(deploy=True) == []


@pytest.mark.parametrize("value", [0, -1, "64k", True, None])
def test_a_max_frame_size_that_is_no_positive_int_is_an_error(value: object) -> None:
    with override_settings(REALTIME={"MAX_FRAME_SIZE": value}):
        messages = realtime_checks()
    assert [m.id for m in messages] == ["realtime.E001"]
    assert isinstance(messages[0], Error)
    assert "MAX_FRAME_SIZE" in messages[0].msg


def test_daphne_without_size_limits_warns_on_deploy(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve.daphne_version() >= serve.DAPHNE_WITH_LIMITS  # the installed one
    assert realtime_checks(deploy=True) == []
    monkeypatch.setattr(serve, "daphne_version", lambda: (4, 1, 2))
    assert realtime_checks() == []  # a deployment check only
    messages = realtime_checks(deploy=True)
    assert [m.id for m in messages] == ["realtime.W009"]
    assert "daphne 4.1.2 sets no WebSocket message size limit" in messages[0].msg
