"""The test infrastructure itself: services, daphne processes, subprocess env and clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection
from websockets.asyncio.server import ServerConnection, serve

from tests.servers import Server, WSClient, database_url, open_sse, port_open, run_manage

# --- services ---------------------------------------------------------------------------


def test_redis_answers_ping(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        assert client.ping() is True


def test_in_process_channel_layer_uses_session_redis_and_prefix(
    redis_url: str, redis_prefix: str
) -> None:
    from channels.layers import get_channel_layer

    assert redis_prefix == f"rt-test-{settings.TEST_SESSION}"  # tests/settings.py
    assert settings.TEST_SESSION.startswith(os.environ["REALTIME_TEST_SESSION"])
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] == redis_prefix
    layer = get_channel_layer()
    assert [host.get("address") for host in layer.hosts] == [redis_url]
    assert layer.prefix == redis_prefix


@pytest.mark.django_db(transaction=True)
def test_manage_subprocess_sees_test_database_and_redis(redis_prefix: str) -> None:
    code = (
        "import json; from django.conf import settings; from django.db import connection; "
        "print(json.dumps([connection.settings_dict['NAME'], "
        "settings.CHANNEL_LAYERS['default']['CONFIG']['prefix'], settings.SETTINGS_MODULE]))"
    )
    result = run_manage("shell", "-c", code)
    name, prefix, module = json.loads(result.stdout.strip().splitlines()[-1])
    assert name == str(connection.settings_dict["NAME"])
    assert prefix == redis_prefix
    assert module == "tests.settings"


@pytest.mark.django_db
def test_test_database_is_this_sessions_own() -> None:
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite" and os.environ.get("SQLITE_TEST_PATH"):
        assert name == os.environ["SQLITE_TEST_PATH"]
    else:
        assert settings.TEST_SESSION in name  # tests/settings.py: one per session (and worker)


def test_database_url_forms() -> None:
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x/test.sqlite3"}
    assert database_url(sqlite) == "sqlite:////tmp/x/test.sqlite3"
    tcp = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test_realtime",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": "127.0.0.1",
        "PORT": 5432,
    }
    assert database_url(tcp) == "postgres://postgres@127.0.0.1:5432/test_realtime"
    unix = {**tcp, "USER": "root", "PASSWORD": "p@ss", "HOST": "/var/run/postgresql"}
    assert database_url(unix) == (
        "postgres://root:p%40ss@%2Fvar%2Frun%2Fpostgresql:5432/test_realtime"
    )
    with pytest.raises(RuntimeError, match="in-memory"):
        database_url({**sqlite, "NAME": ":memory:"})


# --- daphne processes -------------------------------------------------------------------


def test_daphne_server_starts_and_answers_http(daphne_server: Callable[..., Server]) -> None:
    server = daphne_server({"REALTIME_HEARTBEAT_TIMEOUT": "7"})
    assert server.http_url == f"http://127.0.0.1:{server.port}"
    assert server.ws_url == f"ws://127.0.0.1:{server.port}"
    assert server.env["REALTIME_HEARTBEAT_TIMEOUT"] == "7"
    assert server.env["DATABASE_URL"] == database_url(connection.settings_dict)
    response = httpx.get(server.http_url + "/", timeout=10)
    # Any status will do: only that daphne serves the project's ASGI application.
    assert 100 <= response.status_code < 600, server.log()


def test_daphne_server_kill_and_stop(daphne_server: Callable[..., Server]) -> None:
    first, second = daphne_server(), daphne_server()
    assert first.port != second.port

    first.kill()
    assert first.process.returncode == -9
    with pytest.raises(ProcessLookupError):
        os.kill(first.pid, 0)
    assert not port_open(first.port)
    assert port_open(second.port)

    second.stop()
    assert not second.running
    assert not port_open(second.port)
    second.stop()  # idempotent


# --- clients, against tiny in-process servers ------------------------------------------


async def test_ws_client() -> None:
    origins: list[str | None] = []

    async def echo(ws: ServerConnection) -> None:
        origins.append(ws.request.headers.get("Origin") if ws.request else None)
        async for message in ws:
            frame = json.loads(message)
            if frame.get("close"):
                await ws.close(4408, "bye")
                return
            for n in range(frame.get("repeat", 1)):
                await ws.send(json.dumps({"n": n, "echo": frame}))

    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with WSClient(f"ws://127.0.0.1:{port}/ws/") as ws:
            await ws.send_json({"hello": 1})
            assert await ws.recv_json() == {"n": 0, "echo": {"hello": 1}}
            await ws.send_json({"repeat": 3})
            assert (await ws.recv_until(lambda f: f["n"] == 2))["n"] == 2
            assert [f["n"] for f in ws.skipped] == [0, 1]
            with pytest.raises(AssertionError, match=r"no WebSocket frame within 0\.2 s"):
                await ws.recv_json(timeout=0.2)
            await ws.send_json({"close": True})
            assert await ws.wait_closed() == 4408
            with pytest.raises(AssertionError, match="closed"):
                await ws.recv_json()
        assert origins == [f"http://127.0.0.1:{port}"]


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Test: yes\r\n\r\n"
SSE_BODY = (
    b": welcome comment\n"
    b"retry: 1500\n"
    b"id: 1\n"
    b"event: welcome\n"
    b'data: {"a": 1}\n'
    b"\n"
    b"id: 2\r\n"
    b"data: line one\r\n"
    b"data:line two\r\n"
    b"\r\n"
    b"data: cr endings\r\r"  # bare CRs end lines too
    b"id: 3\n"
    b"\n"  # no data: dispatches nothing
)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    """Serve ``handler`` on a free port; on exit, wait for its connections to finish.

    Waiting (rather than leaving handlers pending) keeps their sockets from being collected
    after the loop closed, which the next test would see as a ResourceWarning.
    """
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await server.wait_closed()


def sse_server(script: Handler) -> contextlib.AbstractAsyncContextManager[int]:
    """A one-response HTTP server: headers, SSE_BODY, then whatever ``script`` does."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SSE_HEAD + SSE_BODY)
        await writer.drain()
        await script(reader, writer)

    return tcp_server(handler)


async def test_sse_reader_parses_and_closes_mid_stream() -> None:
    more = asyncio.Event()
    client_left = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await more.wait()
        writer.write(b"event: late\ndata: 42\n\n")
        await writer.drain()
        assert await reader.read() == b""  # EOF: the client dropped the connection
        client_left.set()

    async with sse_server(script) as port, open_sse(f"http://127.0.0.1:{port}/sse/") as sse:
        assert sse.status_code == 200
        assert sse.headers["x-test"] == "yes"
        assert await sse.next_event() == {
            "id": "1",
            "event": "welcome",
            "data": {"a": 1},
            "retry": 1500,
        }
        assert await sse.next_event() == {
            "id": "2",
            "event": "message",
            "data": "line one\nline two",
        }
        assert await sse.next_event() == {"id": None, "event": "message", "data": "cr endings"}
        assert sse.last_event_id == "3"
        assert sse.comments == ["welcome comment"]
        # A wait that times out loses nothing: the stream stays usable.
        with pytest.raises(AssertionError, match=r"no SSE event within 0\.2 s"):
            await sse.next_event(timeout=0.2)
        more.set()
        assert await sse.next_event() == {"id": None, "event": "late", "data": 42}
        await sse.aclose()
        await asyncio.wait_for(client_left.wait(), timeout=5)


async def test_sse_reader_sees_end_of_stream() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"data: last\n\n")

    async with (
        sse_server(script) as port,
        open_sse(f"http://127.0.0.1:{port}/", include_comments=True) as sse,
    ):
        items = [item async for item in sse.events(timeout=5)]
        assert items[0] == {"comment": "welcome comment"}
        data = [item["data"] for item in items[1:]]
        assert data == [{"a": 1}, "line one\nline two", "cr endings", "last"]
        assert sse.ended
        with pytest.raises(AssertionError, match="ended"):
            await sse.next_event()


async def test_sse_reader_bounds_the_wait_for_headers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns once the client gives up

    async with tcp_server(silent) as port:
        with pytest.raises(AssertionError, match="no response headers"):
            async with open_sse(f"http://127.0.0.1:{port}/", open_timeout=0.3):
                pass
