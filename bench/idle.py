"""Idle connections and resume: this app against the naive Channels approach, side by side.

``make bench-idle`` runs ``python -m bench.idle``, which starts its own Redis and
SQLite database (``bench.procs``, as ``bench.fanout`` does) and measures:

* **idle connections**: for each of naive WebSocket (``bench.naive_asgi``), realtime
  WebSocket and realtime SSE, ONE fresh daphne process, and ``bench.load`` opening
  ``--connections`` subscribed clients against it that then stay idle (the first
  ``--warmup`` of them before the baseline reading, so one-off costs such as imports, the
  hub and database connections are not charged to the connections). Reported: connections
  held after ``--hold`` seconds, and the process's RSS growth per connection;
* **resume**: a client subscribes to a fresh stream, disconnects, ``--events`` events are
  published (``realtime.apublish_many``; for naive, a ``group_send`` each), and the client
  reconnects with its position (``since``, or the SSE cursor in ``Last-Event-ID``).
  Reported: the time until every missed event arrived, each once and in seq order, with
  ``received`` acknowledgements as the protocol asks. The naive consumer has no history; its
  client reconnects all the same and counts what arrives.

Progress goes to stderr; the Markdown summary to stdout (JSON to ``--json PATH``).
Everything listens on 127.0.0.1, counts and waits are bounded, and every process started is
stopped on the way out (they also get SIGKILL if this process dies).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.client import ACK_EVERY, Step
from bench.fanout import Bench
from bench.load import LoadError, SeqTracker, SSEClient
from bench.procs import (
    BenchError,
    Proc,
    check_bounds,
    free_port,
    log,
    raise_fd_limit,
    run_tool,
    write_json,
)

APPS = {"realtime": "project.asgi:application", "naive": "bench.naive_asgi:application"}
WS_PATHS = {"realtime": "/realtime/ws/", "naive": "/naive/ws/"}
IDLE_VARIANTS = (("naive", "ws"), ("realtime", "ws"), ("realtime", "sse"))
LOAD_TIMEOUT = 900.0  # seconds for one idle run of bench.load, opening included
RESUME_TIMEOUT = 120.0
WARMUP_EVENTS = 200  # resumed once per variant before the measured resume
PUBLISH_CHUNK = 1000  # events per apublish_many call (one transaction each)
NAIVE_CONCURRENCY = 50  # group_send calls in flight when publishing to the naive group
TEXT = WSMsgType.TEXT


class ResumeClient(WSListener):  # type: ignore[misc]
    """One WebSocket subscriber: welcome, subscribe (from a position), count seqs, acknowledge.

    Speaks the app's protocol and, with ``naive``, the naive consumer's (which answers
    ``subscribed`` without a position and ignores ``since`` and ``received``).
    """

    def __init__(
        self, naive: bool, stream: str, since: int | None, epoch: str | None, want: int
    ) -> None:
        super().__init__()
        frame: dict[str, Any] = {"type": "subscribe", "id": 1, "stream": stream}
        if since is not None:
            frame.update(since=since, epoch=epoch)
        self.subscribe = json.dumps(frame).encode()
        self.naive = naive
        self.seqs = SeqTracker(since or 0)
        self.want = want  # ``done`` is set once this many events arrived
        self.frames = self.acked = 0
        self.head: int | None = None
        self.epoch: str | None = None
        self.subscribed_at = 0.0
        self.subscribed = asyncio.Event()
        self.done = asyncio.Event()
        self.closed = asyncio.Event()

    def on_ws_connected(self, transport: WSTransport) -> None:
        if self.naive:
            transport.send(TEXT, self.subscribe)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                transport.disconnect()
            return
        msg = json.loads(frame.get_payload_as_bytes())
        msgs = msg["frames"] if msg["type"] == "batch" else (msg,)
        self.frames += len(msgs)
        now = time.time()  # the clock the SSE client uses too
        for one in msgs:
            kind = one["type"]
            if kind == "event":
                self.seqs.see(one["seq"], now)
            elif kind == "welcome":
                transport.send(TEXT, self.subscribe)
            elif kind == "subscribed":
                self.head, self.epoch = one.get("seq"), one.get("epoch")
                self.subscribed_at = now
                self.subscribed.set()
        if self.frames - self.acked >= ACK_EVERY and not self.naive:
            self.acked = self.frames
            transport.send(TEXT, b'{"type":"received","count":%d}' % self.frames)
        if self.want and self.seqs.count >= self.want:
            self.done.set()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed.set()


async def open_ws(
    url: str,
    naive: bool,
    stream: str,
    since: int | None = None,
    epoch: str | None = None,
    want: int = 0,
) -> tuple[WSTransport, ResumeClient]:
    """A subscribed ``ResumeClient`` (waits for ``subscribed``)."""
    origin = "http://" + url.split("://", 1)[1].split("/", 1)[0]
    transport, client = await ws_connect(
        lambda: ResumeClient(naive, stream, since, epoch, want),
        url,
        extra_headers={"Origin": origin},
        websocket_handshake_timeout=10,
    )
    if client is None:
        raise BenchError(f"the WebSocket handshake with {url} failed")
    async with asyncio.timeout(RESUME_TIMEOUT):
        await client.subscribed.wait()
    return transport, client


async def close_ws(transport: WSTransport, client: ResumeClient) -> None:
    transport.send_close()
    transport.disconnect()
    async with asyncio.timeout(10):
        await client.closed.wait()


class IdleBench(Bench):
    """``bench.fanout``'s directory, environment and quiet-machine wait; other measurements."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        # Every client comes from 127.0.0.1, and the rows of the servers stopped earlier in
        # the run still count until their lease expires: no cap per address here.
        self.procs.env["REALTIME_MAX_CONNECTIONS_PER_IP"] = str(10**9)

    async def quiet(self, name: str) -> float:
        """Wait (at most ``--wait-quiet`` s) for other load on the machine to stop."""
        self.quiet_budget = self.args.wait_quiet
        return await self.wait_quiet(name)

    async def server(self, approach: str, name: str) -> tuple[Proc, int]:
        port = free_port()
        argv = (sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port))
        proc = await self.procs.spawn(name, *argv, APPS[approach])
        await self.procs.wait_listening(proc, port)
        return proc, port

    # --- idle connections ----------------------------------------------------------------
    async def idle(self, approach: str, transport: str) -> dict[str, Any]:
        args = self.args
        name = f"idle-{approach}-{transport}"
        server, port = await self.server(approach, f"{name}-server")
        out = self.tmp / f"{name}.json"
        try:
            log(f"[{name}] {args.connections} idle {transport} connections on pid {server.pid}")
            load = await self.procs.spawn(
                f"{name}-load",
                *(sys.executable, "-m", "bench.load", "--url", f"http://127.0.0.1:{port}"),
                *("--protocol", approach, "--ws", "0", "--sse", "0"),
                *(f"--{transport}", str(args.connections)),
                *("--rate", "0", "--duration", str(args.hold), "--warmup", str(args.warmup)),
                *("--settle", str(args.settle), "--server-pid", str(server.pid)),
                *("--stream", "public:idle", "--connect-timeout", "120", "--json", str(out)),
            )
            began = time.monotonic()
            while load.process.returncode is None:
                if time.monotonic() - began > LOAD_TIMEOUT:
                    raise BenchError(f"{name}: bench.load ran over {LOAD_TIMEOUT:g} s")
                try:
                    await asyncio.wait_for(load.process.wait(), 15)
                except TimeoutError:
                    log(f"[{name}] {time.monotonic() - began:.0f} s:{load.tail(1).strip()}")
            if load.process.returncode != 0 or not out.exists():
                raise BenchError(f"{name}: bench.load failed:\n{load.tail()}")
            report = json.loads(out.read_text())
        finally:
            await self.procs.stop([server])
        rss = report["rss"]
        conns = report["connections"]
        result = {
            "requested": args.connections,
            "subscribed": conns["start"][f"{transport}_subscribed"],
            "held": conns["held"],
            "open_seconds": conns["open_seconds"],
            "rss_before_kib": report["servers"][0]["rss_before_kib"],
            "rss_warm_kib": report["servers"][0].get("rss_warm_kib"),
            "rss_held_kib": report["servers"][0]["rss_held_kib"],
            "per_connection_kib": rss.get("per_connection_kib"),
            "connections_measured": rss.get("connections_measured"),
            "errors": report["errors"],
        }
        log(
            f"[{name}] held {result['held']}/{args.connections}, "
            f"{result['per_connection_kib']} KiB per connection"
        )
        return result

    # --- resume --------------------------------------------------------------------------
    async def publish(self, approach: str, stream: str, n: int) -> float:
        """Publish ``n`` events on ``stream``; returns the seconds it took."""
        import realtime
        from bench import naive

        began = time.perf_counter()
        if approach == "realtime":
            for first in range(0, n, PUBLISH_CHUNK):
                batch = range(first, min(n, first + PUBLISH_CHUNK))
                data = [("resume.tick", {"t": time.time(), "n": i, "k": 0}) for i in batch]
                await realtime.apublish_many(stream, data)
        else:
            sem = asyncio.Semaphore(NAIVE_CONCURRENCY)

            async def one(i: int) -> None:
                async with sem:
                    await naive.apublish(stream, "resume.tick", {"t": time.time(), "n": i}, i + 1)

            await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - began

    async def resume_ws(
        self, approach: str, port: int, stream: str, n: int, batch: bool, wait: float
    ) -> dict[str, Any]:
        """Subscribe, leave, let ``n`` events be published, come back with ``since``."""
        naive = approach == "naive"
        url = f"ws://127.0.0.1:{port}{WS_PATHS[approach]}" + ("?batch=1" if batch else "")
        transport, first = await open_ws(url, naive, stream)
        head, epoch = first.head or 0, first.epoch
        await close_ws(transport, first)
        await asyncio.sleep(0.5)  # let the server see the disconnect
        published = await self.publish(approach, stream, n)
        began = time.time()
        transport, client = await open_ws(url, naive, stream, since=head, epoch=epoch, want=n)
        try:
            async with asyncio.timeout(wait):
                await client.done.wait()
        except TimeoutError:
            if not naive:
                log(f"[resume] {stream}: only {client.seqs.count}/{n} within {wait:g} s")
        finally:
            await close_ws(transport, client)
        return self.resume_result(client.seqs, n, head, published, began, client.subscribed_at)

    async def resume_sse(self, port: int, stream: str, n: int, wait: float) -> dict[str, Any]:
        """The same over SSE: the position goes back in a ``Last-Event-ID`` cursor."""
        from realtime.protocol import encode_cursor

        base = f"http://127.0.0.1:{port}"
        first = SSEClient(base, stream, Step())
        await first.open(RESUME_TIMEOUT)
        head, epoch = first.seqs.last, first.epoch
        await first.close()
        assert epoch is not None
        await asyncio.sleep(0.5)
        published = await self.publish("realtime", stream, n)
        began = time.time()
        cursor = encode_cursor({stream: (epoch, head)})
        client = SSEClient(base, stream, Step(), cursor=cursor, resume_from=head)
        client.want = n
        try:
            await client.open(RESUME_TIMEOUT)
            async with asyncio.timeout(wait):
                await client.done.wait()
        except TimeoutError:
            log(f"[resume] {stream}: only {client.seqs.count}/{n} within {wait:g} s")
        finally:
            await client.close()
        return self.resume_result(client.seqs, n, head, published, began, client.subscribed_at)

    @staticmethod
    def resume_result(
        seqs: SeqTracker, n: int, head: int, published: float, began: float, subscribed: float
    ) -> dict[str, Any]:
        exact = seqs.count == n and not seqs.dups and not seqs.gaps and seqs.last == head + n
        total = seqs.last_at - began if seqs.count else None
        return {
            "missed": n,
            "delivered": seqs.count,
            "duplicates": seqs.dups,
            "gaps": seqs.gaps,
            "exact": exact,
            "publish_seconds": round(published, 2),
            "subscribed_s": round(subscribed - began, 3) if subscribed else None,
            "first_event_s": round(seqs.first_at - began, 3) if seqs.count else None,
            "all_s": round(total, 3) if total is not None and seqs.count == n else None,
            "events_per_s": round(seqs.count / total) if total and seqs.count == n else None,
        }

    async def resume_variant(self, key: str, port: int, n: int, measured: bool) -> dict[str, Any]:
        approach, transport = key.split("-", 1)
        stream = f"public:resume:{key}" + ("" if measured else ":warm-up")
        naive_wait = self.args.naive_wait if measured else 1.0
        if transport == "sse":
            return await self.resume_sse(port, stream, n, RESUME_TIMEOUT)
        batch, wait = transport == "ws-batch", naive_wait if approach == "naive" else RESUME_TIMEOUT
        return await self.resume_ws(approach, port, stream, n, batch, wait)

    async def resume(self) -> dict[str, Any]:
        """Each variant twice: a small warm-up (first queries, imports), then measured."""
        os.environ.update(self.procs.env)
        import django

        django.setup()
        results: dict[str, Any] = {}
        for approach, keys in (
            ("realtime", ("realtime-ws-batch", "realtime-ws", "realtime-sse")),
            ("naive", ("naive-ws",)),
        ):
            server, port = await self.server(approach, f"resume-{approach}-server")
            try:
                for key in keys:
                    await self.resume_variant(key, port, WARMUP_EVENTS, measured=False)
                for key in keys:
                    log(f"[resume] {key}: {self.args.events:,} events missed...")
                    results[key] = await self.resume_variant(key, port, self.args.events, True)
                    log(f"[resume] {key}: {results[key]}")
            finally:
                await self.procs.stop([server])
        return results

    async def measure(self) -> dict[str, Any]:
        """``run``, then every process stopped: also on SIGTERM, which cancels like Ctrl-C."""
        this = asyncio.current_task()
        assert this is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
        try:
            return await self.run()
        finally:
            await self.cleanup()

    async def run(self) -> dict[str, Any]:
        await self.procs.start_redis()
        await self.procs.migrate()
        result: dict[str, Any] = {"config": vars(self.args) | {"json": None}, "idle": {}}
        if "idle" in self.args.scenarios:
            for approach, transport in IDLE_VARIANTS:
                key = f"{approach}-{transport}"
                idle = await self.quiet(f"idle {key}")
                try:
                    result["idle"][key] = await self.idle(approach, transport)
                    result["idle"][key]["background_cpu_pct"] = idle
                except BenchError as exc:
                    log(f"[idle {key}] FAILED: {exc}")
                    result["idle"][key] = {"error": str(exc).splitlines()[0]}
        if "resume" in self.args.scenarios:
            await self.quiet("resume")
            result["resume"] = await self.resume()
        return result


# --- the summary -----------------------------------------------------------------------------
def _cell(value: Any, fmt: str = "{:,}") -> str:
    return "-" if value is None else fmt.format(value)


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f} MiB"


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines: list[str] = []
    idle = result["idle"]
    if idle:
        names = {"naive-ws": "naive WebSocket", "realtime-ws": "realtime WebSocket"}
        names["realtime-sse"] = "realtime SSE"
        lines += [
            "## Idle connections",
            "",
            f"{cfg['connections']:,} subscribed, idle connections on ONE fresh daphne process "
            f"each; the first {cfg['warmup']} are opened before the baseline reading; RSS read "
            f"{cfg['settle']:g} s after the last connection opened.",
            "",
            "| | " + " | ".join(names[k] for k in idle) + " |",
            "|---|" + "---:|" * len(idle),
        ]
        rows = [
            ("connections held", lambda r: f"{r['held']:,} / {r['requested']:,}"),
            ("seconds to open them", lambda r: _cell(r["open_seconds"], "{:.1f}")),
            ("RSS before the first connection", lambda r: _mib(r["rss_before_kib"])),
            ("RSS after the warm-up", lambda r: _mib(r["rss_warm_kib"])),
            ("RSS holding all", lambda r: _mib(r["rss_held_kib"])),
            ("**RSS per idle connection**", lambda r: _cell(r["per_connection_kib"], "{:.1f} KiB")),
        ]
        for label, fmt in rows:
            cells = [fmt(r) if "error" not in r else "failed" for r in idle.values()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for key, r in idle.items():
            if r.get("error") or r.get("errors"):
                lines.append(f"\n{names[key]}: {r.get('error') or '; '.join(r['errors'][:3])}")
    resume = result.get("resume")
    if resume:
        names = {
            "naive-ws": "naive WebSocket",
            "realtime-ws-batch": "realtime WebSocket `?batch=1`",
            "realtime-ws": "realtime WebSocket",
            "realtime-sse": "realtime SSE",
        }
        order = [k for k in names if k in resume]
        lines += [
            *([""] if lines else []),
            f"## Resume of {cfg['events']:,} missed events",
            "",
            "| | " + " | ".join(names[k] for k in order) + " |",
            "|---|" + "---:|" * len(order),
        ]
        rows = [
            ("delivered", lambda r: f"{r['delivered']:,} / {r['missed']:,}"),
            (
                "each once, in order",
                lambda r: "yes" if r["exact"] else ("no" if r["delivered"] else "-"),
            ),
            ("reconnect to `subscribed`", lambda r: _cell(r["subscribed_s"], "{:.3f} s")),
            ("reconnect to first event", lambda r: _cell(r["first_event_s"], "{:.3f} s")),
            ("**reconnect to all delivered**", lambda r: _cell(r["all_s"], "{:.2f} s")),
            ("events/s", lambda r: _cell(r["events_per_s"])),
            ("publishing them took", lambda r: f"{r['publish_seconds']:.1f} s"),
        ]
        for label, fmt in rows:
            lines.append(f"| {label} | " + " | ".join(fmt(resume[k]) for k in order) + " |")
        if "naive-ws" in resume:
            lines += [
                "",
                f"The naive client waited {cfg['naive_wait']:g} s after resubscribing: the "
                "naive consumer keeps no history, so events published while a client is away "
                "are gone.",
            ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Idle connections and resume: realtime against naive Channels."
    )
    parser.add_argument("--connections", type=int, default=2000, help="per idle run")
    parser.add_argument("--warmup", type=int, default=50, help="opened before the baseline")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds held idle")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before RSS readings")
    parser.add_argument("--events", type=int, default=10_000, help="missed events to resume")
    parser.add_argument(
        "--naive-wait", type=float, default=10.0, help="seconds the naive client waits"
    )
    parser.add_argument(
        "--scenarios",
        type=lambda s: s.split(","),
        default=["idle", "resume"],
        help="idle, resume or both (default idle,resume)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=30.0,
        help="most seconds to wait for other load on the machine to stop before each "
        "measurement (default 30)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep-tmp", action="store_true", help="keep logs and the database")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - {"idle", "resume"}
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}")
    limits: list[tuple[float, float, float, str]] = [
        (args.connections, 1, 8000, "--connections"),
        (args.warmup, 0, 500, "--warmup"),
        (args.hold, 0, 300, "--hold"),
        (args.settle, 0, 60, "--settle"),
        (args.events, 1, 100_000, "--events"),
        (args.naive_wait, 1, 120, "--naive-wait"),
        (args.wait_quiet, 0, 600, "--wait-quiet"),
    ]
    check_bounds(parser, limits)
    if args.warmup >= args.connections:
        parser.error("--warmup must be below --connections")
    return args


async def amain(args: argparse.Namespace) -> int:
    raise_fd_limit(args.connections)  # daphne and the load client inherit it
    result = await IdleBench(args).measure()
    print("\n" + markdown(result), flush=True)
    if args.json:
        write_json(args.json, result)
    return 1 if any("error" in r for r in result["idle"].values()) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_tool("idle benchmark", lambda: amain(args), (LoadError,))


if __name__ == "__main__":
    sys.exit(main())
