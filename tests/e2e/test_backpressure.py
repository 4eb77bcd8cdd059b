"""Backpressure on a real daphne: a client that subscribes and then never reads its socket,
while 50,000 events are published, cannot grow the server's memory beyond its flow-control
window, does not hold up the other subscribers, and loses nothing when it comes back.

Daphne buffers every write without limit (Twisted's transport queues whatever the socket does
not take) and tells the application nothing, so without ``OUTBOX_WINDOW`` the frames for a
client that stopped reading would pile up in the process for ever. The bound this test checks
is documented in docs/protocol.md ("Memory bound", under "Flow control").

The events are published by a separate process (``python -m tests.e2e.test_backpressure``, see
``publish_burst``), as an application's workers would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from realtime.conf import DEFAULTS
from tests.servers import ROOT, Server, WSClient, settings_env

WS = "/realtime/ws/"
METRICS_TOKEN = "backpressure-metrics"
STREAM = "public:backpressure"
WARMUP = 2_000  # published before the baseline is taken, to the readers only
EVENTS = 50_000  # the burst the never-reading client sits through
BATCH = 250  # events stored per transaction by the publisher, then fanned out
TEXT = "lorem ipsum dolor sit amet " * 5  # with the envelope, a frame of about 270 bytes
ACK_EVERY = 1_000  # frames between a reader's `received` (the protocol asks for half a window)
READERS = 2
# Bytes the server may hold per unacknowledged frame beyond the frame itself: the WebSocket
# header (2-4), the bytes object in Twisted's write queue (33 + an 8-byte list slot) and the
# window's mark (a 32-byte int + an 8-byte deque slot), rounded up.
FRAME_OVERHEAD = 128
# What 50,000 events through the process cost whatever the clients do: allocator growth and
# what the readers have in flight (they acknowledge every 1,000 frames). Measured after the
# warm-up, the whole burst grows daphne's peak RSS by 1.1-2.7 MiB with the window (the
# never-reading client's share included: some of its window sits in the kernel's socket
# buffer instead), and by 15-16 MiB without it (the control below: 50,000 frames of ~310
# bytes), which this allowance plus one window (~3.8 MB) does not let through.
ALLOWANCE = 4 * 1024 * 1024
RCVBUF = 4096  # the raw client's receive buffer (Linux doubles it): the kernel absorbs ~30 frames
LAG_BOUND = 15.0  # seconds from an event's storing to a reader: never held up by the slow client
TEST_TIMEOUT = 300  # the test takes 50-110 s on a shared, busy 2-core machine
PUBLISH_TIMEOUT = 200

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)


# --------------------------------------------------------------------------------------
# Measuring the server
# --------------------------------------------------------------------------------------


def proc_status(pid: int, name: str) -> int:
    """A ``/proc/<pid>/status`` field in bytes (``VmRSS``: now; ``VmHWM``: peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> None:
    """Make ``VmHWM`` start again from the current RSS (Linux ``clear_refs``, value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def slow_consumers(server: Server) -> float:
    """The server's ``realtime_slow_consumer_drops_total``: connections it found too slow."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        response = await http.get(
            "/realtime/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
    assert response.status_code == 200, response.text
    label = f':{server.pid}"'  # server="<hostname>:<pid>"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line.startswith("realtime_slow_consumer_drops_total{") and label in line
    )


def mib(size: float) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


# --------------------------------------------------------------------------------------
# A client that stops reading
# --------------------------------------------------------------------------------------


class RawClient:
    """A WebSocket client on a bare socket, so nothing reads on its behalf.

    Client libraries read in the background (into their own queues); this one reads only
    when told to, and its small receive buffer keeps the kernel from absorbing the burst.
    Blocking calls: run them in a thread.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect(), so the TCP window announced to the server is this small too.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.settimeout(5)
        self.buffer = bytearray()
        self.events: list[int] = []  # seqs of the event frames read
        self.close_code: int | None = None

    def open(self) -> dict[str, Any]:
        """Connect and do the opening handshake; the ``welcome`` frame."""
        self.sock.connect(("127.0.0.1", self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {WS} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://127.0.0.1:{self.port}\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed during the handshake: {bytes(self.buffer)!r}"
            self.buffer += chunk
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        status, *lines = head.decode("latin-1").split("\r\n")
        assert status.startswith("HTTP/1.1 101"), head
        pairs = (line.split(": ", 1) for line in lines)
        headers = {name.lower(): value for name, value in pairs}
        digest = hashlib.sha1(f"{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11".encode()).digest()
        assert headers.get("sec-websocket-accept") == base64.b64encode(digest).decode(), head
        return self.recv_json()

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send_json(self, obj: Any) -> None:
        """One masked text frame, as clients must send."""
        payload = json.dumps(obj).encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    async def keep_alive(self, interval: float = 5) -> None:
        """Send the protocol's ``ping`` every ``interval`` seconds until the connection fails.

        So the server hears from it as from a live client (neither ``HEARTBEAT_TIMEOUT`` nor
        daphne's ping timeout ends it): only flow control can tell that it does not read.
        """
        with contextlib.suppress(OSError):
            while True:
                await asyncio.sleep(interval)
                await asyncio.to_thread(self.send_json, {"type": "ping"})

    def recv_json(self) -> dict[str, Any]:
        """The next text frame, reading the socket as needed."""
        while True:
            frame = self._next_frame()
            if frame is not None:
                opcode, payload = frame
                assert opcode == 1, f"expected a text frame, got opcode {opcode}: {payload!r}"
                decoded: dict[str, Any] = json.loads(payload)
                return decoded
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed while waiting for a frame"
            self.buffer += chunk

    def drain(self, timeout: float) -> str:
        """Read what is left after the server gave up on us; how the connection ended.

        Frames that fully arrived are parsed into ``events`` (and ``close_code``).
        """
        self.sock.settimeout(timeout)
        ended = "still open"
        try:
            while chunk := self.sock.recv(65536):
                self.buffer += chunk
            ended = "closed"
        except ConnectionResetError:
            ended = "reset"
        except TimeoutError:
            pass
        while (frame := self._next_frame()) is not None:
            opcode, payload = frame
            if opcode == 8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if payload else None
            elif opcode == 1:
                decoded = json.loads(payload)
                assert decoded["type"] in ("event", "pong"), decoded
                if decoded["type"] == "event":
                    self.events.append(decoded["seq"])
        return ended

    def _next_frame(self) -> tuple[int, bytes] | None:
        """Take one complete (unmasked, unfragmented) server frame off the buffer."""
        if len(self.buffer) < 2:
            return None
        assert self.buffer[0] & 0x80, "fragmented frames are not expected"
        opcode, length, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        if length == 126:
            if len(self.buffer) < 4:
                return None
            length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif length == 127:
            if len(self.buffer) < 10:
                return None
            length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
        if len(self.buffer) < offset + length:
            return None
        payload = bytes(self.buffer[offset : offset + length])
        del self.buffer[: offset + length]
        return opcode, payload

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------------------
# Clients that keep up
# --------------------------------------------------------------------------------------


@dataclass
class Reader:
    """A subscriber that reads every frame and acknowledges as the protocol asks."""

    ws: WSClient
    seqs: list[int] = field(default_factory=list)
    frames: int = 0  # every frame received, welcome included: what `received` counts
    max_lag: float = 0.0  # seconds from an event's ts to its arrival, sampled
    largest_frame: int = 0

    def __post_init__(self) -> None:
        self.frames = len(self.ws.received)

    async def read_until(self, last_seq: int, timeout: float = 30) -> None:
        """Read until the event ``last_seq``; AssertionError if the stream stalls ``timeout``
        seconds."""
        connection = self.ws.connection
        while not self.seqs or self.seqs[-1] < last_seq:
            try:
                async with asyncio.timeout(timeout):
                    raw = await connection.recv()
            except TimeoutError:
                raise AssertionError(
                    f"no frame within {timeout:g} s; last seq {self.seqs[-1:]} of {last_seq}"
                ) from None
            self.frames += 1
            frame = json.loads(raw)
            if frame["type"] == "event":
                self.seqs.append(frame["seq"])
                if frame["seq"] % 100 == 0:
                    sent = datetime.fromisoformat(frame["ts"]).timestamp()
                    self.max_lag = max(self.max_lag, time.time() - sent)
                    self.largest_frame = max(self.largest_frame, len(raw))
            else:
                assert frame["type"] != "error", frame
            if self.frames % ACK_EVERY == 0:
                await connection.send(json.dumps({"type": "received", "count": self.frames}))


async def subscribe(ws: WSClient, **fields: Any) -> dict[str, Any]:
    await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_json({"type": "subscribe", "stream": STREAM, **fields})
    frame: dict[str, Any] = await ws.recv_until(lambda f: f["type"] == "subscribed")
    return frame


# --------------------------------------------------------------------------------------
# The publisher process
# --------------------------------------------------------------------------------------


async def publish(env: dict[str, str], first: int, count: int) -> dict[str, Any]:
    """Publish events ``first + 1 .. first + count`` from another process; its report."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.e2e.test_backpressure",
        "--first",
        str(first),
        "--count",
        str(count),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode(errors="replace")
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report


def publish_burst(first: int, count: int) -> None:
    """Publish ``count`` events to ``STREAM`` as fast as this process can; print a report.

    ``realtime.apublish_many``, ``BATCH`` events to a call: one transaction each, fanned out
    in layer messages of a hundred events. ``publish`` in a loop costs about 1.5 ms of CPU
    per event here; on a 2-core machine shared with the server that would double the test.
    """
    import django

    django.setup()
    asyncio.run(_publish_burst(first, count))


async def _publish_burst(first: int, count: int) -> None:
    import realtime

    started = time.monotonic()
    for start in range(first, first + count, BATCH):
        size = min(BATCH, first + count - start)
        events = [("tick", {"n": seq, "text": TEXT}) for seq in range(start + 1, start + size + 1)]
        stored = await realtime.apublish_many(STREAM, events)
        assert stored[-1].seq == start + size, (stored[-1].seq, start + size)
    seconds = time.monotonic() - started
    print(json.dumps({"count": count, "seconds": seconds}), flush=True)


# --------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------


@dataclass
class RssSampler:
    """Samples a process's RSS in the background, for the report (the bound uses VmHWM)."""

    pid: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        started = time.monotonic()
        while True:
            self.samples.append((time.monotonic() - started, proc_status(self.pid, "VmRSS")))
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def window_cost(window: dict[str, int], frame_size: int) -> int:
    """Most bytes one connection's unacknowledged frames can hold in the server."""
    messages, size = window["messages"], window["bytes"]
    return min(messages * (frame_size + FRAME_OVERHEAD), size + messages * FRAME_OVERHEAD)


@pytest.mark.parametrize(
    "window",
    [
        pytest.param(None, id="default-window"),
        # The control: no window to speak of, so the bound must fail (it shows the bound
        # means something on this machine).
        pytest.param({"messages": 10**9, "bytes": 10**12}, id="control-without-window"),
    ],
)
async def test_a_client_that_never_reads_costs_at_most_its_window(
    daphne_server: Callable[..., Server], window: dict[str, int] | None
) -> None:
    """The window is what bounds a stuck client's cost, and it costs the others nothing."""
    overrides: dict[str, Any] = {
        # Everything stays in history, for the resume.
        "RETENTION": {"*": {"max_events": None, "max_age": None}},
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    if window is not None:
        overrides["OUTBOX_WINDOW"] = window
    server = daphne_server(settings_env(overrides))
    publisher_env = dict(server.env)  # the same database, Redis and settings
    figures: dict[str, Any] = {}
    sampler = RssSampler(server.pid)
    raw = RawClient(server.port)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(raw.close)
        # The figures measured, shown with -s and with a failure.
        stack.callback(lambda: print(f"\nbackpressure figures: {json.dumps(figures)}"))
        stack.push_async_callback(sampler.stop)
        readers = []
        for _ in range(READERS):
            ws = await stack.enter_async_context(WSClient(server.ws_url + WS))
            await subscribe(ws)
            readers.append(Reader(ws))

        # Warm-up: every code path the burst takes has run once before the baseline.
        warmup = asyncio.gather(*(reader.read_until(WARMUP) for reader in readers))
        stack.callback(warmup.cancel)  # a no-op unless the test failed under it
        await publish(publisher_env, 0, WARMUP)
        await warmup

        welcome = await asyncio.to_thread(raw.open)
        assert welcome["window"] == (window or DEFAULTS["OUTBOX_WINDOW"]), welcome
        await asyncio.to_thread(raw.send_json, {"type": "subscribe", "stream": STREAM})
        subscribed = await asyncio.to_thread(raw.recv_json)
        assert subscribed["type"] == "subscribed" and subscribed["seq"] == WARMUP, subscribed
        # From here on the raw client does not read its socket; it only sends pings.
        pinging = asyncio.create_task(raw.keep_alive())
        stack.push_async_callback(cancel, pinging)

        await asyncio.sleep(0.5)  # let the process settle after the handshake
        baseline = proc_status(server.pid, "VmRSS")
        reset_peak_rss(server.pid)
        sampler.start()
        last = WARMUP + EVENTS
        started = time.monotonic()
        reading = asyncio.gather(*(reader.read_until(last) for reader in readers))
        stack.callback(reading.cancel)
        report = await publish(publisher_env, WARMUP, EVENTS)
        published = time.monotonic() - started
        await reading
        delivered = time.monotonic() - started
        peak = proc_status(server.pid, "VmHWM")
        await sampler.stop()

        # The readers got everything, in order, exactly once, and were not held up.
        for reader in readers:
            assert reader.seqs == list(range(1, last + 1))
            assert reader.max_lag < LAG_BOUND, reader.max_lag
        assert delivered - published < LAG_BOUND, (published, delivered)

        # The server's memory: its baseline, one window for the client that does not read,
        # and the allowance for the rest.
        frame_size = max(reader.largest_frame for reader in readers)
        default_cost = window_cost(DEFAULTS["OUTBOX_WINDOW"], frame_size)
        bound = baseline + default_cost + ALLOWANCE
        figures.update(
            window=welcome["window"],
            frame=frame_size,
            publish_s=round(published, 1),
            publisher_s=round(report["seconds"], 1),
            delivered_s=round(delivered, 1),
            max_lag_s=round(max(reader.max_lag for reader in readers), 2),
            rss_baseline=mib(baseline),
            rss_peak=mib(peak),
            rss_growth=mib(peak - baseline),
            rss_bound=mib(bound),
            rss_without_window_estimate=mib(baseline + EVENTS * (frame_size + FRAME_OVERHEAD)),
            rss_every_5s=[mib(rss) for _, rss in sampler.samples[::10]],
        )
        if window is not None:
            assert peak > bound, figures  # the control: the bound means something
            return
        assert peak <= bound, figures

        # The server gave up on the raw client for being slow (the readers never were). Its
        # 4409 close frame is queued behind the unread window, so it never gets through:
        # daphne waits 1 s for the closing handshake, then aborts the TCP connection.
        assert await slow_consumers(server) == 1
        log = server.log()
        assert any(
            line.startswith(f"127.0.0.1:{raw.local_port} ") and "WSDISCONNECT" in line
            for line in log.splitlines()
        ), log[-3000:]
        await cancel(pinging)
        ended = await asyncio.to_thread(raw.drain, 5)
        assert ended in ("reset", "closed"), ended
        assert raw.close_code in (None, 4409), raw.close_code
        # What the kernel had buffered is the start of the burst, in order.
        read = raw.events
        assert read == list(range(WARMUP + 1, WARMUP + 1 + len(read)))
        assert len(read) < DEFAULTS["OUTBOX_WINDOW"]["messages"]
        figures["raw_read_before_cut"] = len(read)

        # It resumes from the last event it read and gets every other one, once, in order,
        # at its own pace: the replay waits for its acknowledgements.
        since = read[-1] if read else subscribed["seq"]
        # Its memory is reported, not bounded: here the database driver's caches (SQLite's
        # page cache, one per thread reading) dwarf what the window holds.
        reset_peak_rss(server.pid)
        resume_baseline = proc_status(server.pid, "VmRSS")
        started = time.monotonic()
        again = await stack.enter_async_context(WSClient(server.ws_url + WS))
        resumed = await subscribe(again, since=since, epoch=subscribed["epoch"])
        assert resumed["recovered"] is True, resumed
        resumer = Reader(again)
        await resumer.read_until(last)
        assert read + resumer.seqs == list(range(WARMUP + 1, last + 1))
        figures["resume_s"] = round(time.monotonic() - started, 1)
        resume_peak = proc_status(server.pid, "VmHWM")
        figures["rss_resume_growth"] = mib(resume_peak - resume_baseline)
        assert "Traceback" not in server.log(), server.log()[-3000:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Publish the burst of test_backpressure.")
    parser.add_argument("--first", type=int, required=True, help="seq the stream is at")
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    publish_burst(args.first, args.count)


if __name__ == "__main__":
    main()
