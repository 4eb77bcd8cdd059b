"""The clients of ``bench.storm``: many WebSocket connections from one asyncio process.

Each :class:`StormClient` is one browser tab: it connects, waits for ``welcome``, subscribes
to one stream (resuming from the last ``seq`` it saw, with its ``epoch``) and then reads
every frame, keeping the event ``seq`` numbers it received since its latest (re)connection,
so the storm can check that each client got exactly the events it missed. :class:`Clients`
opens them all at the same instant (a burst), a few at a time (to set up a restart), or
each after a random delay (reconnecting after a restart, as the browser client's jittered
backoff does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from typing import Any

PING_EVERY = 10.0  # seconds; the server closes a client silent for HEARTBEAT_TIMEOUT (30)


def failure_label(exc: BaseException) -> str:
    """A reader's name for why a connection attempt failed."""
    from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

    if isinstance(exc, InvalidStatus):
        return f"refused: HTTP {exc.response.status_code}"
    if isinstance(exc, InvalidMessage):
        # daphne answers a handshake the application did not accept within
        # --websocket_connect_timeout by closing the TCP connection without a response.
        return "handshake dropped by the server (no HTTP response)"
    if isinstance(exc, TimeoutError):
        return "timed out (--timeout)"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else "none"
        return f"closed before subscribing (code {code})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (server not listening)"
    if isinstance(exc, AssertionError):
        return f"unexpected frame: {str(exc)[:80]}"
    return type(exc).__name__


def source_address(n: int) -> str:
    """The ``n``-th loopback address (127.0.0.1, 127.0.0.2, ...): Linux routes all of
    127.0.0.0/8 to the loopback interface, so clients can come from as many addresses as real
    users do, and per-address work (the per-IP cap's count) stays as small as in production."""
    last, rest = n % 254 + 1, n // 254  # the last byte never 0 nor 255
    return f"127.{rest // 256 % 256}.{rest % 256}.{last}"


class StormClient:
    """One WebSocket client and what it saw; see the module docstring."""

    def __init__(self, index: int, cookie: str | None, address: str) -> None:
        self.index, self.cookie, self.address = index, cookie, address
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.epoch: str | None = None
        self.last_seq = 0  # the latest event seq received, over every connection
        self.since: int | None = None  # what the latest subscribe asked for
        self.head = 0  # the stream's head in the latest `subscribed` frame
        self.recovered: bool | None = None
        self.seqs: list[int] = []  # event seqs received since the latest subscribe
        self.errors: list[str] = []
        self.close_code: int | None = None
        self.gone = asyncio.Event()  # the latest connection closed
        self.caught = asyncio.Event()  # every event up to `head` has arrived
        self.started = self.welcome_at = self.subscribed_at = self.caught_at = 0.0
        self.failure: str | None = None

    async def connect(
        self, url: str, stream: str, args: argparse.Namespace, *, resume: bool
    ) -> None:
        """Connect, wait for ``welcome``, subscribe (from ``last_seq`` if ``resume``), then
        read in the background. A failure is recorded in ``failure``, never raised."""
        from websockets.asyncio.client import connect

        self.ws, self.seqs, self.errors, self.close_code, self.failure = None, [], [], None, None
        self.gone, self.caught = asyncio.Event(), asyncio.Event()
        self.welcome_at = self.subscribed_at = self.caught_at = 0.0
        self.started = time.perf_counter()
        headers = {"Cookie": self.cookie} if self.cookie else None
        try:
            async with asyncio.timeout(args.timeout):
                ws = await connect(
                    url,
                    additional_headers=headers,
                    open_timeout=None,
                    ping_interval=None,
                    compression=None,
                    max_queue=None,
                    local_addr=(self.address, 0),
                )
                try:
                    welcome = json.loads(await ws.recv())
                    assert welcome["type"] == "welcome", welcome
                    self.welcome_at = time.perf_counter()
                    if args.subscribe:
                        await self._subscribe(ws, stream, resume)
                except BaseException:
                    await ws.close()
                    raise
        except Exception as exc:
            self.failure = failure_label(exc)
            self.gone.set()
            return
        self.ws = ws
        self.reader = asyncio.create_task(self._read(ws))

    async def _subscribe(self, ws: Any, stream: str, resume: bool) -> None:
        frame: dict[str, Any] = {"type": "subscribe", "stream": stream, "since": 0}
        if resume:
            frame.update(since=self.last_seq, epoch=self.epoch)
        self.since = frame["since"]
        await ws.send(json.dumps(frame))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "subscribed", reply
        self.subscribed_at = time.perf_counter()
        self.epoch, self.head, self.recovered = reply["epoch"], reply["seq"], reply["recovered"]
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        if not self.caught.is_set() and self.last_seq >= self.head:
            self.caught_at = self.caught_at or time.perf_counter()
            self.caught.set()

    async def _read(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for text in ws:
                frame = json.loads(text)
                kind = frame.get("type")
                if kind == "event" and frame.get("seq") is not None:
                    self.seqs.append(frame["seq"])
                    self.last_seq = max(self.last_seq, frame["seq"])
                    self._check_caught_up()
                elif kind == "error":
                    self.errors.append(str(frame.get("code")))
        except ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            self.gone.set()

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.gone.is_set()

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.reader, 5)


class Clients:
    """``--clients`` storm clients against one URL (see the module docstring)."""

    def __init__(
        self,
        url: str,
        args: argparse.Namespace,
        cookies: list[str | None],
        stream: str | None = None,
    ) -> None:
        self.url, self.args, self.stream = url, args, stream or args.stream
        self.clients = [
            StormClient(i, cookie, source_address(i % max(1, args.addresses)))
            for i, cookie in enumerate(cookies)
        ]
        self.began = 0.0  # when the latest storm started
        self._pinger: asyncio.Task[None] | None = None

    # --- what they saw ------------------------------------------------------------------
    @property
    def open_count(self) -> int:
        return sum(c.open for c in self.clients)

    @property
    def failures(self) -> list[str]:
        return [c.failure for c in self.clients if c.failure is not None]

    def latencies(self, mark: str) -> list[float]:
        """Per client, from its own attempt to ``mark`` (welcome_at, subscribed_at, ...)."""
        return [getattr(c, mark) - c.started for c in self.clients if getattr(c, mark)]

    def last(self, mark: str) -> float | None:
        """Seconds from the storm's start until the last client reached ``mark``."""
        times = [getattr(c, mark) for c in self.clients if getattr(c, mark)]
        return round(max(times) - self.began, 3) if times else None

    def progress(self) -> str:
        def count(mark: str) -> int:
            return sum(bool(getattr(c, mark)) for c in self.clients)

        return (
            f"{count('welcome_at')} admitted, {count('subscribed_at')} subscribed, "
            f"{count('caught_at')} caught up, {len(self.failures)} failed"
        )

    # --- opening them ---------------------------------------------------------------------
    async def open_all(self, *, resume: bool = False) -> None:
        """Every client at the same instant."""
        go = asyncio.Event()

        async def one(client: StormClient) -> None:
            await go.wait()
            await client.connect(self.url, self.stream, self.args, resume=resume)

        tasks = [asyncio.create_task(one(c)) for c in self.clients]
        await asyncio.sleep(0.05)  # every task waits at the gate
        self.began = time.perf_counter()
        go.set()
        self._start_pinger()
        await asyncio.gather(*tasks)

    async def open_gradually(self, concurrency: int) -> None:
        """At most ``concurrency`` handshakes at a time: setting up, not measuring."""
        gate = asyncio.Semaphore(concurrency)

        async def one(client: StormClient) -> None:
            async with gate:
                await client.connect(self.url, self.stream, self.args, resume=False)

        self.began = time.perf_counter()
        self._start_pinger()
        await asyncio.gather(*(one(c) for c in self.clients))

    async def reconnect_all(self, spread: float) -> None:
        """Each client after its own random delay in [0, ``spread``), resuming."""

        async def one(client: StormClient, delay: float) -> None:
            await asyncio.sleep(delay)
            await client.connect(self.url, self.stream, self.args, resume=True)

        delays = [random.uniform(0, spread) for _ in self.clients]
        self.began = time.perf_counter()
        self._start_pinger()
        await asyncio.gather(*(one(c, d) for c, d in zip(self.clients, delays, strict=True)))

    async def open_all_and_close(self) -> None:
        await self.open_all()
        if self.failures:
            raise RuntimeError(f"the warm-up connection failed: {self.failures}")
        await self.close_all()

    # --- while they are open ----------------------------------------------------------------
    def _start_pinger(self) -> None:
        if self._pinger is None or self._pinger.done():
            self._pinger = asyncio.create_task(self._ping())

    async def _ping(self) -> None:
        """Heartbeats, so a slow storm does not close its first clients (4408)."""
        while True:
            await asyncio.sleep(PING_EVERY)
            for client in self.clients:
                if client.open:
                    with contextlib.suppress(Exception):
                        await client.ws.send('{"type":"ping"}')

    async def wait_all(self, event: str, within: float) -> bool:
        """Wait until every connected client's ``event`` (caught, gone) is set, or ``within``."""
        waiting = [getattr(c, event).wait() for c in self.clients if c.ws is not None]
        if not waiting:
            return True
        try:
            async with asyncio.timeout(within):
                await asyncio.gather(*waiting)
        except TimeoutError:
            return False
        return True

    def stop_pinger(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()

    async def close_all(self) -> None:
        self.stop_pinger()
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
