"""The connection: keeps one connection to the server open, over WebSocket or SSE. Makes
attempts, reads frames, sends heartbeats and acknowledgements, notices a dead connection,
and after any loss waits as the policy says (full jitter, or a draining server's delay) and
tries again. It knows nothing of subscriptions or publishes: it asks its owner, the client,
through the small ``Owner`` interface (the browser client's ``client/connection.js``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as _random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlencode

from realtime.client.backoff import Backoff, ReconnectPolicy, restart_delay
from realtime.client.errors import ClientClosed, ClientError, ConnectionRefused
from realtime.client.http import heartbeat, why_refused
from realtime.client.items import StateChange
from realtime.client.liveness import Liveness, RateLimit
from realtime.client.transports import (
    CLOSE_ABNORMAL,
    SUBPROTOCOL,
    TICKET_SUBPROTOCOL_PREFIX,
    CloseInfo,
    EventStreamTransport,
    Frame,
    Transport,
    TransportClosed,
    WebSocketTransport,
    missing,
)
from realtime.protocol import CLOSE_NORMAL

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("realtime.client")

CLOSE_SILENT = 4000  # the client's own: no frame for twice the heartbeat interval
CLOSE_CONNECT_TIMEOUT = 4001  # the client's own: no welcome within connect_timeout
CLOSE_REOPEN = 4002  # the client's own: an event stream re-requested for new subscriptions
CLOSE_DROPPED = 4003  # the client's own: drop() (tests, or a network change the app knows of)

TransportName = Literal["websocket", "sse"]


@dataclass(frozen=True)
class Options:
    urls: tuple[str, ...]  # http(s) origins (or origin + path), without a trailing slash
    prefix: str = "/realtime/"
    transport: TransportName = "websocket"
    headers: Mapping[str, str] = field(default_factory=dict)
    origin: str | None = None
    client_id: str | None = None
    ticket: Callable[[], Awaitable[str | None]] | None = None
    backoff: Backoff = field(default_factory=Backoff)
    connect_timeout: float = 10.0
    batch: bool = True
    rate_limit: tuple[float, int] | None = (40.0, 80)
    random: Callable[[], float] = _random.random
    on_state: Callable[[StateChange], None] | None = None


class Owner(Protocol):
    """What the connection asks of, and reports to, the client."""

    async def opened(self, kind: TransportName) -> None: ...
    async def frame(self, frame: Frame) -> None: ...
    def lost(self) -> None: ...
    def closed(self, error: ClientError) -> None: ...
    def event_stream_params(self) -> list[tuple[str, str]] | None: ...
    def event_stream_cursor(self) -> str | None: ...
    def refused(self, info: CloseInfo) -> ClientError | bool: ...
    def presence_joined(self) -> bool: ...


class Connection:
    def __init__(self, options: Options, owner: Owner) -> None:
        self.options = options
        self.owner = owner
        self.policy = ReconnectPolicy(options.backoff, options.random)
        self.liveness = Liveness()
        self.rate = RateLimit(*options.rate_limit) if options.rate_limit else None
        self.state = "idle"
        self.url: str | None = None  # the server of the open connection (or the attempt)
        self.connection_id: str | None = None
        self.heartbeat: float | None = None
        self.max_frame: int | None = None
        self.error: ClientError | None = None  # what closed the client, if anything did
        self.transport: Transport | None = None  # the open one, welcomed
        self._next_url = 0
        self._task: asyncio.Task[None] | None = None
        self._open = asyncio.Event()
        self._wake = asyncio.Event()  # ends a wait before a retry
        self._ended: str | None = None  # why the client ended the open transport itself
        self._send_lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        self._requested: list[tuple[str, str]] = []  # what the open event stream asked for

    @property
    def kind(self) -> TransportName | None:
        """The open transport's kind, else None."""
        return self.options.transport if self.transport is not None else None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._enter("connecting")
            self._task = asyncio.get_running_loop().create_task(self._run(), name="realtime.client")

    async def wait_open(self) -> None:
        """Until the connection is open; ``ClientClosed`` if the client closes first."""
        while not self._open.is_set():
            if self.state == "closed":
                raise self.error or ClientClosed("The client is closed.")
            waiter = asyncio.ensure_future(self._open.wait())
            try:
                await asyncio.wait(
                    [waiter, self._task] if self._task else [waiter],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waiter.cancel()
        if self.state == "closed":
            raise self.error or ClientClosed("The client is closed.")

    def reconnect(self) -> None:
        """Connect now if waiting to retry."""
        self._wake.set()

    async def drop(self) -> None:
        """Lose the open connection as a network failure would: the client reconnects
        (after the backoff's first delay) and resumes."""
        await self._end_transport("dropped", CLOSE_DROPPED)

    async def reopen(self) -> None:
        """Re-request the event stream (SSE): the subscriptions or presence changed."""
        if self.options.transport == "sse":
            self._wake.set()  # an idle client (no stream yet) waits for this
            await self._end_transport("reopen", CLOSE_REOPEN)

    async def close(self, error: ClientError | None = None) -> None:
        """Close for good; nothing of the connection is left running afterwards.

        Called from a handler (which runs in the connection's task), the task ends when the
        handler next waits.
        """
        task, self._task = self._task, None
        inside = task is not None and task is asyncio.current_task()
        if task is not None and not inside:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._shutdown(error)
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()
        if inside and task is not None:
            task.cancel()

    def _shutdown(self, error: ClientError | None) -> None:
        if self.state == "closed":
            return
        self.error = error
        self._open.clear()
        self._enter("closed", error=error)
        self.owner.closed(error or ClientClosed("The client was closed."))

    # --- what the client calls -------------------------------------------------------------

    def endpoint(self, path: str, url: str | None = None) -> str:
        return f"{url or self.url or self.options.urls[0]}{self.options.prefix}{path}"

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            try:
                import httpx
            except ImportError:  # pragma: no cover - the test environment has it
                raise missing("httpx") from None
            self._http = httpx.AsyncClient(
                headers=dict(self.options.headers), timeout=self.options.connect_timeout
            )
        return self._http

    async def send(self, frame: Mapping[str, Any]) -> bool:
        """Send a frame on the open WebSocket (rate-limited); False if there is none."""
        transport = self.transport
        if not isinstance(transport, WebSocketTransport):
            return False
        if self.rate is not None:
            await self.rate.take()
        async with self._send_lock:
            if transport is not self.transport:
                return False
            try:
                await transport.send(frame)
            except TransportClosed:
                return False  # the reader sees the close and handles it
        self.liveness.sent()
        return True

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception as exc:
            # A bug, not a network failure: say so, and leave nothing waiting for ever.
            logger.exception("realtime.client: the connection failed")
            self._shutdown(ClientError(f"The client failed: {exc!r}", code="internal_error"))

    async def _loop(self) -> None:
        while True:
            info = await self._attempt(self.options.urls[self._next_url % len(self.options.urls)])
            if info.code == CLOSE_REOPEN:
                continue
            if self.policy.is_fatal(info.code):
                error = ConnectionRefused("Access was revoked: authenticate again.", code="revoked")
                return self._shutdown(error)
            if info.status == 403 and self.options.transport == "websocket":
                refusal = await why_refused(self.http(), self.endpoint("sse/"))
                if refusal is not None:
                    return self._shutdown(refusal)
            if info.status is not None and info.error is not None:
                verdict = self.owner.refused(info)
                if isinstance(verdict, ClientError):
                    return self._shutdown(verdict)
                if verdict:
                    self.policy.forgive()
            after = (
                info.retry_after
                if info.retry_after is not None
                else restart_delay(info.code, info.reason)
            )
            if not info.opened or after is not None:
                self._next_url += 1  # that server is down or draining: try the next one
            retry = self.policy.retry(info.code, after)
            if retry is None:
                return self._shutdown(ClientClosed("Gave up reconnecting.", code="max_attempts"))
            self._enter(
                "reconnecting",
                attempt=retry.attempt,
                delay=retry.delay,
                code=info.code,
                reason=info.reason,
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(retry.delay):
                    await self._wake.wait()

    async def _attempt(self, url: str) -> CloseInfo:
        """One connection attempt, and the connection's life if it opens."""
        self.url = url
        params = None
        if self.options.transport == "sse":
            params = self.owner.event_stream_params()
            if params is None:
                return await self._idle()
        ticket = None
        if self.options.ticket is not None:
            try:
                ticket = await self.options.ticket()
            except Exception:  # try without; the server decides
                logger.warning("realtime.client: getting a ticket failed", exc_info=True)
        transport: Transport | None = None
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                transport = await self._open_transport(url, ticket, params)
                frames = await transport.recv()
        except TransportClosed as exc:
            return exc.info
        except TimeoutError:
            if transport is not None:
                await transport.close(CLOSE_CONNECT_TIMEOUT, "no welcome")
            return CloseInfo(CLOSE_CONNECT_TIMEOUT, "no welcome in time")
        welcome = frames[0]
        if welcome.get("type") != "welcome":
            await transport.close(CLOSE_NORMAL, "no welcome")
            return CloseInfo(CLOSE_ABNORMAL, f"expected welcome, got {welcome.get('type')!r}")
        try:
            return await self._session(transport, welcome, frames[1:])
        finally:
            self.transport = None
            self._open.clear()
            self.owner.lost()
            with contextlib.suppress(Exception):
                await asyncio.shield(transport.close())

    async def _open_transport(
        self, url: str, ticket: str | None, params: list[tuple[str, str]] | None
    ) -> Transport:
        options = self.options
        if options.transport == "sse":
            headers = {"Authorization": f"Ticket {ticket}"} if ticket else {}
            self._requested = list(params or [])
            query = list(self._requested)
            cursor = self.owner.event_stream_cursor()
            if cursor is not None:
                query.append(("last_event_id", cursor))
            if options.client_id:
                query.append(("client_id", options.client_id))
            return await EventStreamTransport.open(
                self.http(),
                self.endpoint("sse/", url),
                params=query,
                headers=headers,
                open_timeout=options.connect_timeout,
            )
        ws_query = {"batch": "1"} if options.batch else {}
        if options.client_id:
            ws_query["client_id"] = options.client_id
        ws_url = self.endpoint("ws/", url).replace("http", "ws", 1)
        if ws_query:
            ws_url += "?" + urlencode(ws_query)
        protocols = [SUBPROTOCOL]
        if ticket:
            protocols.append(TICKET_SUBPROTOCOL_PREFIX + ticket)
        return await WebSocketTransport.open(
            ws_url,
            subprotocols=protocols,
            headers=options.headers,
            origin=options.origin,
            open_timeout=options.connect_timeout,
        )

    async def _idle(self) -> CloseInfo:
        """SSE with nothing to receive: open, without a request, until a subscribe."""
        self._enter("open", transport="sse", url=self.url)
        self._wake.clear()
        self._open.set()
        try:
            await self._wake.wait()
        finally:
            self._open.clear()
        return CloseInfo(CLOSE_REOPEN, "reopen", opened=True)

    async def _session(self, transport: Transport, welcome: Frame, rest: list[Frame]) -> CloseInfo:
        self.transport = transport
        self._ended = None
        self.connection_id = str(welcome.get("connection_id"))
        self.heartbeat = float(welcome.get("heartbeat") or 15)
        self.max_frame = welcome.get("max_frame")
        window = welcome.get("window") or {}
        self.liveness.opened(window.get("messages"))
        loop = asyncio.get_running_loop()
        stable = loop.call_later(self.options.backoff.stable_after, self.policy.stable)
        ticker = loop.create_task(self._tick(transport), name="realtime.client.ticker")
        self._open.set()
        self._enter(
            "open", transport=transport.kind, url=self.url, connection_id=self.connection_id
        )
        try:
            await self.owner.opened(self.options.transport)
            if transport.kind == "sse" and self.owner.event_stream_params() != self._requested:
                # Subscriptions or presence changed while the request was on its way.
                await self.reopen()
            await self._handle(rest)
            while True:
                self.liveness.waiting_since = loop.time()
                frames = await transport.recv()
                self.liveness.waiting_since = None
                await self._handle(frames)
        except TransportClosed as exc:
            if self._ended is not None:
                code = {"reopen": CLOSE_REOPEN, "dropped": CLOSE_DROPPED}.get(
                    self._ended, CLOSE_SILENT
                )
                return CloseInfo(code, self._ended, opened=True)
            return exc.info
        finally:
            stable.cancel()
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _handle(self, frames: list[Frame]) -> None:
        """A message's frames, in order; one acknowledgement at most, after the last."""
        for frame in frames:
            await self.owner.frame(frame)
            self.liveness.count()
        if self.liveness.ack_due:
            await self._acknowledge()

    async def _end_transport(self, why: str, code: int) -> None:
        transport = self.transport
        if transport is None:
            return
        self._ended = why
        logger.debug("realtime.client: ending the connection (%s)", why)
        if isinstance(transport, WebSocketTransport):
            transport.ws.transport.abort()  # at once, as a failing network would
        else:
            await transport.close(code, why)

    # --- liveness and flow control -------------------------------------------------------------

    async def _tick(self, transport: Transport) -> None:
        heartbeat = self.heartbeat or 15.0
        interval = max(0.1, min(heartbeat / 4, 5.0))
        beat = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(interval)
            if self.liveness.silent_for(2 * heartbeat, transport.last_heard):
                await self._end_transport("silent", CLOSE_SILENT)
                return
            if self.liveness.unacknowledged:
                await self._acknowledge()
            if isinstance(transport, WebSocketTransport):
                if self.liveness.quiet_for(heartbeat / 2):
                    await self.send({"type": "ping"})
            elif (
                asyncio.get_running_loop().time() - beat >= heartbeat
                and self.owner.presence_joined()
            ):
                beat = asyncio.get_running_loop().time()
                await self._post_heartbeat()

    async def _acknowledge(self) -> None:
        if self.transport is None or not self.liveness.unacknowledged:
            return
        count = self.liveness.acknowledge()
        if isinstance(self.transport, WebSocketTransport):
            await self.send({"type": "received", "count": count})
        else:
            await self._post_heartbeat()

    async def _post_heartbeat(self) -> None:
        """SSE: keeps presence alive and acknowledges what arrived."""
        if self.connection_id is None:
            return
        url = self.endpoint("heartbeat/")
        if await heartbeat(self.http(), url, self.connection_id, self.liveness.received) == 404:
            await self._end_transport("unknown_connection", CLOSE_SILENT)

    # --- states --------------------------------------------------------------------------------

    def _enter(self, state: str, **detail: Any) -> None:
        previous, self.state = self.state, state
        if self.options.on_state is not None:
            try:
                self.options.on_state(StateChange(state, previous, **detail))
            except Exception:  # the application's handler must not stop the client
                logger.exception("realtime.client: on_state handler failed")


def normalize_urls(url: str | Sequence[str]) -> tuple[str, ...]:
    """http(s) base URLs without a trailing slash; ws(s) URLs are taken as their http(s)."""
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("Client needs a URL.")
    out = []
    for each in urls:
        base = each.rstrip("/")
        if base.startswith("ws"):
            base = "http" + base[2:]
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"Not an http(s) or ws(s) URL: {each!r}")
        out.append(base)
    return tuple(out)
