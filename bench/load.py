"""Load tool: WebSocket and SSE clients against servers that are already running.

::

    python -m bench.load --url http://127.0.0.1:8000 --ws 200 --sse 50 \
        --rate 20 --duration 10 --server-pid 4242

opens ``--ws`` WebSocket and ``--sse`` Server-Sent Events clients, spread over the ``--url``
servers and all subscribed to ``--stream``, publishes ``--rate`` events/s for ``--duration``
seconds, waits up to ``--drain`` seconds for the last deliveries and reports: connections
held, deliveries/s, publish-to-receive latency p50/p99/max, loss, duplicates and gaps, and
each ``--server-pid``'s RSS (from ``/proc``) with the growth per connection. ``--rate 0``
only holds the connections for ``--duration`` seconds: the idle-memory measurement.

Publishing (``--publish``):

* ``api`` (default): ``POST /realtime/api/streams/<stream>/events/`` on the servers in turn,
  needing nothing but their URLs. The stream must let the caller publish: the demo settings
  let anyone publish to ``public:chat:*`` (the default stream, ``public:chat:load``), and a
  server token (``--token``, one of ``REALTIME["API_TOKENS"]``) may publish anywhere. One
  request at a time, so the API's latency bounds the rate (about 50-100 events/s here).
* ``direct``: ``realtime.apublish`` in this process (``bench.publisher``), which then
  needs the servers' ``DJANGO_SETTINGS_MODULE``, ``DATABASE_URL``, ``REDIS_URL`` and
  ``REDIS_PREFIX`` in its environment. With ``--protocol naive`` (``bench.naive`` under
  ``bench.naive_asgi``) it is the only mode: a ``group_send`` per event.

Each event's data carries the publisher's ``time.time()``, so latency is measured on one
clock: run the tool on the servers' machine. The WebSocket clients are
``bench.client``'s (picows, with flow-control acknowledgements); the SSE clients are
the lightweight HTTP/1.1 reader below, which acknowledges what it received with the
heartbeat ``POST`` (``{"connection": ..., "received": N}``, docs/protocol.md, flow control):
without it the server drops an event stream once ``OUTBOX_WINDOW`` frames are unacknowledged.

The servers must admit the connections: the demo settings cap connections per IP address at
1,000 (``REALTIME_MAX_CONNECTIONS_PER_IP`` raises it) and the process needs a file
descriptor per connection (this tool raises its own soft limit to the hard one).

Progress goes to stderr, a Markdown report to stdout, JSON to ``--json PATH``. Every wait
is bounded and every connection closed on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from bench.client import (
    ACK_EVERY,
    BUCKETS_PER_SECOND,
    CONNECT_ATTEMPTS,
    CONNECT_CONCURRENCY,
    HIST_SIZE,
    LoadClient,
    Step,
)
from bench.procs import BenchError, check_bounds, log, raise_fd_limit
from bench.publisher import make_publish, run_step
from bench.report import percentile_ms

WS_PATHS = {"realtime": "/realtime/ws/?batch=1", "naive": "/naive/ws/"}
SSE_PATH = "/realtime/sse/"
HEARTBEAT_PATH = "/realtime/heartbeat/"
EVENT = "load.tick"
REQUEST_TIMEOUT = 15.0
MAX_CONNECTIONS = 20_000


class LoadError(Exception):
    """The load could not be applied (a server refused, did not answer, ...)."""


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB (``VmRSS``), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def record(step: Step, latency: float, now: float) -> None:
    """One unique delivery into ``step``'s histogram (the WebSocket clients' 0.1 ms buckets)."""
    step.hist[min(max(int(latency * BUCKETS_PER_SECOND), 0), HIST_SIZE - 1)] += 1
    step.unique += 1
    step.last_rx = now
    if latency > step.max_lat:
        step.max_lat = latency


class SeqTracker:
    """Checks one subscription's seqs: each once, in order, no gap."""

    __slots__ = ("count", "dups", "first_at", "gaps", "last", "last_at")

    def __init__(self, last: int = 0) -> None:
        self.last = last  # highest seq received (or owed from)
        self.count = self.dups = self.gaps = 0
        self.first_at = self.last_at = 0.0

    def see(self, seq: int, now: float) -> bool:
        """Whether ``seq`` is new; counts duplicates and gaps."""
        if seq <= self.last:
            self.dups += 1
            return False
        if seq != self.last + 1:
            self.gaps += 1
        self.last = seq
        self.count += 1
        if not self.first_at:
            self.first_at = now
        self.last_at = now
        return True


# --- HTTP/1.1 ------------------------------------------------------------------------------
class HttpConnection:
    """An HTTP/1.1 connection for small requests (acknowledgements, publishing).

    ``keep_alive=False`` closes it after each request, so that it holds no server memory
    between requests: the acknowledgements of idle SSE clients must not add a connection each
    to the server's RSS.
    """

    def __init__(self, host: str, port: int, *, keep_alive: bool = True) -> None:
        self.host, self.port, self.keep_alive = host, port, keep_alive
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> tuple[int, bytes]:
        """``(status, body)``; reconnects once if the server closed the idle connection."""
        async with self.lock, asyncio.timeout(REQUEST_TIMEOUT):
            for attempt in range(2):
                try:
                    return await self._exchange(method, path, body, headers)
                except (ConnectionError, asyncio.IncompleteReadError):
                    await self.close()
                    if attempt:
                        raise
        raise AssertionError("unreachable")

    async def _exchange(
        self, method: str, path: str, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers]
        head.append(f"Content-Length: {len(body)}")
        if not self.keep_alive:
            head.append("Connection: close")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        status, fields = await read_head(self.reader)
        if fields.get("transfer-encoding") == "chunked":
            data = b"".join([chunk async for chunk in read_chunks(self.reader)])
        else:
            data = await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection") == "close" or not self.keep_alive:
            await self.close()
        return status, data

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is None:
            return
        writer.close()
        try:
            await writer.wait_closed()
        except asyncio.CancelledError:
            # Python 3.11's wait_closed awaits the protocol's own future: a request cancelled
            # while closing cancels that future too. Only our own cancellation goes on up.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception:
            pass


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and (lower-cased) header fields of a response."""
    line = await reader.readuntil(b"\r\n")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise LoadError(f"not an HTTP response: {line[:100]!r}")
    fields: dict[str, str] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(parts[1]), fields


async def read_chunks(reader: asyncio.StreamReader) -> Any:
    """The chunks of a ``Transfer-Encoding: chunked`` body, until the last."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        chunk = await reader.readexactly(size + 2)
        yield chunk[:-2]


def split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None:
        raise LoadError(f"no host in {url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme in ("https", "wss") else 80)


# --- SSE client ----------------------------------------------------------------------------
class SSEClient:
    """One event stream on a raw asyncio connection: little work per event, no dependency.

    Reads the chunked ``text/event-stream`` body, parses messages (``event:``, ``data:``,
    ``id:``; comments are keep-alives, not counted), keeps the stream's seqs in a
    ``SeqTracker`` and acknowledges every ``ACK_EVERY`` frames with the heartbeat ``POST``
    (a connection per request: an idle client holds one socket). ``resume_from``: the
    events after that seq are owed (a cursor was sent); otherwise those after the head in
    ``realtime.subscribed``, as a live subscriber.
    """

    def __init__(
        self,
        base_url: str,
        stream: str,
        step: Step,
        *,
        cursor: str | None = None,
        resume_from: int | None = None,
    ) -> None:
        self.host, self.port = split_url(base_url)
        self.stream, self.step, self.cursor = stream, step, cursor
        self.live = resume_from is None
        self.seqs = SeqTracker(resume_from or 0)
        self.connection_id: str | None = None
        self.epoch: str | None = None
        self.frames = self.acked = 0
        self.subscribed = asyncio.Event()
        self.subscribed_at = 0.0
        self.want = 0  # ``done`` is set once this many events arrived, or the stream ended
        self.done = asyncio.Event()
        self.closed = False
        self.ack_errors = 0
        self.error: str | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.ack_task: asyncio.Task[None] | None = None
        self.poster = HttpConnection(self.host, self.port, keep_alive=False)

    async def open(self, within: float) -> None:
        """Send the request; return once the stream's ``realtime.subscribed`` arrived."""
        reader, self.writer = await asyncio.open_connection(self.host, self.port)
        query = urlencode({"stream": self.stream})
        head = [
            f"GET {SSE_PATH}?{query} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Accept: text/event-stream",
        ]
        if self.cursor:
            head.append(f"Last-Event-ID: {self.cursor}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        async with asyncio.timeout(within):
            status, fields = await read_head(reader)
            if status != 200:
                body = await reader.read(500)
                raise LoadError(f"SSE request answered {status}: {body!r}")
            if fields.get("transfer-encoding") != "chunked":
                raise LoadError(f"SSE response not chunked: {fields}")
            self.reader_task = asyncio.create_task(self._read(reader))
            await self.subscribed.wait()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        try:
            async for chunk in read_chunks(reader):
                buffer += chunk
                end = buffer.rfind(b"\n\n")
                if end >= 0:
                    self.feed(buffer[: end + 2])
                    buffer = buffer[end + 2 :]
        except (ConnectionError, asyncio.IncompleteReadError, LoadError) as exc:
            self.error = self.error or repr(exc)
        finally:
            self.closed = True
            self.done.set()

    def feed(self, data: bytes) -> None:
        """Whole messages, separated by blank lines (the server writes LF only)."""
        for block in data.split(b"\n\n"):
            if not block or block.startswith(b":"):
                continue  # keep-alive comment: not a frame for flow control
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):  # the server's data is always one line
                    self.frames += 1
                    self.message(json.loads(line[6:]))
        if self.want and self.seqs.count >= self.want:
            self.done.set()
        acking = self.ack_task is not None and not self.ack_task.done()
        if self.frames - self.acked >= ACK_EVERY and not acking:
            self.ack_task = asyncio.create_task(self._ack())

    def message(self, frame: dict[str, Any]) -> None:
        """One event's JSON: the same frames as over WebSocket (``type`` says which)."""
        kind = frame["type"]
        if kind == "event":
            now = time.time()
            if self.seqs.see(frame["seq"], now):
                record(self.step, now - frame["data"]["t"], now)
            else:
                self.step.dups += 1
        elif kind == "subscribed":
            self.epoch = frame["epoch"]
            self.subscribed_at = self.subscribed_at or time.time()
            if self.live:
                self.seqs.last = max(self.seqs.last, int(frame["seq"]))
            self.subscribed.set()
        elif kind == "welcome":
            self.connection_id = frame["connection_id"]
        elif kind == "error":
            self.error = self.error or f"{frame.get('code')}: {frame.get('message')}"

    async def _ack(self) -> None:
        """POST the count received so far; again while more arrived meanwhile."""
        try:
            while self.connection_id and self.frames > self.acked and not self.closed:
                count = self.frames
                body = json.dumps({"connection": self.connection_id, "received": count})
                headers = (("Content-Type", "application/json"),)
                status, _ = await self.poster.request(
                    "POST", HEARTBEAT_PATH, body.encode(), headers
                )
                if status != 204:
                    self.ack_errors += 1
                    return
                self.acked = count
                if self.frames - self.acked < ACK_EVERY:
                    return
        except (OSError, TimeoutError, asyncio.IncompleteReadError, LoadError):
            self.ack_errors += 1

    async def close(self) -> None:
        self.closed = True
        for task in (self.reader_task, self.ack_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        await self.poster.close()


# --- publishing ----------------------------------------------------------------------------
Publish = Callable[[list[dict[str, Any]]], Awaitable[int]]


def api_publisher(
    urls: list[str], stream: str, token: str | None
) -> tuple[Publish, list[HttpConnection]]:
    """Publish through the REST API, one request at a time, the servers taking turns."""
    conns = [HttpConnection(*split_url(url)) for url in urls]
    path = f"/realtime/api/streams/{quote(stream, safe='')}/events/"
    headers = [("Content-Type", "application/json")]
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    turn = 0

    async def publish(datas: list[dict[str, Any]]) -> int:
        nonlocal turn
        seq = 0
        for data in datas:
            conn = conns[turn % len(conns)]
            turn += 1
            body = json.dumps({"event": EVENT, "data": data}).encode()
            try:
                status, answer = await conn.request("POST", path, body, headers)
            except OSError as exc:
                raise LoadError(f"POST {path} to {conn.host}:{conn.port} failed: {exc}") from exc
            if status != 201:
                raise LoadError(f"POST {path} answered {status}: {answer[:300]!r}")
            seq = int(json.loads(answer)["seq"])
        return seq

    return publish, conns


def direct_publisher(protocol: str, stream: str) -> Publish:
    """``realtime.apublish`` (or the naive ``group_send``) here, with the servers' settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    return make_publish(protocol, stream)


# --- the run -------------------------------------------------------------------------------
def delivery_stats(steps: list[Step], expected: int, t0: float) -> dict[str, Any]:
    """Loss, duplicates, deliveries/s and latency percentiles of what ``steps`` received."""
    hist: dict[int, int] = {}
    for step in steps:
        for bucket, count in enumerate(step.hist):
            if count:
                hist[bucket] = hist.get(bucket, 0) + count
    unique = sum(s.unique for s in steps)
    last_rx = max((s.last_rx for s in steps), default=0.0)
    window = last_rx - t0 if unique else 0.0
    return {
        "expected": expected,
        "delivered": unique,
        "deliveries_per_s": round(unique / window, 1) if window > 0 else 0.0,
        "loss": max(0, expected - unique),
        "loss_pct": round((expected - unique) / expected * 100, 3) if expected else 0.0,
        "duplicates": sum(s.dups for s in steps),
        "p50_ms": percentile_ms(hist, unique, 0.50),
        "p99_ms": percentile_ms(hist, unique, 0.99),
        "max_ms": round(max(s.max_lat for s in steps) * 1000, 1) if unique else None,
    }


class LoadRun:
    """The clients, the publisher and the RSS readings of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ws_urls = [
            "ws://" + urlsplit(url).netloc + (args.ws_path or WS_PATHS[args.protocol])
            for url in args.url
        ]
        self.ws_step, self.sse_step = Step(), Step()
        self.ws_clients: list[LoadClient] = []
        self.sse_clients: list[SSEClient] = []
        self.sse_failed = 0
        self.errors: list[str] = []
        self.background: list[asyncio.Task[None]] = []
        self.rss: dict[str, dict[int, int | None]] = {}
        self.http: list[HttpConnection] = []

    def sample_rss(self, label: str) -> None:
        self.rss[label] = {pid: rss_kib(pid) for pid in self.args.server_pid}

    def ws_subscribers(self) -> list[Any]:
        return [sub for client in self.ws_clients for sub in client.subscribers]

    def counts(self) -> dict[str, int]:
        subs = self.ws_subscribers()
        return {
            "ws_subscribed": sum(s.subscribed for s in subs),
            "ws_held": sum(s.subscribed and not s.closed for s in subs),
            "sse_subscribed": sum(c.subscribed.is_set() for c in self.sse_clients),
            "sse_held": sum(c.subscribed.is_set() and not c.closed for c in self.sse_clients),
        }

    async def open_ws(self, n: int) -> None:
        if n <= 0:
            return
        args = self.args
        client = LoadClient(
            argparse.Namespace(
                urls=self.ws_urls,
                clients=n,
                protocol=args.protocol,
                stream=args.stream,
                steps=1,
                connect_timeout=args.connect_timeout,
            )
        )
        client.steps = [self.ws_step]  # before connecting: every subscriber counts into it
        self.ws_clients.append(client)
        ready = await client.connect_all()
        if ready["failed"] or ready["subscribed"] < ready["connected"]:
            self.errors.append(f"WebSocket: {ready}; closes {client.closes}")
        self.background.append(asyncio.create_task(client.ping_forever()))

    async def open_sse(self, n: int, first: int) -> None:
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(index: int) -> None:
            url = self.args.url[index % len(self.args.url)]
            async with sem:
                for attempt in range(CONNECT_ATTEMPTS):
                    client = SSEClient(url, self.args.stream, self.sse_step)
                    try:
                        await client.open(self.args.connect_timeout)
                    except (OSError, TimeoutError, LoadError, asyncio.IncompleteReadError) as exc:
                        await client.close()
                        if attempt == CONNECT_ATTEMPTS - 1:
                            self.sse_failed += 1
                            self.errors.append(f"SSE client {index} on {url}: {exc!r}")
                            return
                        await asyncio.sleep(0.2 * (attempt + 1))
                    else:
                        self.sse_clients.append(client)
                        return

        await asyncio.gather(*(one(i) for i in range(first, first + n)))

    def publisher(self) -> Publish:
        args = self.args
        if args.publish == "direct":
            return direct_publisher(args.protocol, args.stream)
        publish, self.http = api_publisher(args.url, args.stream, args.token)
        return publish

    async def ticker(self, label: str) -> None:
        """A progress line on stderr every 5 s."""
        while True:
            await asyncio.sleep(5)
            c = self.counts()
            got = self.ws_step.unique + self.sse_step.unique
            log(
                f"[load] {label}: {c['ws_held']} WebSocket + {c['sse_held']} SSE held, "
                f"{got:,} events delivered"
            )

    async def open_all(self, ws: int, sse: int, first_sse: int) -> float:
        """Open ``ws`` WebSocket and ``sse`` SSE clients; returns the seconds it took."""
        log(f"[load] opening {ws} WebSocket and {sse} SSE clients...")
        started = time.monotonic()
        await self.open_ws(ws)
        await self.open_sse(sse, first_sse)
        return time.monotonic() - started

    async def run(self) -> dict[str, Any]:
        args = self.args
        self.sample_rss("before")
        publish = self.publisher() if args.rate > 0 else None
        if publish is not None:
            # Fails fast (before any connection) if publishing is refused; creates the stream.
            await publish([{"t": time.time(), "n": -1, "k": 0}])
        warm_ws, warm_sse = min(args.warmup, args.ws), min(args.warmup, args.sse)
        opened = 0.0
        if warm_ws or warm_sse:
            opened += await self.open_all(warm_ws, warm_sse, 0)
            await asyncio.sleep(args.settle)
            self.sample_rss("warm")
        warm = self.counts()
        opened += await self.open_all(args.ws - warm_ws, args.sse - warm_sse, warm_sse)
        await asyncio.sleep(args.settle)
        self.sample_rss("held")
        at_start = self.counts()
        log(
            f"[load] {at_start['ws_subscribed']} WebSocket and {at_start['sse_subscribed']} SSE "
            f"clients subscribed in {opened:.1f} s"
        )
        if not at_start["ws_subscribed"] + at_start["sse_subscribed"]:
            raise LoadError("no client could subscribe: " + "; ".join(self.errors[:3]))
        owed = at_start["ws_subscribed"] + at_start["sse_subscribed"]
        published: dict[str, Any] | None = None
        ticker = asyncio.create_task(self.ticker("publishing" if publish else "holding"))
        try:
            if publish is None:
                await asyncio.sleep(args.duration)
            else:
                published = await run_step(publish, 0, args.rate, args.duration)
                await self.drain(published["count"] * owed)
        finally:
            ticker.cancel()
        self.sample_rss("end")
        return self.report(warm, at_start, self.counts(), published, opened)

    async def drain(self, expected: int) -> None:
        deadline = time.monotonic() + self.args.drain
        while self.ws_step.unique + self.sse_step.unique < expected:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)

    def report(
        self,
        warm: dict[str, int],
        start: dict[str, int],
        end: dict[str, int],
        published: dict[str, Any] | None,
        opened: float,
    ) -> dict[str, Any]:
        args = self.args
        delivery: dict[str, Any] = {}
        if published is not None:
            n, t0 = published["count"], published["t0"]
            ws, sse = start["ws_subscribed"] * n, start["sse_subscribed"] * n
            delivery = {
                "ws": delivery_stats([self.ws_step], ws, t0),
                "sse": delivery_stats([self.sse_step], sse, t0),
                "all": delivery_stats([self.ws_step, self.sse_step], ws + sse, t0),
            }
            delivery["sse"]["gaps"] = sum(c.seqs.gaps for c in self.sse_clients)
            published = {**published, "mode": args.publish}
        servers = [
            {"pid": pid, **{f"rss_{label}_kib": rss[pid] for label, rss in self.rss.items()}}
            for pid in args.server_pid
        ]
        return {
            "config": {
                k: getattr(args, k)
                for k in ("url", "protocol", "stream", "ws", "sse", "rate", "duration", "warmup")
            },
            "connections": {
                "ws_requested": args.ws,
                "sse_requested": args.sse,
                "ws_failed": sum(c.failed for c in self.ws_clients),
                "sse_failed": self.sse_failed,
                "warm": warm,
                "start": start,
                "end": end,
                "held": end["ws_held"] + end["sse_held"],
                "open_seconds": round(opened, 2),
                "ws_closes": {
                    key: sum(c.closes.get(key, 0) for c in self.ws_clients)
                    for key in {k for c in self.ws_clients for k in c.closes}
                },
                "sse_acknowledged": sum(c.acked for c in self.sse_clients),
                "sse_ack_errors": sum(c.ack_errors for c in self.sse_clients),
            },
            "publish": published,
            "delivery": delivery,
            "servers": servers,
            "rss": self.rss_summary(warm, start),
            "errors": self.errors[:20],
        }

    def rss_summary(self, warm: dict[str, int], start: dict[str, int]) -> dict[str, Any]:
        """Growth per connection from the baseline (after the warm-up, if any) to ``held``."""
        held = self.rss.get("held", {})
        if not held or None in held.values():
            return {}
        base_label = "warm" if "warm" in self.rss else "before"
        base = self.rss[base_label]
        conns = start["ws_subscribed"] + start["sse_subscribed"]
        new = conns - (
            warm["ws_subscribed"] + warm["sse_subscribed"] if base_label == "warm" else 0
        )
        total = sum(v for v in held.values() if v)
        growth = total - sum(v for v in base.values() if v)
        return {
            "baseline": base_label,
            "held_kib": total,
            "growth_kib": growth,
            "connections_measured": new,
            "per_connection_kib": round(growth / new, 2) if new > 0 else None,
            "whole_process_per_connection_kib": round(total / conns, 1) if conns else None,
        }

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
        for client in self.ws_clients:
            client.close_all()
        await asyncio.gather(*(c.close() for c in self.sse_clients))
        for conn in self.http:
            await conn.close()
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Apply the load described by ``args`` (see ``parse_args``) and return the report."""
    load = LoadRun(args)
    try:
        return await load.run()
    finally:
        await load.close()


# --- the report ----------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _kib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}".removesuffix(".0")


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: connections and deliveries by transport, then server RSS."""
    cfg, conns = report["config"], report["connections"]
    start, end = conns["start"], conns["end"]
    lines = [
        "## Load",
        "",
        f"{cfg['ws']} WebSocket and {cfg['sse']} SSE clients ({cfg['protocol']}) on "
        f"`{cfg['stream']}` over {', '.join(cfg['url'])}; opened in {conns['open_seconds']} s.",
    ]
    published = report["publish"]
    if published is not None:
        lines.append(
            f"Published {published['count']:,} events ({published['mode']}) at "
            f"{published['count'] / published['seconds']:.1f}/s (target {cfg['rate']:g}); "
            f"publish call p50 {_ms(published['call_p50_ms'])} ms, p99 "
            f"{_ms(published['call_p99_ms'])} ms; {published['errors']} errors"
            + (f" (first: {published['first_error']})" if published["errors"] else "")
            + "."
        )
    lines += [
        "",
        "| | WebSocket | SSE | all |",
        "|---|---:|---:|---:|",
        f"| subscribed | {start['ws_subscribed']} | {start['sse_subscribed']} "
        f"| {start['ws_subscribed'] + start['sse_subscribed']} |",
        f"| held at the end | {end['ws_held']} | {end['sse_held']} | {conns['held']} |",
        f"| not subscribed | {cfg['ws'] - start['ws_subscribed']} "
        f"| {cfg['sse'] - start['sse_subscribed']} | |",
    ]
    if published is not None:
        d = report["delivery"]
        rows: list[tuple[str, str, Callable[[Any], str]]] = [
            ("expected deliveries", "expected", "{:,}".format),
            ("delivered", "delivered", "{:,}".format),
            ("deliveries/s", "deliveries_per_s", "{:,.0f}".format),
            ("loss", "loss", "{:,}".format),
            ("duplicates", "duplicates", "{:,}".format),
            ("latency p50 ms", "p50_ms", _ms),
            ("latency p99 ms", "p99_ms", _ms),
            ("latency max ms", "max_ms", _ms),
        ]
        for label, key, fmt in rows:
            cells = " | ".join(fmt(d[k][key]) for k in ("ws", "sse", "all"))
            lines.append(f"| {label} | {cells} |")
    if report["servers"]:
        labels = [k for k in report["servers"][0] if k.startswith("rss_")]
        lines += [
            "",
            "| server pid | " + " | ".join(k[4:-4].replace("_", " ") for k in labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for server in report["servers"]:
            cells = " | ".join(_kib(server[k]) for k in labels)
            lines.append(f"| {server['pid']} | {cells} |")
        rss = report["rss"]
        if rss:
            lines += [
                "",
                f"RSS (KiB) grew by {rss['growth_kib']:,} from `{rss['baseline']}` to `held` for "
                f"{rss['connections_measured']} connections: **"
                f"{_kib(rss['per_connection_kib'])} KiB per connection** "
                f"({_kib(rss['whole_process_per_connection_kib'])} KiB of the whole RSS per "
                "connection held).",
            ]
    if report["errors"]:
        lines += ["", "Errors:", *(f"- {e}" for e in report["errors"])]
    return "\n".join(lines) + "\n"


def clean(report: dict[str, Any]) -> bool:
    """Everything held, nothing lost or duplicated."""
    conns = report["connections"]
    requested = conns["ws_requested"] + conns["sse_requested"]
    d = report["delivery"].get("all", {})
    return conns["held"] == requested and not d.get("loss") and not d.get("duplicates")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="WebSocket and SSE clients, and a paced publisher, against running servers."
    )
    parser.add_argument(
        "--url",
        action="append",
        required=True,
        help="a server's base URL, e.g. http://127.0.0.1:8000 (repeat for several)",
    )
    parser.add_argument("--protocol", choices=sorted(WS_PATHS), default="realtime")
    parser.add_argument("--ws", type=int, default=100, help="WebSocket clients (default 100)")
    parser.add_argument("--sse", type=int, default=0, help="SSE clients (realtime only)")
    parser.add_argument("--stream", default="public:chat:load")
    parser.add_argument("--rate", type=float, default=10.0, help="events/s; 0 holds idle")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to publish/hold")
    parser.add_argument("--drain", type=float, default=5.0, help="most seconds to wait after")
    parser.add_argument("--publish", choices=["api", "direct"], default="api")
    parser.add_argument(
        "--token", default=os.environ.get("REALTIME_API_TOKEN"), help="server token for the API"
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="a server process whose RSS to report (repeat for several)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="connections of each kind opened before the baseline RSS reading (default 0)",
    )
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before RSS readings")
    parser.add_argument("--ws-path", help="WebSocket path (default per --protocol)")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--json", help="also write the report as JSON here")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 unless all held, no loss, no duplicates"
    )
    args = parser.parse_args(argv)
    if args.protocol == "naive" and args.sse:
        parser.error("the naive consumer has no SSE endpoint")
    if args.protocol == "naive" and args.rate > 0 and args.publish != "direct":
        parser.error("the naive approach has no REST API: use --publish direct")
    limits: list[tuple[float, float, float, str]] = [
        (args.ws, 0, MAX_CONNECTIONS, "--ws"),
        (args.sse, 0, MAX_CONNECTIONS // 2, "--sse"),
        (args.ws + args.sse, 1, MAX_CONNECTIONS, "--ws + --sse"),
        (args.rate, 0, 5000, "--rate"),
        (args.duration, 0, 600, "--duration"),
        (args.drain, 0, 120, "--drain"),
        (args.warmup, 0, 1000, "--warmup"),
        (args.settle, 0, 60, "--settle"),
        (args.connect_timeout, 1, 600, "--connect-timeout"),
    ]
    check_bounds(parser, limits)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        raise_fd_limit(args.ws + args.sse)
        report = asyncio.run(run(args))
    except (BenchError, LoadError) as exc:
        log(f"load failed: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(markdown(report), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 1 if args.strict and not clean(report) else 0


if __name__ == "__main__":
    sys.exit(main())
