"""``SSEClient``: the SSE endpoint in process, on ``channels.testing``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from channels.testing import ApplicationCommunicator

from realtime.protocol import SSE_SUBSCRIBED, SSE_WELCOME, SSEMessage, SSEParser, loads
from realtime.testing.clients import BaseClient, Frame, Headers, next_output


class SSEClient(BaseClient):
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
