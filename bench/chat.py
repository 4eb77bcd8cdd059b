"""Chat benchmark: many WebSocket clients in rooms, publishing to each other (issue 13).

``python -m bench.chat`` measures what a chat application gets from the app. Like
``bench.fanout`` it starts its own Redis (``redis-server`` on a free loopback port), a fresh
migrated SQLite file (or, with ``--database-url``, a scratch database ``realtime_chat_<pid>``
on a loopback PostgreSQL server, dropped at the end) and ``--servers`` daphne processes of
``project.asgi``. One load-client child (this module with ``--child-client``, picows, one
event loop) opens ``--clients`` WebSockets (``?batch=1``, 100 connecting at a time), client
``i`` in room ``i % rooms`` on server ``(i // rooms) % servers``, so every room spans the
servers; each subscribes to its room's stream ``public:chat:bench-R`` (the demo's RULES let
anyone publish there).

Each step of the ``--rates`` ladder sends that many ``publish`` frames a second in total,
each from a client picked at random, for ``--duration`` seconds. A message's ``data`` holds
the sender's ``time.time()``, so each receiver (same machine, same clock) measures
publish-to-receive latency; the ``ack`` gives the publish latency. After a step the client
waits up to ``--drain`` seconds for missing acks and deliveries. A message is owed to every
client subscribed to its room when it was acked (the sender included); loss is owed
deliveries never received, duplicates are events at or below a client's last seq. CPU is
read from ``/proc`` over the publishing period, in % of one core. A step is *sustained* with
no loss, no publish errors (error frames or missing acks) and p99 under ``--max-p99-ms``;
the ladder stops after two unsustained steps in a row.

Progress goes to stderr, the Markdown table to stdout (and JSON to ``--json``). Everything
listens on 127.0.0.1, every wait is bounded, every process is stopped on the way out, also
on Ctrl-C (children get SIGKILL should this process die).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.procs import (
    START_TIMEOUT,
    BenchError,
    Proc,
    Processes,
    ScratchPostgres,
    background_load,
    check_bounds,
    cpu_pct,
    cpu_sample,
    emit,
    free_port,
    log,
    raise_fd_limit,
    run_tool,
    write_json,
)
from bench.report import git_revision, machine_info

DEFAULT_RATES = [50.0, 100.0, 200.0, 400.0, 800.0]
WS_PATH = "/realtime/ws/?batch=1"
CONNECT_CONCURRENCY = 100
CONNECT_ATTEMPTS = 3
ACK_EVERY = 100  # frames between ``received`` acknowledgements, as the reference client
PING_INTERVAL = 10.0  # the app closes connections silent for HEARTBEAT_TIMEOUT (30 s)
REPLY_TIMEOUT = 30.0
RATE_LIMIT = 50.0  # the app's default RATE_LIMIT["rate"]: frames/s per connection
TEXT = WSMsgType.TEXT
CHILD = (sys.executable, "-m", "bench.chat")


# --- the child: every chat client in one event loop ------------------------------------------
class Step:
    """One step's publishes and what the clients received of them, counted as they come."""

    def __init__(self, k: int) -> None:
        self.k, self.sent, self.acked, self.dups, self.owed = k, 0, 0, 0, 0
        self.outstanding = 0  # sent, neither acked nor refused
        self.missing = 0  # owed deliveries of acked messages not received (yet)
        self.errors: dict[str, int] = {}
        self.owed_by: dict[int, int] = {}  # acked message -> subscribers of its room then
        self.received: dict[int, int] = {}  # message -> unique deliveries
        self.lat: list[float] = []  # publish-to-receive and ...
        self.ack_lat: list[float] = []  # ... publish-to-ack, seconds
        self.last_rx = self.last_ack = 0.0
        self.wall = time.time()  # the start, on the clock of the messages' ``t``
        self.finished = False  # every message sent
        self.done = asyncio.Event()  # ...and every ack and owed delivery in

    def check(self) -> None:
        if self.finished and not self.outstanding and not self.missing:
            self.done.set()


class Client(WSListener):  # type: ignore[misc]
    def __init__(self, load: Load, room: int) -> None:
        super().__init__()
        self.load, self.room = load, room
        self.transport: WSTransport | None = None  # set by ``Load.connect_one``
        self.last = self.frames = self.acked = 0  # last: highest seq of the room's stream
        self.subscribed = self.closed = False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                self.load.note(f"close {frame.get_close_code()} {frame.get_close_reason()}")
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        msg = json.loads(frame.get_payload_as_bytes())
        msgs = msg["frames"] if msg["type"] == "batch" else (msg,)
        self.frames += len(msgs)
        if self.frames - self.acked >= ACK_EVERY:  # flow control, docs/protocol.md
            self.acked = self.frames
            transport.send(TEXT, b'{"type":"received","count":%d}' % self.frames)
        load = self.load
        for one in msgs:
            kind = one["type"]
            if kind == "event":
                load.on_event(self, one)
            elif kind == "ack":
                load.on_ack(one)
            elif kind == "error":
                load.on_error(one)
            elif kind == "welcome":
                stream = b"public:chat:bench-%d" % self.room
                transport.send(TEXT, b'{"type":"subscribe","id":"s","stream":"%s"}' % stream)
            elif kind == "subscribed" and not self.subscribed:
                self.last = max(self.last, int(one["seq"]))  # older events are not owed
                self.subscribed = True
                load.on_subscribed(self.room, 1)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed:
            self.closed = True
            self.load.disconnected += 1
            if self.subscribed:
                self.load.on_subscribed(self.room, -1)


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.clients: list[Client] = []
        self.room_subs = [0] * args.rooms
        self.awaited, self.all_subscribed = args.clients, asyncio.Event()
        self.steps: dict[int, Step] = {}
        self.pending: dict[int, tuple[Step, int, float]] = {}  # id -> step, room, sent at
        self.current = Step(-1)
        self.next_id = self.disconnected = 0
        self.notes: dict[str, int] = {}

    def note(self, what: str) -> None:
        self.notes[what] = self.notes.get(what, 0) + 1

    def on_subscribed(self, room: int, change: int) -> None:
        self.room_subs[room] += change
        if sum(self.room_subs) >= self.awaited:
            self.all_subscribed.set()

    def on_event(self, client: Client, msg: dict[str, Any]) -> None:
        seq, data = msg.get("seq"), msg["data"]
        step = self.steps.get(data.get("k")) if client.subscribed and seq else None
        if step is None:
            return
        if seq <= client.last:
            step.dups += 1
            return
        client.last, m, now = seq, data["m"], time.time()
        got = step.received[m] = step.received.get(m, 0) + 1
        if got <= step.owed_by.get(m, 0):
            step.missing -= 1
            step.check()
        step.lat.append(now - data["t"])
        step.last_rx = now

    def on_ack(self, msg: dict[str, Any]) -> None:
        entry = self.pending.pop(msg["id"], None)
        if entry is None:
            return
        step, room, sent_at = entry
        step.acked, step.outstanding = step.acked + 1, step.outstanding - 1
        step.last_ack = time.perf_counter()
        step.ack_lat.append(step.last_ack - sent_at)
        owed = step.owed_by[msg["id"]] = self.room_subs[room]
        step.owed += owed
        step.missing += max(0, owed - step.received.get(msg["id"], 0))
        step.check()

    def on_error(self, msg: dict[str, Any]) -> None:
        if msg["id"] == "s":
            self.note(f"subscribe error {msg['code']}")
            return
        entry = self.pending.pop(msg["id"], None) if msg["id"] is not None else None
        step = entry[0] if entry else self.current  # rate_limited errors carry no id
        step.errors[msg["code"]] = step.errors.get(msg["code"], 0) + 1
        if entry:
            step.outstanding -= 1
            step.check()

    async def connect_one(self, index: int, sem: asyncio.Semaphore) -> None:
        room = index % self.args.rooms
        url = self.args.urls[(index // self.args.rooms) % len(self.args.urls)]
        origin = "http://" + url.split("://", 1)[1].split("/", 1)[0]
        async with sem:
            for attempt in range(CONNECT_ATTEMPTS):
                with contextlib.suppress(Exception):
                    headers = {"Origin": origin}
                    transport, client = await ws_connect(
                        lambda: Client(self, room), url, extra_headers=headers
                    )
                    if client is not None:  # picows gives none when the handshake drops
                        client.transport = transport
                        self.clients.append(client)
                        return
                await asyncio.sleep(0.2 * (attempt + 1))
            self.note("connect failed")

    async def connect_all(self) -> dict[str, Any]:
        started = time.perf_counter()
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        await asyncio.gather(*(self.connect_one(i, sem) for i in range(self.args.clients)))
        self.awaited = len(self.clients)
        self.on_subscribed(0, 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_subscribed.wait(), self.args.connect_timeout)
        ready = {"connected": self.awaited, "subscribed": sum(self.room_subs), "notes": self.notes}
        return {**ready, "seconds": round(time.perf_counter() - started, 2)}

    def publish(self, step: Step, client: Client) -> None:
        self.next_id += 1
        m, room = self.next_id, client.room
        data = {"t": time.time(), "k": step.k, "m": m, "text": f"message {m} in room {room}"}
        frame = {"type": "publish", "id": m, "stream": f"public:chat:bench-{room}"}
        frame.update(event="message.created", data=data)
        self.pending[m] = (step, room, time.perf_counter())
        step.sent, step.outstanding = step.sent + 1, step.outstanding + 1
        assert client.transport is not None
        client.transport.send(TEXT, json.dumps(frame, separators=(",", ":")).encode())

    async def run(self, k: int, rate: float, duration: float, drain: float) -> None:
        """Publish ``rate * duration`` messages, each due at ``start + i / rate``; report."""
        step = self.steps[k] = self.current = Step(k)
        live = [c for c in self.clients if c.subscribed and not c.closed]
        total, started = round(rate * duration), time.perf_counter()
        while step.sent < total and live and time.perf_counter() - started < 2 * duration:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while step.sent < due:
                self.publish(step, random.choice(live))
            await asyncio.sleep(max(0.0, started + step.sent / rate - time.perf_counter()))
        seconds = time.perf_counter() - started
        emit({"event": "published", "sent": step.sent, "seconds": seconds})
        step.finished = True
        step.check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(step.done.wait(), drain)
        errors = dict(step.errors, **({"unacked": step.outstanding} if step.outstanding else {}))
        report = dict(sent=step.sent, acked=step.acked, errors=errors, owed=step.owed)
        report.update(lost=step.missing, deliveries=len(step.lat), dups=step.dups)
        report.update(publish_s=seconds, ack_s=step.last_ack - started if step.acked else 0.0)
        report.update(rx_s=step.last_rx - step.wall if step.lat else 0.0)
        report.update(lat_ms=quantiles(step.lat), ack_ms=quantiles(step.ack_lat))
        emit({"event": "report", **report, "disconnected": self.disconnected, "notes": self.notes})

    async def ping_forever(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            for client in self.clients:
                if client.transport is not None and not client.closed:
                    client.transport.send(TEXT, b'{"type":"ping"}')


def quantiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99 (nearest rank) and max of ``values`` in seconds, as milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    ranks = {"p50": 0.5, "p99": 0.99, "max": 1.0}
    n = len(ordered)
    return {k: round(ordered[max(0, math.ceil(q * n) - 1)] * 1000, 1) for k, q in ranks.items()}


async def child_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    load = Load(args)
    emit({"event": "ready", **await load.connect_all()})
    pinger = asyncio.create_task(load.ping_forever())
    try:
        while line := await reader.readline():  # stdin closed: the parent is gone
            cmd = json.loads(line)
            if cmd["cmd"] != "run":
                break
            await load.run(cmd["k"], cmd["rate"], cmd["duration"], cmd["drain"])
    finally:
        pinger.cancel()
        for client in load.clients:
            if client.transport is not None and not client.closed:
                client.transport.disconnect(graceful=False)


# --- the parent: processes, ladder, report ------------------------------------------------
class Chat:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pg = ScratchPostgres(args.database_url, "realtime_chat") if args.database_url else None
        self.tmp = Path(tempfile.mkdtemp(prefix="realtime-bench-chat-"))
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="project.settings", DJANGO_DEBUG="0")
        env.update(DATABASE_URL=f"sqlite:///{self.tmp / 'chat.sqlite3'}", PYTHONUNBUFFERED="1")
        # All clients come from 127.0.0.1; the demo's cap is 1,000 connections per address.
        env.update(REALTIME_LOG="WARNING", REALTIME_MAX_CONNECTIONS_PER_IP=str(args.clients + 100))
        self.procs = Processes(self.tmp, env)
        self.roles: dict[str, Proc] = {}

    async def start(self) -> dict[str, Any]:
        args = self.args
        raise_fd_limit(args.clients)
        await self.procs.start_redis()
        if self.pg is not None:
            log(f"creating the scratch database {self.pg.name} (dropped at the end)")
            self.procs.env["DATABASE_URL"] = await asyncio.to_thread(self.pg.create)
        await self.procs.migrate()
        ports, urls = [free_port() for _ in range(args.servers)], []
        for i, port in enumerate(ports, start=1):
            argv = ("-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "project.asgi:application")
            self.roles[f"server{i}"] = await self.procs.spawn(f"server{i}", sys.executable, *argv)
            urls.append(f"ws://127.0.0.1:{port}{WS_PATH}")
        for i, port in enumerate(ports, start=1):
            await self.procs.wait_listening(self.roles[f"server{i}"], port)
        if self.procs.redis is not None:
            self.roles["redis"] = self.procs.redis
        log(f"{args.servers} daphne servers up; connecting {args.clients} clients...")
        argv = ("--clients", str(args.clients), "--rooms", str(args.rooms), "--connect-timeout")
        argv += (str(args.connect_timeout), "--child-client", *urls)
        client = await self.procs.spawn("client", *CHILD, *argv, control=True)
        self.roles["client"] = client
        ready = await client.read_json(within=args.connect_timeout + START_TIMEOUT + 60)
        log(f"{ready['subscribed']}/{args.clients} subscribed in {ready['seconds']} s")
        if ready["subscribed"] < args.clients * 0.99:
            raise BenchError(f"only {ready['subscribed']} clients subscribed: {ready}")
        return ready

    async def step(self, k: int, rate: float, duration: float) -> dict[str, Any]:
        client, args = self.roles["client"], self.args
        before = cpu_sample(self.roles)
        cmd = {"cmd": "run", "k": k, "rate": rate, "duration": duration, "drain": args.drain}
        await client.request(cmd, within=2 * duration + REPLY_TIMEOUT)  # "published"
        cpu = cpu_pct(before, cpu_sample(self.roles))
        r = await client.read_json(within=args.drain + REPLY_TIMEOUT)
        errors, p99 = sum(r["errors"].values()), r["lat_ms"]["p99"]
        servers = sum(v for name, v in cpu.items() if name.startswith("server"))
        held = bool(r["acked"] and not r["lost"] and not errors and p99 is not None)
        return {
            "rate": rate,
            "published_per_s": round(r["acked"] / max(r["publish_s"], r["ack_s"], 1e-6), 1),
            "deliveries_per_s": round(r["deliveries"] / max(r["publish_s"], r["rx_s"], 1e-6), 1),
            "loss_pct": round(100 * r["lost"] / r["owed"], 3) if r["owed"] else 0.0,
            "cpu": {"servers": round(servers, 1), **cpu},
            "sustained": held and p99 < args.max_p99_ms,
            **r,
        }

    async def climb(self) -> list[dict[str, Any]]:
        args, steps, failures = self.args, [], 0
        for k, rate in enumerate(args.rates, start=1):
            if rate / args.clients > RATE_LIMIT / 2:
                log(f"WARNING: {rate:g}/s over {args.clients} clients nears RATE_LIMIT")
            s = await self.step(k, rate, args.duration)
            steps.append(s)
            log(progress(k, len(args.rates), s))
            failures = 0 if s["sustained"] else failures + 1
            if failures >= 2 and k < len(args.rates):
                log("two unsustained steps: skipping the higher rates")
                break
        return steps

    async def run(self) -> dict[str, Any]:
        keys = ("clients", "rooms", "servers", "rates", "duration", "drain", "max_p99_ms")
        result: dict[str, Any] = {"config": {k: getattr(self.args, k) for k in keys}}
        result["config"]["database"] = "postgresql" if self.pg else "sqlite"
        result["background_cpu_pct"] = await background_load()
        if result["background_cpu_pct"] > 20:
            log(f"WARNING: the machine is {result['background_cpu_pct']:g}% busy already")
        result["ready"] = await self.start()
        warm = await self.step(0, min(self.args.rates[0], 50.0), 2.0)
        if not warm["deliveries"]:
            raise BenchError(f"warm-up delivered nothing: {warm['errors']}")
        log(f"warm-up: {warm['deliveries']}/{warm['owed']} delivered, errors {warm['errors']}")
        result["warmup"], result["steps"] = warm, await self.climb()
        result["machine"] = machine_info(self.procs.redis_version)
        result["revision"] = git_revision()
        return result

    async def cleanup(self) -> None:
        await self.procs.stop_all()
        if self.pg is not None:
            await asyncio.to_thread(self.pg.drop)
        shutil.rmtree(self.tmp, ignore_errors=True)


COLUMNS = (
    "msg/s offered | acked/s | errors | deliveries/s | loss | dups | p50 ms | p99 ms | max ms "
    "| ack p50 ms | ack p99 ms | CPU servers | CPU Redis | CPU client | sustained"
)


def row(s: dict[str, Any]) -> list[str]:
    """One step's cells, in the order of ``COLUMNS``."""
    lat, ack, cpu = s["lat_ms"], s["ack_ms"], s["cpu"]
    cells = [f"{s['rate']:g}", f"{s['published_per_s']:g}"]
    cells.append(", ".join(f"{v} {k}" for k, v in s["errors"].items()) or "0")
    cells += [f"{s['deliveries_per_s']:,.0f}", f"{s['loss_pct']:g}%", str(s["dups"])]
    cells += [str(v) for v in (lat["p50"], lat["p99"], lat["max"], ack["p50"], ack["p99"])]
    cells += [f"{cpu['servers']:g}", f"{cpu.get('redis', 0):g}", f"{cpu['client']:g}"]
    return [*cells, "yes" if s["sustained"] else "no"]


def progress(k: int, n: int, s: dict[str, Any]) -> str:
    named = ", ".join(f"{c.strip()} {v}" for c, v in zip(COLUMNS.split("|"), row(s), strict=True))
    trouble = f", {s['disconnected']} disconnected {s['notes']}" if s["disconnected"] else ""
    return f"step {k}/{n}: {named}, CPU other {s['cpu']['other']:g}{trouble}"


def markdown(result: dict[str, Any]) -> str:
    cfg, m = result["config"], result["machine"]
    lines = [
        f"## Chat benchmark: {cfg['clients']} clients in {cfg['rooms']} rooms, "
        f"{cfg['servers']} daphne process(es), {cfg['database']}, {cfg['duration']:g} s a step",
        "",
        f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, Redis {m['redis']}, "
        f"revision {result['revision']}; machine {result['background_cpu_pct']:g}% busy before; "
        f"CPU reference {m.get('cpu_reference_s', '-')} s.",
        "CPU in % of one core over the publishing period; latency publish-to-receive.",
        "",
        f"| {COLUMNS} |",
        "|" + "---:|" * 14 + "---|",
    ]
    lines += ["| " + " | ".join(row(s)) + " |" for s in result["steps"]]
    best = [s["rate"] for s in result["steps"] if s["sustained"]]
    lines += ["", f"Highest sustained rate: {max(best):g} msg/s." if best else "No step held."]
    return "\n".join(lines)


OPTIONS = (  # flag, type, default, help
    ("--clients", int, 1000, "WebSocket clients"),
    ("--rooms", int, 100, "chat rooms (streams public:chat:bench-R)"),
    ("--servers", int, 2, "daphne processes"),
    ("--duration", float, 10.0, "seconds a step"),
    ("--drain", float, 5.0, "most seconds to wait for acks and deliveries after a step"),
    ("--max-p99-ms", float, 1000.0, "sustained: p99 below this"),
    ("--connect-timeout", float, 60.0, "most seconds for the clients to subscribe"),
)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    for flag, kind, default, text in OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default:g})")
    rates = ",".join(f"{r:g}" for r in DEFAULT_RATES)
    parser.add_argument(
        "--rates", type=floats, default=DEFAULT_RATES, help=f"total msg/s a step (default {rates})"
    )
    parser.add_argument("--database-url", help="a loopback PostgreSQL server to use instead")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--child-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("urls", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.database_url and not args.database_url.startswith("postgres"):
        parser.error("--database-url must name a PostgreSQL server (postgres://...)")
    limits = [(args.clients, 1, 5000, "--clients"), (args.rooms, 1, args.clients, "--rooms")]
    limits += [(args.servers, 1, 8, "--servers"), (args.duration, 0.5, 60, "--duration")]
    limits += [(args.drain, 0, 60, "--drain"), (len(args.rates), 1, 30, "number of --rates")]
    limits += [(r, 0.1, 20_000, "--rates") for r in args.rates]
    check_bounds(parser, limits)
    return args


async def amain(args: argparse.Namespace) -> int:
    chat = Chat(args)
    try:
        result = await chat.run()
    finally:
        await chat.cleanup()
    print("\n" + markdown(result), flush=True)
    if args.json:
        write_json(args.json, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_client:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(child_main(args))
        return 0
    return run_tool("chat benchmark", lambda: amain(args))


if __name__ == "__main__":
    sys.exit(main())
