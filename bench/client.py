"""The load client of ``bench.fanout``: many WebSocket subscribers in one process.

Started by the benchmark, not by hand::

    python -m bench.client --protocol realtime --stream public:bench --clients 500 \
        --steps 6 URL1 URL2

It opens ``--clients`` connections spread evenly over the URLs (picows, one event loop),
subscribes each to the stream, prints ``{"event": "ready", ...}`` on stdout and then answers
JSON-line commands read from stdin (``count``, ``report``, ``quit``); logs go to stderr. It
exits when stdin closes, so it never outlives the benchmark.

Every event's ``data`` carries the publisher's ``time.time()`` (``t``) and the step number
(``k``). The per-message work is kept to one ``orjson.loads``, a sequence check (duplicates
are events at or below the connection's last ``seq``) and a histogram increment (0.1 ms
buckets), because at 500 subscribers this loop runs hundreds of thousands of times a second.
The client shares the machine with the servers it measures, so what it spends they do not
get: orjson parses a 40-event ``batch`` frame in about 21 µs where ``json.loads`` takes 55,
which at 400 events/s to 500 subscribers was about 15 % of the two cores
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.procs import emit

BUCKETS_PER_SECOND = 10_000  # 0.1 ms histogram buckets...
HIST_SIZE = 10 * BUCKETS_PER_SECOND  # ...up to 10 s; slower deliveries land in the last one
PING_INTERVAL = 10.0  # seconds; the app closes connections silent for HEARTBEAT_TIMEOUT (30)
CONNECT_CONCURRENCY = 50
CONNECT_ATTEMPTS = 3

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
PING_FRAME = b'{"type":"ping"}'
ACK_EVERY = 500  # frames between acknowledgements; the app's window is 10,000


class Step:
    """What the subscribers received of one step's events."""

    __slots__ = ("dups", "hist", "last_rx", "max_lat", "unique")

    def __init__(self) -> None:
        self.hist = [0] * HIST_SIZE
        self.unique = 0
        self.dups = 0
        self.last_rx = 0.0
        self.max_lat = 0.0


class Subscriber(WSListener):  # type: ignore[misc]
    """One connection. ``on_ws_frame`` is the hot path: keep it lean."""

    def __init__(self, client: LoadClient, server: int) -> None:
        super().__init__()
        self.client = client
        self.steps = client.steps
        self.server = server
        self.transport: WSTransport | None = None
        self.last = 0  # highest seq received
        self.frames = 0  # frames received (inside batches too), for flow control
        self.acked = 0
        self.count = 0  # events received, duplicates excluded
        self.welcomed = False
        self.subscribed = False
        self.closed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if not self.client.await_welcome:
            transport.send(TEXT, self.client.subscribe_frame)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            if frame.msg_type is CLOSE:
                self.client.note_close(frame.get_close_code(), frame.get_close_reason())
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        msg = orjson.loads(frame.get_payload_as_bytes())
        kind = msg["type"]
        if kind == "batch":
            msgs = msg["frames"]
        elif kind == "event":
            msgs = (msg,)
        else:
            self.frames += 1
            self.control(transport, msg)
            return
        self.frames += len(msgs)
        if self.frames - self.acked >= ACK_EVERY:
            # Flow control (docs/protocol.md): acknowledge, or the server stops sending.
            self.acked = self.frames
            transport.send(TEXT, b'{"type":"received","count":%d}' % self.frames)
        now = time.time()
        steps = self.steps
        for msg in msgs:
            if msg["type"] != "event":
                self.control(transport, msg)
                continue
            if not self.subscribed:
                continue  # not counted: events are owed only to acknowledged subscribers
            seq = msg["seq"]
            data = msg["data"]
            step = steps[data["k"]]
            if seq > self.last:
                self.last = seq
                self.count += 1
                step.unique += 1
                lat = now - data["t"]
                bucket = int(lat * BUCKETS_PER_SECOND)
                if not 0 <= bucket < HIST_SIZE:
                    bucket = 0 if bucket < 0 else HIST_SIZE - 1
                step.hist[bucket] += 1
                if lat > step.max_lat:
                    step.max_lat = lat
                step.last_rx = now
            else:
                step.dups += 1

    def control(self, transport: WSTransport, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "welcome":
            self.welcomed = True
            transport.send(TEXT, self.client.subscribe_frame)
        elif kind == "subscribed":
            # Events up to the stream's position at subscription time are not owed to us.
            self.last = max(self.last, int(msg.get("seq") or 0))
            if not self.subscribed:
                self.subscribed = True
                self.client.on_subscribed()
        elif kind == "error":
            self.client.log(f"server error frame: {msg}")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed:
            self.closed = True
            self.client.disconnected += 1


class LoadClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.urls: list[str] = args.urls
        self.n_clients: int = args.clients
        self.await_welcome = args.protocol == "realtime"
        self.subscribe_frame = json.dumps(
            {"type": "subscribe", "id": 1, "stream": args.stream}, separators=(",", ":")
        ).encode()
        self.steps = [Step() for _ in range(args.steps)]
        self.subscribers: list[Subscriber] = []
        self.n_subscribed = 0
        self.all_subscribed = asyncio.Event()
        self.awaited = args.clients
        self.failed = 0
        self.disconnected = 0
        self.closes: dict[str, int] = {}
        self.connect_timeout: float = args.connect_timeout
        self.reported_counts: list[int] = []

    def log(self, text: str) -> None:
        print(f"[bench.client] {text}", file=sys.stderr, flush=True)

    def note_close(self, code: object, reason: str) -> None:
        key = f"{code} {reason}".strip()
        self.closes[key] = self.closes.get(key, 0) + 1

    def on_subscribed(self) -> None:
        self.n_subscribed += 1
        if self.n_subscribed >= self.awaited:
            self.all_subscribed.set()

    async def connect_one(self, index: int, sem: asyncio.Semaphore) -> None:
        server = index % len(self.urls)
        url = self.urls[server]
        origin = "http://" + url.split("://", 1)[1].split("/", 1)[0]
        async with sem:
            for attempt in range(CONNECT_ATTEMPTS):
                try:
                    _, sub = await ws_connect(
                        lambda: Subscriber(self, server),
                        url,
                        extra_headers={"Origin": origin},
                        websocket_handshake_timeout=10,
                    )
                except Exception as exc:
                    error: object = exc
                else:
                    if sub is not None:
                        self.subscribers.append(sub)
                        return
                    error = "handshake dropped"  # picows gives no listener then
                if attempt == CONNECT_ATTEMPTS - 1:
                    self.log(f"connection {index} to {url} failed: {error!r}")
                    self.failed += 1
                    return
                await asyncio.sleep(0.2 * (attempt + 1))

    async def connect_all(self) -> dict[str, Any]:
        started = time.perf_counter()
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        await asyncio.gather(*(self.connect_one(i, sem) for i in range(self.n_clients)))
        self.awaited = len(self.subscribers)
        if self.n_subscribed < self.awaited:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_subscribed.wait(), self.connect_timeout)
        self.reported_counts = [0] * len(self.urls)
        missing = [sub for sub in self.subscribers if not sub.subscribed]
        if missing:
            self.log(
                f"{len(missing)} connections not subscribed after {self.connect_timeout:g} s: "
                f"{sum(s.closed for s in missing)} closed, "
                f"{sum(s.welcomed and not s.closed for s in missing)} welcomed but never "
                f"subscribed, {sum(not s.welcomed and not s.closed for s in missing)} without "
                f"a welcome; closes seen: {self.closes}"
            )
        return {
            "event": "ready",
            "connected": len(self.subscribers),
            "subscribed": self.n_subscribed,
            "failed": self.failed,
            "seconds": round(time.perf_counter() - started, 3),
        }

    async def ping_forever(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            for sub in self.subscribers:
                if sub.transport is not None and not sub.closed:
                    sub.transport.send(TEXT, PING_FRAME)

    def report(self, k: int) -> dict[str, Any]:
        step = self.steps[k]
        per_server = [0] * len(self.urls)
        for sub in self.subscribers:
            per_server[sub.server] += sub.count
        delta = [now - before for now, before in zip(per_server, self.reported_counts, strict=True)]
        self.reported_counts = per_server
        return {
            "k": k,
            "unique": step.unique,
            "dups": step.dups,
            "last_rx": step.last_rx,
            "max_lat": step.max_lat,
            "hist": {str(i): c for i, c in enumerate(step.hist) if c},
            "per_server_since_last_report": delta,
            "subscribed": self.n_subscribed,
            "disconnected": self.disconnected,
            "closes": self.closes,
        }

    def handle(self, command: dict[str, Any]) -> dict[str, Any] | None:
        cmd = command.get("cmd")
        if cmd == "count":
            k = command["k"]
            return {"k": k, "unique": self.steps[k].unique, "disconnected": self.disconnected}
        if cmd == "report":
            return self.report(command["k"])
        if cmd == "quit":
            return None
        return {"error": f"unknown command {cmd!r}"}

    def close_all(self) -> None:
        for sub in self.subscribers:
            if sub.transport is not None and not sub.closed:
                sub.transport.disconnect(graceful=False)


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    client = LoadClient(args)
    emit(await client.connect_all())
    pinger = asyncio.create_task(client.ping_forever())
    try:
        while line := await reader.readline():
            reply = client.handle(json.loads(line))
            if reply is None:
                break
            emit(reply)
    finally:
        pinger.cancel()
        client.close_all()
        await asyncio.sleep(0.1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("urls", nargs="+", help="WebSocket URLs; clients round-robin over them")
    parser.add_argument("--protocol", choices=["realtime", "naive"], required=True)
    parser.add_argument("--stream", default="public:bench")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--steps", type=int, required=True, help="number of step slots (k)")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
