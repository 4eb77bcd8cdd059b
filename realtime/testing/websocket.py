"""``WebSocketClient``: the WebSocket endpoint in process, on ``channels.testing``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from channels.testing import WebsocketCommunicator

from realtime.protocol import dumps, loads, parse_client_frame
from realtime.testing.clients import BaseClient, Frame, Headers, next_output


class WebSocketClient(BaseClient):
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
