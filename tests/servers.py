"""Real processes and real clients for end-to-end tests.

* :class:`Server` -- a daphne process serving ``project.asgi:application`` on a free port,
  against the same test database, Redis server and Redis prefix as the pytest process.
  Tests get servers from the ``daphne_server`` fixture (``conftest.py``), which stops them.
* :func:`run_manage` / :func:`arun_manage` -- ``manage.py <command>`` in a subprocess with the
  same environment, e.g. to publish from a third process.
* :class:`WSClient` -- an asyncio WebSocket client speaking JSON frames.
* :func:`open_sse` -- an SSE reader on httpx that parses the stream into event dicts.
* :class:`TCPProxy` -- a loopback TCP proxy: a load balancer over servers, or a network that
  loses replies and connections on demand.

Everything that waits takes a timeout and fails with a message saying what it waited for.
Processes need the test database to exist: use them from tests that have the
``transactional_db`` fixture (``daphne_server`` requests it for you).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

# The generic part lives in the package, for projects' tests; re-exported for ours.
from realtime.testing.servers import Server as BaseServer
from realtime.testing.servers import ServerError as ServerError
from realtime.testing.servers import free_port as free_port
from realtime.testing.servers import port_open as port_open

ROOT = Path(__file__).resolve().parent.parent
ASGI_APP = "project.asgi:application"

# --------------------------------------------------------------------------------------
# Environment shared by the subprocesses
# --------------------------------------------------------------------------------------


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """A ``DATABASE_URL`` (as the demo's settings parse it) naming ``settings_dict``'s database.

    Called after pytest-django set up the test database, ``NAME`` is the test database's.
    """
    engine = settings_dict["ENGINE"]
    name = str(settings_dict["NAME"])
    if engine == "django.db.backends.sqlite3":
        if name == ":memory:" or "mode=memory" in name:
            raise RuntimeError(
                "Subprocesses cannot share an in-memory SQLite database; the test settings "
                "must name a file (DATABASES['default']['TEST']['NAME'])."
            )
        return f"sqlite:///{Path(name).resolve()}"
    if engine == "django.db.backends.postgresql":
        user = quote(settings_dict.get("USER") or "", safe="")
        password = settings_dict.get("PASSWORD") or ""
        auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
        # A socket directory goes in the host part, percent-encoded.
        host = quote(str(settings_dict.get("HOST") or ""), safe="")
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        return f"postgres://{auth}{host}{port}/{quote(name, safe='')}"
    raise RuntimeError(f"No DATABASE_URL form for database engine {engine!r}.")


def settings_env(overrides: Mapping[str, Any] | None = None, **env: str) -> dict[str, str]:
    """Environment for a daphne on ``tests.settings`` with these ``REALTIME`` ``overrides``."""
    return {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "REALTIME_TEST_OVERRIDES": json.dumps(dict(overrides or {})),
        **env,
    }


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a subprocess that must see what this pytest process sees.

    The test settings, the same test database, ``REDIS_URL`` and Redis prefix (the session's,
    from ``REALTIME_TEST_SESSION``; ``REDIS_PREFIX`` too, for a process on the demo's
    settings); ``extra`` is merged last (e.g. ``{"REALTIME_HEARTBEAT_TIMEOUT": "1"}``).
    """
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url(connection.settings_dict),
        REDIS_URL=os.environ["REDIS_URL"],
        REALTIME_TEST_SESSION=settings.TEST_SESSION,
        REDIS_PREFIX=settings.REDIS_PREFIX,
        PYTHONUNBUFFERED="1",
    )
    # Settings of the pytest process only; a subprocess must not pick them up.
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("PYTEST_XDIST_WORKER", None)  # the session above already names the worker
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------------------
# daphne processes
# --------------------------------------------------------------------------------------


# The ASGI servers the app supports (docs/deployment.md), as each is started here: one
# process on 127.0.0.1, client messages limited to MAX_FRAME_SIZE (64 KiB) where the server
# has the option, and a bounded graceful shutdown.
SERVER_COMMANDS: dict[str, list[str]] = {
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "{app}"],
    # The documented command: daphne with the app's limits, draining on SIGTERM.
    "realtime": ["-m", "realtime.serve", "-b", "127.0.0.1", "-p", "{port}", "{app}"],
    "uvicorn": [
        "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}",
        "--ws", "websockets-sansio", "--ws-max-size", "65536",
        "--timeout-graceful-shutdown", "2", "--no-access-log", "--lifespan", "off", "{app}",
    ],
    # uvicorn with the app's lifespan handler: its shutdown drains the hub.
    "uvicorn-lifespan": [
        "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}",
        "--ws", "websockets-sansio", "--ws-max-size", "65536",
        "--timeout-graceful-shutdown", "2", "--no-access-log", "--lifespan", "on", "{app}",
    ],
    "hypercorn": [
        "-m", "hypercorn", "--bind", "127.0.0.1:{port}", "--graceful-timeout", "2", "{app}",
    ],
}  # fmt: skip


@dataclass
class Server(BaseServer):
    """One daphne process in its own process group; made by the ``daphne_server`` fixture."""

    @classmethod
    def start(
        cls,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        app: str = ASGI_APP,
        ready_timeout: float = 20,
        port: int | None = None,
        server: str = "daphne",
    ) -> Server:
        """Start daphne (or another of ``SERVER_COMMANDS``) on a free port (or on ``port``,
        e.g. to restart a killed server on its old address) and return once the port accepts
        connections (``realtime.testing.servers.Server.launch``)."""

        def command(port: int) -> list[str]:
            return [
                sys.executable,
                *(a.format(port=port, app=app) for a in SERVER_COMMANDS[server]),
            ]

        return cls.launch(
            command,
            env=server_env(env),
            log_dir=log_dir,
            name=server,
            port=port,
            ready_timeout=ready_timeout,
            cwd=ROOT,
        )


# --------------------------------------------------------------------------------------
# manage.py in a subprocess
# --------------------------------------------------------------------------------------


def _manage_failed(args: tuple[str, ...], code: int, stdout: str, stderr: str) -> AssertionError:
    return AssertionError(
        f"manage.py {' '.join(args)} exited with {code}\n--- stdout ---\n{stdout}"
        f"\n--- stderr ---\n{stderr}"
    )


def run_manage(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py *args`` in a subprocess seeing the test database and Redis.

    Blocks; from async tests use :func:`arun_manage`. With ``check`` (the default) a non-zero
    exit raises AssertionError showing the output.
    """
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=server_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise _manage_failed(args, result.returncode, result.stdout, result.stderr)
    return result


async def arun_manage(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """:func:`run_manage` without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "manage.py"),
        *args,
        cwd=ROOT,
        env=server_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"manage.py {' '.join(args)} ran longer than {timeout:g} s") from None
    code = proc.returncode if proc.returncode is not None else -1
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if check and code != 0:
        raise _manage_failed(args, code, stdout, stderr)
    return subprocess.CompletedProcess([sys.executable, "manage.py", *args], code, stdout, stderr)


# --------------------------------------------------------------------------------------
# WebSocket client
# --------------------------------------------------------------------------------------

_FROM_URL = "from-url"


class WSClient:
    """A WebSocket client for JSON frames, with bounded waits.

    ::

        async with WSClient(server.ws_url + "/ws/") as ws:
            await ws.send_json({"type": "subscribe", "stream": "chat:1"})
            frame = await ws.recv_until(lambda f: f["type"] == "subscribed")

    ``received`` holds every frame received, ``skipped`` those that ``recv_until`` passed over.
    By default the ``Origin`` header is ``http://<host>:<port>`` of the URL, which daphne's
    origin check accepts for hosts in ALLOWED_HOSTS; pass ``origin=None`` to send none.

    ``unbatch=True`` (for a URL with ``?batch=1``) opens ``batch`` frames: their frames come
    out of ``recv_json`` one at a time and go into ``received`` (so ``len(received)`` is the
    protocol's ``received`` count), and the batch frames themselves are kept in ``batches``.
    Without it a ``batch`` is returned as the one frame it is. ``messages`` counts WebSocket
    messages either way.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        origin: str | None = _FROM_URL,
        headers: Mapping[str, str] | None = None,
        unbatch: bool = False,
    ) -> None:
        self.url = url
        self.origin = origin
        self.headers = dict(headers or {})
        self.unbatch = unbatch
        self.ws: ClientConnection | None = None
        self.received: list[Any] = []
        self.skipped: list[Any] = []
        self.batches: list[dict[str, Any]] = []
        self.messages = 0
        self._unread: deque[Any] = deque()  # frames of a batch not returned yet

    async def connect(
        self,
        url: str | None = None,
        origin: str | None = _FROM_URL,
        *,
        timeout: float = 5,
    ) -> Self:
        url = url or self.url
        if url is None:
            raise TypeError("WSClient.connect() needs a URL")
        if origin == _FROM_URL:
            origin = self.origin
        if origin == _FROM_URL:
            parts = urlsplit(url)
            origin = f"http://{parts.netloc}"
        self.url = url
        self._unread.clear()
        self.ws = await connect(
            url,
            origin=Origin(origin) if origin is not None else None,
            additional_headers=self.headers or None,
            open_timeout=timeout,
            ping_interval=None,  # the protocol's own heartbeats are under test, not these
            compression=None,  # frames on the wire as sent, so size limits are exact
        )
        return self

    @property
    def connection(self) -> ClientConnection:
        if self.ws is None:
            raise AssertionError("WSClient is not connected; call `await client.connect(url)`")
        return self.ws

    async def send_json(self, obj: Any) -> None:
        await self.connection.send(json.dumps(obj))

    async def send_raw(self, data: str | bytes) -> None:
        """Send a frame as is (for malformed-input tests)."""
        await self.connection.send(data)

    async def recv_json(self, timeout: float = 5) -> Any:
        """The next frame, decoded; AssertionError if none arrives within ``timeout`` s."""
        while not self._unread:
            frame = await self._recv_message(timeout)
            if self.unbatch and isinstance(frame, dict) and frame.get("type") == "batch":
                self.batches.append(frame)
                self._unread.extend(frame["frames"])
            else:
                self._unread.append(frame)
        frame = self._unread.popleft()
        self.received.append(frame)
        return frame

    async def _recv_message(self, timeout: float) -> Any:
        try:
            async with asyncio.timeout(timeout):
                raw = await self.connection.recv()
        except TimeoutError:
            raise AssertionError(
                f"no WebSocket frame within {timeout:g} s (last frames: {self.received[-5:]!r})"
            ) from None
        except ConnectionClosed as exc:
            raise AssertionError(
                f"WebSocket closed while waiting for a frame: code {self.close_code} "
                f"reason {self.connection.close_reason!r}"
            ) from exc
        self.messages += 1
        return json.loads(raw)

    @property
    def mid_batch(self) -> bool:
        """Whether frames of the last message, a batch, are still to come out of recv_json."""
        return bool(self._unread)

    async def recv_until(self, predicate: Callable[[Any], bool], timeout: float = 5) -> Any:
        """The first frame for which ``predicate`` is true; earlier ones go to ``skipped``."""
        deadline = asyncio.get_running_loop().time() + timeout
        passed: list[Any] = []
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(
                    f"no matching WebSocket frame within {timeout:g} s; passed over: {passed!r}"
                )
            try:
                frame = await self.recv_json(timeout=left)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; passed over before that: {passed!r}") from None
            if predicate(frame):
                return frame
            passed.append(frame)
            self.skipped.append(frame)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.ws is not None else None

    async def wait_closed(self, timeout: float = 5) -> int | None:
        """Wait for the server to close the connection; return the close code."""
        try:
            async with asyncio.timeout(timeout):
                await self.connection.wait_closed()
        except TimeoutError:
            raise AssertionError(f"WebSocket still open after {timeout:g} s") from None
        return self.close_code

    async def close(self, code: int = 1000) -> None:
        if self.ws is not None:
            await self.ws.close(code)

    async def __aenter__(self) -> Self:
        if self.ws is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# --------------------------------------------------------------------------------------
# Server-Sent Events reader
# --------------------------------------------------------------------------------------


class SSEStream:
    """An open ``text/event-stream`` response, read one event at a time; see :func:`open_sse`.

    Events are dicts ``{"id": ..., "event": ..., "data": ...}``: ``id`` as sent in this event
    (None if it had no ``id:`` line), ``event`` as sent or ``"message"`` (the browser's
    default), ``data`` parsed as JSON when it is JSON, else the raw text; plus ``"retry"``
    (an int) when the event carried one (every ``retry:`` field, even one in a block without
    data, which dispatches no event, is also kept in ``retries``). Comment lines (``: ping``)
    are kept in ``comments``, and also delivered as ``{"comment": text}`` when opened with
    ``include_comments=True``.

    A background task reads the body, so a wait that times out loses nothing and the stream
    stays usable (``pytest.raises(AssertionError)`` around ``next_event(timeout=1)`` checks
    that nothing arrives).
    """

    def __init__(self, response: httpx.Response, include_comments: bool) -> None:
        self.response = response
        self.include_comments = include_comments
        self.comments: list[str] = []
        self.received: list[dict[str, Any]] = []
        self.last_event_id: str | None = None  # as EventSource tracks it across events
        self.retries: list[int] = []  # every ``retry:`` field, in order, with an event or not
        self.ended = False
        self._queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
        self._data: list[str] = []
        self._fields: dict[str, Any] = {}
        self._reader = asyncio.create_task(self._read(), name=f"sse reader {response.url}")

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    async def next_event(self, timeout: float = 5) -> dict[str, Any]:
        """The next event; AssertionError on timeout or if the stream ends first."""
        if self.ended and self._queue.empty():
            raise AssertionError(f"SSE stream already ended (last: {self.received[-5:]!r})")
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            raise AssertionError(
                f"no SSE event within {timeout:g} s (last events: {self.received[-5:]!r})"
            ) from None
        if item is None:
            self.ended = True
            raise AssertionError(
                f"SSE stream ended while waiting for an event (last: {self.received[-5:]!r})"
            )
        if isinstance(item, BaseException):
            self.ended = True
            raise AssertionError(f"reading the SSE stream failed: {item!r}") from item
        if "comment" not in item:
            self.received.append(item)
        return item

    async def events(self, timeout: float = 5) -> AsyncIterator[dict[str, Any]]:
        """Events until the stream ends; each must arrive within ``timeout`` seconds."""
        while True:
            try:
                event = await self.next_event(timeout)
            except AssertionError:
                if self.ended:
                    return
                raise
            yield event

    async def aclose(self) -> None:
        """Drop the connection, mid-stream or not (like a client going away)."""
        self.ended = True
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.response.aclose()

    async def _read(self) -> None:
        try:
            async for line in self.response.aiter_lines():
                item = self._feed(line)
                if item is not None:
                    self._queue.put_nowait(item)
        except httpx.HTTPError as exc:
            self._queue.put_nowait(exc)
        else:
            self._queue.put_nowait(None)

    def _feed(self, line: str) -> dict[str, Any] | None:
        """Parse one line (https://html.spec.whatwg.org/#event-stream-interpretation)."""
        if line == "":
            data, fields = self._data, self._fields
            self._data, self._fields = [], {}
            # A block without data lines dispatches nothing (its id: still counts).
            return self._event(data, fields) if data else None
        if line.startswith(":"):
            text = line[1:].removeprefix(" ")
            self.comments.append(text)
            return {"comment": text} if self.include_comments else None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._fields["event"] = value
        elif name == "id" and "\0" not in value:
            self._fields["id"] = value
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self._fields["retry"] = int(value)
            self.retries.append(int(value))
        return None

    @staticmethod
    def _event(data: list[str], fields: dict[str, Any]) -> dict[str, Any]:
        text = "\n".join(data)
        try:
            payload: Any = json.loads(text)
        except ValueError:
            payload = text
        event = {"id": fields.get("id"), "event": fields.get("event") or "message", "data": payload}
        if "retry" in fields:
            event["retry"] = fields["retry"]
        return event


@contextlib.asynccontextmanager
async def open_sse(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    include_comments: bool = False,
    open_timeout: float = 5,
) -> AsyncIterator[SSEStream]:
    """GET ``url`` as an event stream; the response status and headers are available at once.

    ::

        async with open_sse(server.http_url + "/sse/?stream=chat:1") as sse:
            assert sse.status_code == 200
            event = await sse.next_event()
            await sse.aclose()  # optional: leave mid-stream

    AssertionError if the response headers take longer than ``open_timeout`` seconds.
    """
    # No read timeout on the client: a quiet stream is normal; next_event() bounds each wait.
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(timeout=httpx.Timeout(open_timeout, read=None))
        )
        request_headers = {"Accept": "text/event-stream", **(headers or {})}
        try:
            async with asyncio.timeout(open_timeout):
                response = await stack.enter_async_context(
                    client.stream("GET", url, params=params, headers=request_headers)
                )
        except TimeoutError:
            raise AssertionError(
                f"no response headers from GET {url} within {open_timeout:g} s"
            ) from None
        stream = SSEStream(response, include_comments)
        stack.push_async_callback(stream.aclose)
        yield stream


# --------------------------------------------------------------------------------------
# A TCP proxy
# --------------------------------------------------------------------------------------


class TCPProxy:
    """A loopback TCP proxy in front of servers, for a client given its ``url``.

    Each new connection goes to the next port of ``targets`` (round robin), so it stands
    for a load balancer: change ``targets`` to take a server out of rotation or add one.
    ``hold``: the servers' bytes are dropped on their way to the clients (replies are lost);
    ``cut()`` ends every connection, as a failing network would. ``close()`` stops it.
    """

    def __init__(self, targets: list[int]) -> None:
        self.targets = list(targets)
        self.hold = False
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = self.targets[self.connections % len(self.targets)]
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer, down=False),
            self._pipe(up_reader, writer, down=True),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, down: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if down and self.hold:
                    continue
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
