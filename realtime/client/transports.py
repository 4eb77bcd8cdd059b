"""The transports: one connection attempt each, over WebSocket (``websockets``) or
Server-Sent Events (``httpx``). They read frames (a ``batch`` unpacked into its frames) and
report how the connection ended as a ``CloseInfo``; what to do about it is the client's.

Both libraries are the ``client`` extra (``pip install django-realtime[client]``), imported
when a connection is first made, so ``import realtime.client`` works without them.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realtime.client.errors import ClientError
from realtime.protocol import CLOSE_NORMAL, CLOSE_SERVICE_RESTART, SSE_WELCOME, SSEParser

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import ClientConnection

CLOSE_ABNORMAL = 1006  # what a transport reports when it ends without a close frame
SUBPROTOCOL = "realtime.v1"
TICKET_SUBPROTOCOL_PREFIX = "realtime.ticket."
# Server messages are bounded by the server (a batch stops at about 256 KiB); a snapshot of
# a live model can be larger. Far above both, still a bound.
MAX_MESSAGE = 64 * 2**20

Frame = dict[str, Any]


@dataclass(frozen=True)
class CloseInfo:
    """How a connection (or an attempt) ended."""

    code: int
    reason: str = ""
    opened: bool = False  # whether the transport got as far as reading a frame
    status: int | None = None  # the HTTP status of a refused handshake or event stream
    error: Mapping[str, Any] | None = None  # the protocol's error body of a refusal
    retry_after: float | None = None  # seconds: a draining event stream's ``retry:``


class TransportClosed(Exception):
    def __init__(self, info: CloseInfo) -> None:
        super().__init__(f"connection closed: {info.code} {info.reason}")
        self.info = info


def missing(library: str) -> ClientError:
    return ClientError(
        f"realtime.client needs {library!r} for this transport: "
        "pip install 'django-realtime[client]' (websockets and httpx).",
        code="missing_dependency",
    )


def _frames(text: str | bytes) -> list[Frame]:
    """A server message's frames: a ``batch``'s, in order, or the frame itself. Anything
    that is not a JSON object is skipped (a server never sends it)."""
    try:
        frame = json.loads(text)
    except ValueError:
        return []
    if not isinstance(frame, dict):
        return []
    if frame.get("type") == "batch" and isinstance(frame.get("frames"), list):
        return [f for f in frame["frames"] if isinstance(f, dict)]
    return [frame]


class WebSocketTransport:
    """An open WebSocket; ``recv`` returns the frames of the next message."""

    kind = "websocket"

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.last_heard = time.monotonic()
        self.opened = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        subprotocols: Sequence[str],
        headers: Mapping[str, str],
        origin: str | None,
        open_timeout: float,
    ) -> WebSocketTransport:
        try:
            from websockets.asyncio.client import connect
            from websockets.exceptions import InvalidStatus
            from websockets.typing import Origin, Subprotocol
        except ImportError:  # pragma: no cover - the test environment has it
            raise missing("websockets") from None
        try:
            ws = await connect(
                url,
                subprotocols=[Subprotocol(p) for p in subprotocols],
                additional_headers=dict(headers) or None,
                origin=Origin(origin) if origin else None,
                open_timeout=open_timeout,
                # The protocol's own pings keep the connection alive and tell a dead one
                # (control frames never reach the app: docs/protocol.md).
                ping_interval=None,
                compression=None,  # the server accepts none
                max_size=MAX_MESSAGE,
                proxy=None,
            )
        except InvalidStatus as exc:
            # A refused handshake is a bare HTTP 403: credentials, origin, too many
            # connections, or a draining server; the client cannot tell which.
            status = exc.response.status_code
            raise TransportClosed(
                CloseInfo(CLOSE_ABNORMAL, f"HTTP {status}", status=status)
            ) from exc
        except (OSError, TimeoutError, Exception) as exc:
            raise TransportClosed(
                CloseInfo(CLOSE_ABNORMAL, f"{type(exc).__name__}: {exc}")
            ) from exc
        return cls(ws)

    async def recv(self) -> list[Frame]:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = await self.ws.recv()
            except ConnectionClosed as exc:
                raise TransportClosed(self._close_info(exc)) from None
            self.last_heard = time.monotonic()
            if isinstance(message, bytes):
                continue  # the server sends text only
            frames = _frames(message)
            if frames:
                self.opened = True
                return frames

    def _close_info(self, exc: Any) -> CloseInfo:
        close = exc.rcvd
        if close is None:
            return CloseInfo(CLOSE_ABNORMAL, "connection lost", opened=self.opened)
        return CloseInfo(close.code, close.reason, opened=self.opened)

    async def send(self, frame: Mapping[str, Any]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send(json.dumps(frame, separators=(",", ":"), allow_nan=False))
        except ConnectionClosed as exc:
            raise TransportClosed(self._close_info(exc)) from None

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        try:
            await self.ws.close(code, reason)
        except Exception:  # closing what may be broken already
            self.ws.transport.abort()


class EventStreamTransport:
    """An open ``text/event-stream`` response: receive only; ``recv`` returns the frames of
    the messages the next chunk completes."""

    kind = "sse"

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = SSEParser()
        self.chunks: AsyncIterator[str] = response.aiter_text()
        self.pending: deque[Frame] = deque()
        self.last_heard = time.monotonic()
        self.opened = False
        self.welcomed = False
        self.retry_after: float | None = None

    @classmethod
    async def open(
        cls,
        http: httpx.AsyncClient,
        url: str,
        *,
        params: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        open_timeout: float,
    ) -> EventStreamTransport:
        import httpx

        request = http.build_request(
            "GET",
            url,
            params=list(params),
            headers={"Accept": "text/event-stream", **headers},
            timeout=httpx.Timeout(open_timeout, read=None),
        )
        try:
            response = await http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise TransportClosed(
                CloseInfo(CLOSE_ABNORMAL, f"{type(exc).__name__}: {exc}")
            ) from exc
        if response.status_code != 200:
            error: Mapping[str, Any] | None = None
            try:
                await response.aread()
                body = response.json()
                error = body.get("error") if isinstance(body, dict) else None
            except (ValueError, httpx.HTTPError):
                error = None  # not our JSON: a proxy's page
            finally:
                await response.aclose()
            status = response.status_code
            reason = str(error.get("code")) if isinstance(error, dict) else f"HTTP {status}"
            raise TransportClosed(CloseInfo(CLOSE_ABNORMAL, reason, status=status, error=error))
        return cls(response)

    async def recv(self) -> list[Frame]:
        import httpx

        while not self.pending:
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                raise TransportClosed(self._ended()) from None
            except httpx.HTTPError as exc:
                info = CloseInfo(CLOSE_ABNORMAL, f"{type(exc).__name__}: {exc}", self.opened)
                raise TransportClosed(info) from None
            self.last_heard = time.monotonic()
            for message in self.parser.feed(chunk):
                try:
                    frame = json.loads(message.data)
                except ValueError:
                    continue
                if not isinstance(frame, dict):
                    continue
                self.opened = True
                if message.event == SSE_WELCOME:
                    # The welcome's retry: is the usual hint (SSE_RETRY); a later one is a
                    # draining server's delay (docs/protocol.md#close-codes).
                    self.welcomed = True
                    self.parser.retry = None
                self.pending.append(frame)
        return [self.pending.popleft()]

    def _ended(self) -> CloseInfo:
        if self.welcomed and self.parser.retry is not None:
            # A draining server ended the stream after saying when to come back.
            delay = self.parser.retry / 1000
            return CloseInfo(CLOSE_SERVICE_RESTART, "restart", True, retry_after=delay)
        return CloseInfo(CLOSE_ABNORMAL, "the event stream ended", self.opened)

    async def send(self, frame: Mapping[str, Any]) -> None:
        raise ClientError("An event stream is receive-only.", code="unsupported")

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        await self.response.aclose()


Transport = WebSocketTransport | EventStreamTransport
