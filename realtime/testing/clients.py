"""In-process clients of the WebSocket and SSE endpoints: no server, the real hub.

Built on ``channels.testing``: the project's ASGI application (``ASGI_APPLICATION``, else
the app's own routes) runs on the test's event loop, with its auth middleware, the real hub
and the real channel layer and database. Frames are decoded and checked with
``realtime.protocol``. The hub of the loop is closed when its last client closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.conf import settings

from realtime.core.hub import close_hub
from realtime.protocol import (
    SSE_SUBSCRIBED,
    SSE_WELCOME,
    SSEMessage,
    SSEParser,
    dumps,
    loads,
    parse_client_frame,
)

Frame = dict[str, Any]
Headers = Iterable[tuple[bytes, bytes]]

# Clients open on each event loop: the last to close closes the loop's hub.
_open: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def application() -> Any:
    """The project's ASGI application, or the app's routes alone when it names none."""
    if getattr(settings, "ASGI_APPLICATION", None):
        from channels.routing import get_default_application

        return get_default_application()
    from channels.routing import ProtocolTypeRouter, URLRouter

    from realtime.routing import http_urlpatterns, websocket_urlpatterns

    return ProtocolTypeRouter(
        {"http": URLRouter(http_urlpatterns), "websocket": URLRouter(websocket_urlpatterns)}
    )


async def session_cookie(user: Any) -> tuple[bytes, bytes]:
    """A ``Cookie`` header signing ``user`` in, as Django's test client's ``force_login``."""

    def login() -> str:
        from django.test import Client

        client = Client()
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        return f"{name}={client.cookies[name].value}"

    return b"cookie", (await sync_to_async(login)()).encode()


async def next_output(communicator: ApplicationCommunicator, timeout: float) -> dict[str, Any]:
    """The application's next message. ``TimeoutError`` leaves the application running
    (``receive_output`` would cancel it); an application that failed raises its error."""
    get = asyncio.ensure_future(communicator.output_queue.get())
    ended = asyncio.shield(communicator.future)
    done, _ = await asyncio.wait({get, ended}, timeout=timeout, return_when="FIRST_COMPLETED")
    if get in done:
        return dict(get.result())
    get.cancel()
    if ended in done:
        ended.result()
        raise AssertionError("the application ended without sending what was awaited")
    raise TimeoutError


class _Client:
    def __init__(self, user: Any, headers: Headers | None, app: Any) -> None:
        self.user = user
        self.headers = list(headers or [])
        self.app = app if app is not None else application()
        self._counted: asyncio.AbstractEventLoop | None = None

    async def _headers(self) -> list[tuple[bytes, bytes]]:
        if self.user is None:
            return self.headers
        return [*self.headers, await session_cookie(self.user)]

    def _opened(self) -> None:
        loop = asyncio.get_running_loop()
        _open[loop] = _open.get(loop, 0) + 1
        self._counted = loop

    async def _closed(self) -> None:
        loop, self._counted = self._counted, None
        if loop is None:
            return
        _open[loop] -= 1
        if not _open[loop]:
            del _open[loop]
            await close_hub()


class WebSocketClient(_Client):
    """One WebSocket connection to ``/realtime/ws/``, in this process.

    ::

        async with WebSocketClient(user=alice) as ws:   # reads the ``welcome`` frame
            await ws.subscribe("chat:1")                # returns the ``subscribed`` frame
            await realtime.apublish("chat:1", "message", {"text": "hi"})
            frame = await ws.next_event()
            assert frame["data"] == {"text": "hi"}

    ``user`` signs in with a session cookie; ``headers`` and ``query`` (e.g. a token, an
    ``Origin``, ``{"batch": "1"}``) go on the handshake. Every wait takes ``timeout`` seconds
    and raises ``AssertionError`` saying what it waited for. ``batch`` frames are opened:
    their frames come out one by one. Frames passed over by ``next_event`` and
    ``receive_until`` are kept in ``skipped``.
    """

    def __init__(
        self,
        path: str = "/realtime/ws/",
        *,
        user: Any = None,
        headers: Headers | None = None,
        query: Mapping[str, str] | None = None,
        application: Any = None,
        timeout: float = 5,
    ) -> None:
        super().__init__(user, headers, application)
        self.path = f"{path}?{urlencode(query)}" if query else path
        self.timeout = timeout
        self.communicator: WebsocketCommunicator | None = None
        self.welcome: Frame | None = None
        self.close_code: int | None = None
        self.received: list[Frame] = []
        self.skipped: list[Frame] = []
        self._unread: list[Frame] = []
        self._ids = 0
        # stream -> [epoch, last seq received]: where ``resume`` picks up.
        self.positions: dict[str, list[Any]] = {}

    async def connect(self) -> Frame:
        """Open the connection; the ``welcome`` frame. AssertionError if it is refused."""
        headers = await self._headers()
        self.communicator = WebsocketCommunicator(self.app, self.path, headers=headers)
        self._opened()
        connected, code = await self.communicator.connect(self.timeout)
        if not connected:
            self.close_code = code if isinstance(code, int) else None
            await self.close()
            raise AssertionError(f"the WebSocket handshake was refused (close code {code})")
        self.welcome = await self.receive_until("welcome")
        return self.welcome

    async def send(self, frame: Frame) -> None:
        """Send a client frame, checked first as the server will (``parse_client_frame``)."""
        text = dumps(frame)
        parse_client_frame(text)
        await self.send_raw(text)

    async def send_raw(self, text: str) -> None:
        """Send ``text`` as is (a malformed frame, to test the error)."""
        await self._communicator().send_to(text_data=text)

    async def receive(self, timeout: float | None = None) -> Frame:
        """The next frame."""
        while not self._unread:
            frame = await self._receive_message(self.timeout if timeout is None else timeout)
            if frame.get("type") == "batch":
                self._unread += [
                    loads(inner) if isinstance(inner, str) else inner for inner in frame["frames"]
                ]
            else:
                self._unread.append(frame)
        frame = self._unread.pop(0)
        self.received.append(frame)
        position = self.positions.get(frame.get("stream", ""))
        if position is not None and frame.get("type") == "event" and frame.get("seq") is not None:
            position[1] = frame["seq"]
        return frame

    async def _receive_message(self, timeout: float) -> Frame:
        communicator = self._communicator()
        try:
            message = await next_output(communicator, timeout)
        except TimeoutError:
            raise AssertionError(
                f"no WebSocket frame within {timeout:g} s (last frames: {self.received[-5:]!r})"
            ) from None
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            raise AssertionError(
                f"the server closed the WebSocket (code {self.close_code}) while a frame was "
                f"awaited (last frames: {self.received[-5:]!r})"
            )
        frame = loads(message.get("text") or message.get("bytes") or b"")
        if not isinstance(frame, dict):
            raise AssertionError(f"the server sent a frame that is not an object: {frame!r}")
        return frame

    async def receive_until(
        self, match: str | Callable[[Frame], bool], timeout: float | None = None
    ) -> Frame:
        """The first frame of type ``match`` (or for which it is true); the others are
        kept in ``skipped``."""
        test = match if callable(match) else (lambda frame: frame.get("type") == match)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        passed: list[Frame] = []
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no frame matching {match!r}; passed over: {passed!r}")
            try:
                frame = await self.receive(left)
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}; waiting for {match!r}, passed over {passed!r}"
                ) from None
            if test(frame):
                return frame
            passed.append(frame)
            self.skipped.append(frame)

    def _next_id(self) -> str:
        self._ids += 1
        return f"t{self._ids}"

    async def subscribe(self, stream: str, **fields: Any) -> Frame:
        """Subscribe to ``stream`` (``since=0`` for history, ``presence={...}``...); the
        ``subscribed`` frame. AssertionError with the server's ``error`` frame if refused."""
        frame_id = self._next_id()
        await self.send({"type": "subscribe", "id": frame_id, "stream": stream, **fields})
        subscribed = await self._reply(frame_id, "subscribed")
        since = fields.get("since")
        self.positions[stream] = [
            subscribed["epoch"],
            subscribed["seq"] if since is None else since,
        ]
        return subscribed

    async def unsubscribe(self, stream: str) -> Frame:
        frame_id = self._next_id()
        await self.send({"type": "unsubscribe", "id": frame_id, "stream": stream})
        return await self._reply(frame_id, "unsubscribed")

    async def publish(self, stream: str, event: str, data: Any = None, **fields: Any) -> Frame:
        """Publish as a client may (``publish`` permission); the server's acknowledgement."""
        frame_id = self._next_id()
        await self.send(
            {
                "type": "publish",
                "id": frame_id,
                "stream": stream,
                "event": event,
                "data": data,
                **fields,
            }
        )
        return await self._reply(frame_id, "ack")

    async def _reply(self, frame_id: str, kind: str) -> Frame:
        """The reply to frame ``frame_id``; frames that came before it stay unread, so
        ``next_event`` still finds an event that overtook its publish's ``ack``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        others: list[Frame] = []
        try:
            while True:
                frame = await self.receive(max(deadline - loop.time(), 0.001))
                if frame.get("id") == frame_id and frame.get("type") in (kind, "error"):
                    break
                others.append(frame)
        finally:
            self.received = [f for f in self.received if not any(f is o for o in others)]
            self._unread[:0] = others
        if frame["type"] == "error":
            raise AssertionError(f"the server refused it: {frame!r}")
        return frame

    async def next_event(self, stream: str | None = None, timeout: float | None = None) -> Frame:
        """The next ``event`` frame (of ``stream``, if given)."""
        return await self.receive_until(
            lambda f: f.get("type") == "event" and stream in (None, f.get("stream")), timeout
        )

    async def assert_no_frame(self, timeout: float = 0.2) -> None:
        """Fail if a frame arrives within ``timeout`` seconds."""
        if self._unread or not await self._communicator().receive_nothing(timeout):
            frame = await self.receive(timeout)
            raise AssertionError(f"expected no frame, got {frame!r}")

    def _communicator(self) -> WebsocketCommunicator:
        if self.communicator is None:
            raise AssertionError("the client is not connected: `await client.connect()` first")
        return self.communicator

    async def drop(self) -> None:
        """Lose the connection (close code 1006, as a network failure), keeping
        ``positions`` for ``resume``; frames not read yet are lost with it."""
        self._unread.clear()
        await self.close(1006)

    async def resume(self) -> list[Frame]:
        """Connect again and re-subscribe every stream after the last event received,
        as the browser client does: what was published meanwhile comes next. Returns the
        ``subscribed`` frames (``recovered`` says whether the history was all there)."""
        positions, self.positions = self.positions, {}
        await self.connect()
        return [
            await self.subscribe(stream, since=seq, epoch=epoch)
            for stream, (epoch, seq) in positions.items()
        ]

    async def close(self, code: int = 1000) -> None:
        """Close from the client side and wait for the endpoint to finish."""
        if self.communicator is not None:
            communicator, self.communicator = self.communicator, None
            await communicator.disconnect(code, self.timeout)
        await self._closed()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class SSEClient(_Client):
    """One EventSource request to ``/realtime/sse/``, in this process.

    ::

        async with SSEClient(["chat:1"], user=alice) as sse:   # reads welcome, subscribed
            await realtime.apublish("chat:1", "message", {"text": "hi"})
            message = await sse.next_event()
            assert message.event == "message" and sse.frame(message)["data"] == {"text": "hi"}

    Messages are ``realtime.protocol.SSEMessage`` (``event``, ``data`` as text, ``id``);
    ``frame(message)`` decodes the JSON frame a message carries. ``status`` and
    ``headers`` hold the response's; a refused request raises ``AssertionError`` with its
    body unless ``expect_status`` names the status.
    """

    def __init__(
        self,
        streams: Iterable[str] = (),
        *,
        path: str = "/realtime/sse/",
        user: Any = None,
        headers: Headers | None = None,
        query: Mapping[str, str] | None = None,
        application: Any = None,
        timeout: float = 5,
    ) -> None:
        super().__init__(user, headers, application)
        self.streams = list(streams)
        self.query = [("stream", stream) for stream in self.streams] + list((query or {}).items())
        self.path = path
        self.timeout = timeout
        self.communicator: ApplicationCommunicator | None = None
        self.status: int | None = None
        self.response_headers: dict[bytes, bytes] = {}
        self.body = b""
        self.received: list[SSEMessage] = []
        self.ended = False
        self._parser = SSEParser()
        self._unread: list[SSEMessage] = []

    async def connect(self, expect_status: int = 200) -> list[SSEMessage]:
        """Send the request; the ``welcome`` and ``subscribed`` messages (for status 200)."""
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": urlencode(self.query).encode(),
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"accept", b"text/event-stream"),
                *await self._headers(),
            ],
            "client": ("127.0.0.1", 0),
            "server": ("testserver", 80),
        }
        self.communicator = ApplicationCommunicator(self.app, scope)  # type: ignore[no-untyped-call]
        self._opened()
        await self.communicator.send_input(
            {"type": "http.request", "body": b"", "more_body": False}
        )
        start = await self._output(self.timeout, "the response headers")
        self.status = start["status"]
        self.response_headers = dict(start.get("headers", []))
        if self.status != expect_status:
            while not self.ended:
                await self._read_body(self.timeout)
            raise AssertionError(f"SSE response {self.status}, not {expect_status}: {self.body!r}")
        if self.status != 200:
            return []
        opened = [await self.receive_until(SSE_WELCOME)]
        for _ in self.streams:
            opened.append(await self.receive_until(SSE_SUBSCRIBED))
        return opened

    async def _output(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            return await next_output(self._communicator(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {what} within {timeout:g} s (last: {self.received[-5:]!r})"
            ) from None

    async def _read_body(self, timeout: float) -> None:
        message = await self._output(timeout, "SSE message")
        body = message.get("body", b"")
        self.body += body
        self._unread += self._parser.feed(body.decode())
        if not message.get("more_body", False):
            self.ended = True

    async def receive(self, timeout: float | None = None) -> SSEMessage:
        """The next message (comments such as keep-alives are skipped)."""
        while not self._unread:
            if self.ended:
                raise AssertionError(f"the SSE response ended (last: {self.received[-5:]!r})")
            await self._read_body(self.timeout if timeout is None else timeout)
        message = self._unread.pop(0)
        self.received.append(message)
        return message

    async def receive_until(self, event: str, timeout: float | None = None) -> SSEMessage:
        """The first message whose ``event`` is ``event`` (``realtime.protocol.SSE_GAP``...)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no SSE {event!r} message (last: {self.received[-5:]!r})")
            message = await self.receive(left)
            if message.event == event:
                return message

    async def next_event(self, timeout: float | None = None) -> SSEMessage:
        """The next message carrying an event frame (its ``event`` is the event type)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no SSE event (last: {self.received[-5:]!r})")
            message = await self.receive(left)
            if self.frame(message).get("type") == "event":
                return message

    @staticmethod
    def frame(message: SSEMessage) -> Frame:
        """The protocol frame a message carries, decoded."""
        frame = loads(message.data)
        if not isinstance(frame, dict):
            raise AssertionError(f"an SSE message whose data is not a frame: {message!r}")
        return frame

    def _communicator(self) -> ApplicationCommunicator:
        if self.communicator is None:
            raise AssertionError("the client is not connected: `await client.connect()` first")
        return self.communicator

    async def close(self) -> None:
        """Go away (``http.disconnect``) and wait for the endpoint to finish."""
        if self.communicator is not None:
            communicator, self.communicator = self.communicator, None
            await communicator.send_input({"type": "http.disconnect"})
            with contextlib.suppress(TimeoutError):
                await communicator.wait(self.timeout)
        await self._closed()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
