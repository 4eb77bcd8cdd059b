"""Which ASGI servers run the app correctly, and what each costs (issue 13).

``python -m bench.servers [--servers daphne,granian,...] [--runs 3] [--json FILE]``

Each measurement gets a fresh server process (ONE worker; figures cover the whole process
tree) serving ``project.asgi:application`` on a free 127.0.0.1 port, with its own copy of a
freshly migrated SQLite database and its own memory-only ``redis-server`` (``bench.procs``).
Servers with a WebSocket message limit get ``MAX_FRAME_SIZE`` (uvicorn ``--ws-max-size``,
hypercorn ``websocket_max_message_size``); daphne runs as ``python -m realtime.serve``.

* **smoke**: ``ws``: a ``websockets`` client (offering permessage-deflate, as browsers do)
  gets ``welcome``, subscribes to ``public:bench`` and receives an event published by
  another process (``bench.publisher``); ``sse``: an SSE request gets it too;
  ``resume``: reconnected with ``since``/``epoch``, the client must get exactly the two events
  published meanwhile; ``oversize``: what a 70,000-byte message gets (recorded only);
  ``sigterm``, with a WebSocket and an SSE client open: the close code, how the SSE body ends,
  the exit time (the SSE client leaves after 5 s; killed after 15 s) and the lease and
  connection rows left, which the app's shutdown would remove. It passes if the process exits
  by itself within 5 s and the client gets a close frame. Also reported: the log's line
  about ASGI ``lifespan``, its warnings and its tracebacks.
* **idle**, ``--runs`` times: after ``WARM`` connections (hub, imports, database), the RSS
  (``VmRSS``); then ``--connections`` more, each on its own ``public:idle:N``, 100
  handshakes in flight, no compression (unless ``--deflate``); the RSS 2 s later. Reported:
  KiB per connection; time to open them (clients in this process: includes their CPU);
  the server process's CPU time per connection while they opened, and this process's (the
  clients'). ``--processes N`` serves this step from N server processes (same database and
  Redis), the clients spread over them in turn as a load balancer would; memory and CPU are
  their sums.
* **deliveries**, ``--runs`` times: ``bench.client`` (picows, ``?batch=1``) holds
  ``--subscribers`` on ``public:bench``; after a warm-up the publisher sends ``--rate``
  events/s for ``--duration`` s. Reported: deliveries/s at the clients (to the last one) and
  server CPU (``/proc`` utime+stime, while publishing and draining) per delivery.

Progress goes to stderr, the summary (median, min-max of the runs) to stdout. Every wait is
bounded; every child is stopped on the way out, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench import procs
from bench.procs import BenchError, Proc, Processes, log, write_json
from bench.report import cpu_reference, git_revision

APP = "project.asgi:application"
LIMIT = 65536  # the app's MAX_FRAME_SIZE, given to the servers that take a message limit
UVICORN = f"-m uvicorn --host 127.0.0.1 --port {{port}} --no-access-log --ws-max-size {LIMIT}"
SERVERS = {
    "daphne": f"-m realtime.serve -b 127.0.0.1 -p {{port}} {APP}",
    "uvicorn-websockets": f"{UVICORN} --http h11 --loop asyncio --ws websockets {APP}",
    "uvicorn-wsproto": f"{UVICORN} --http h11 --loop asyncio --ws wsproto {APP}",
    "uvicorn-httptools": f"{UVICORN} --http httptools --loop uvloop --ws websockets {APP}",
    "hypercorn": f"-m hypercorn -b 127.0.0.1:{{port}} -w 1 -c {{toml}} {APP}",
    "granian": f"-m granian --interface asgi --host 127.0.0.1 --port {{port}} --workers 1 {APP}",
    # Last, not run by default: what --ws websockets will mean (uvicorn deprecates the above).
    "uvicorn-sansio": f"{UVICORN} --http h11 --loop asyncio --ws websockets-sansio {APP}",
}
PACKAGES = ("daphne", "uvicorn", "websockets", "wsproto", "httptools", "uvloop", "hypercorn")
PACKAGES += ("granian", "picows")
CHECKS = ("ws", "sse", "resume", "oversize", "sigterm")
WAIT = 10.0  # seconds for any one frame or reply
SIGTERM_WAIT = 5.0  # then the SSE client leaves; the process is killed 10 s later
WARM = 10
IN_FLIGHT = 100


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's workers)."""
    pids = [pid]
    for p in pids:
        for path in glob.glob(f"/proc/{p}/task/*/children"):
            with contextlib.suppress(OSError), open(path) as f:
                pids.extend(int(child) for child in f.read().split())
    return pids


def rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            total += next((int(x.split()[1]) for x in f if x.startswith("VmRSS:")), 0)
    return total


def cpu_seconds(pid: int) -> float:
    return sum(procs._ticks(p) for p in tree(pid)) / os.sysconf("SC_CLK_TCK")


class Session:
    """Fresh server processes (one unless told), with their own Redis and copy of the migrated
    database; ``proc``, ``port`` and ``ws_url`` are the first one's."""

    def __init__(self, bench: Bench, server: str, label: str, processes: int = 1) -> None:
        self.server, self.args, self.processes = server, bench.args, processes
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{server}-{label}-", dir=bench.tmp))
        self.db = self.tmp / "db.sqlite3"
        with sqlite3.connect(bench.template) as src, sqlite3.connect(self.db) as dst:
            src.backup(dst)
        self.procs = Processes(self.tmp, {**bench.env, "DATABASE_URL": f"sqlite:///{self.db}"})
        self.ports = [procs.free_port() for _ in range(processes)]
        self.port = self.ports[0]
        self.ws_url = f"ws://127.0.0.1:{self.port}/realtime/ws/"

    async def __aenter__(self) -> Session:
        await self.procs.start_redis()
        toml = self.tmp / "hypercorn.toml"
        toml.write_text(f"websocket_max_message_size = {LIMIT}\n")
        self.servers = []
        for i, port in enumerate(self.ports):
            argv = SERVERS[self.server].format(port=port, toml=toml).split()
            name = "server" if i == 0 else f"server{i + 1}"
            self.servers.append(await self.procs.spawn(name, sys.executable, *argv))
        for proc, port in zip(self.servers, self.ports, strict=True):
            await self.procs.wait_listening(proc, port)
        self.proc = self.servers[0]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.procs.stop_all()

    async def spawn(self, name: str, *argv: str) -> Proc:
        proc = await self.procs.spawn(name, sys.executable, "-m", *argv, control=True)
        await proc.read_json(within=90)  # ready
        return proc

    async def publisher(self) -> Proc:
        return await self.spawn("publisher", "bench.publisher", "--approach", "realtime")

    async def ws(self, compression: str | None = None, server: int = 0) -> ClientConnection:
        """A WebSocket to the ``server``-th process (modulo their number), welcomed."""
        port = self.ports[server % self.processes]
        origin: Any = f"http://127.0.0.1:{port}"
        ws = await connect(
            f"ws://127.0.0.1:{port}/realtime/ws/", origin=origin, compression=compression,
            proxy=None, ping_interval=None, open_timeout=WAIT, close_timeout=2,
        )  # fmt: skip
        welcome = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if welcome.get("type") != "welcome":
            raise BenchError(f"first frame is not a welcome: {welcome}")
        return ws

    def log_report(self) -> dict[str, list[str]]:
        """The server log's line about lifespan, its warnings and tracebacks (counted)."""
        lines = self.proc.logfile.read_text(errors="replace").splitlines()
        found: Counter[str] = Counter()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                end = next((x for x in lines[i + 1 :] if x[:1].isalpha()), "?")
                found[f"traceback: {end}"] += 1
            elif "warn" in line.lower() and "lifespan" not in line.lower() and line[:1] != " ":
                found[line.strip()[:200]] += 1
        lifespan = [line.strip() for line in lines if "lifespan" in line.lower()][:1]
        return {
            "lifespan": lifespan or ["(no line about lifespan in the log)"],
            "log": [f"{n}x {text}" for text, n in found.items()],
        }


async def frames(ws: ClientConnection, within: float = WAIT, until: Any = None) -> list[Any]:
    """Frames until one satisfies ``until`` (TimeoutError if none), or all within ``within``."""
    got: list[Any] = []
    with contextlib.suppress(TimeoutError) if until is None else contextlib.nullcontext():
        async with asyncio.timeout(within):
            while until is None or not got or not until(got[-1]):
                got.append(json.loads(await ws.recv()))
    return got


async def next_frame(ws: ClientConnection, within: float = WAIT) -> tuple[str, Any]:
    """``("frame", frame)``, ``("close", how)``, ``("dropped", how)`` or ``("open", how)``."""
    try:
        return "frame", json.loads(await asyncio.wait_for(ws.recv(), within))
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            return "dropped", "TCP dropped without a close frame (1006)"
        return "close", f"close {exc.rcvd.code} {exc.rcvd.reason!r}"[:160]
    except TimeoutError:
        return "open", f"no frame within {within:g} s"


async def subscribe(ws: ClientConnection, stream: str, **extra: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "subscribe", "id": 1, "stream": stream, **extra}))
    return dict((await frames(ws, until=lambda f: f["type"] in ("subscribed", "error")))[-1])


async def read_sse(port: int, queue: asyncio.Queue[tuple[str, Any]]) -> None:
    """Queue ``(event, data)`` of each SSE message on ``public:bench``, then ``("end", how)``."""
    event, url = "message", f"http://127.0.0.1:{port}/realtime/sse/?stream=public:bench"
    try:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(WAIT, read=None), trust_env=False) as client,
            client.stream("GET", url, headers={"Accept": "text/event-stream"}) as resp,
        ):
            if resp.status_code != 200:
                raise BenchError(f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    queue.put_nowait((event, json.loads(line[5:])))
        queue.put_nowait(("end", "body ended"))
    except Exception as exc:
        queue.put_nowait(("end", f"{type(exc).__name__}: {exc}"[:120]))


async def sse_next(queue: asyncio.Queue[tuple[str, Any]], event: str) -> tuple[str, Any]:
    async with asyncio.timeout(WAIT):
        while (item := await queue.get())[0] not in (event, "end"):
            pass
    return item


async def smoke(bench: Bench, server: str) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}
    state: dict[str, Any] = {}

    async def check(name: str, coro: Any) -> None:
        try:
            ok, note = await coro
        except Exception as exc:
            ok, note = False, f"{type(exc).__name__}: {exc}"[:200]
        checks[name] = {"ok": ok, "note": note}
        log(f"[{server}] {name}: {'info' if ok is None else 'ok' if ok else 'FAIL'} - {note}")

    async with Session(bench, server, "smoke") as s:
        pub = await s.publisher()
        sse: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        sse_task = asyncio.create_task(read_sse(s.port, sse))

        async def ws_live() -> tuple[bool, str]:
            ws = await s.ws(compression="deflate")
            sub = await subscribe(ws, "public:bench")
            if sub["type"] != "subscribed":
                return False, f"subscribe answered {sub}"
            if (await sse_next(sse, "realtime.subscribed"))[0] == "end":
                raise BenchError("the SSE response ended before it subscribed")
            await pub.request({"cmd": "run", "k": 0, "rate": 10, "duration": 0.1}, 30)
            event = (await frames(ws, until=lambda f: f["type"] == "event"))[-1]
            state.update(ws=ws, epoch=sub["epoch"], seq=event["seq"])
            ext = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
            return True, f"event seq {event['seq']}; permessage-deflate offered, got {ext!r}"

        async def sse_live() -> tuple[bool, str]:
            event, data = await sse_next(sse, "bench.tick")
            ok = event == "bench.tick" and data.get("seq") == state.get("seq")
            return ok, f"{event}: {data.get('seq') if event != 'end' else data}"

        async def resume() -> tuple[bool, str]:
            await state["ws"].close()
            await pub.request({"cmd": "run", "k": 0, "rate": 10, "duration": 0.2}, 30)
            state["ws"] = ws = await s.ws()
            seq = state["seq"]
            sub = await subscribe(ws, "public:bench", since=seq, epoch=state["epoch"])
            seqs = [f["seq"] for f in await frames(ws, 1.5) if f["type"] == "event"]
            ok = sub.get("recovered") is True and seqs == [seq + 1, seq + 2]
            return ok, f"since {seq}: recovered={sub.get('recovered')}, then seqs {seqs}"

        async def oversize() -> tuple[None, str]:
            ws = await s.ws()
            await ws.send('{"type":"ping","pad":"' + "x" * 70_000 + '"}')
            kind, got = await next_frame(ws)
            if kind != "frame":
                return None, got
            await ws.send('{"type":"ping"}')
            pong = (await next_frame(ws))[1]
            await ws.close()
            return None, f"{got.get('type')} {got.get('code')}, then ping got {pong.get('type')}"

        async def sigterm() -> tuple[bool, str]:
            ws, proc, began = state.get("ws") or await s.ws(), s.proc.process, time.monotonic()
            os.kill(s.proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), SIGTERM_WAIT)
            waited = proc.returncode is None
            if waited:  # waiting for the endless SSE response?
                sse_task.cancel()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 2 * SIGTERM_WAIT)
            kind, code = await next_frame(ws, 2)
            how = "the client left" if sse_task.cancelled() else (await sse_next(sse, "end"))[1]
            if proc.returncode is None:
                exited = f"still running {3 * SIGTERM_WAIT:g} s after SIGTERM: killed"
            else:
                exited = f"exited {proc.returncode} after {time.monotonic() - began:.1f} s"
            await s.procs.stop([s.proc])
            with sqlite3.connect(s.db) as db:
                leases = db.execute("SELECT count(*) FROM realtime_server").fetchone()[0]
                rows = "SELECT transport, count(*) FROM realtime_connection GROUP BY transport"
                conns = dict(db.execute(rows).fetchall())
            note = f"{exited}{', once the SSE client left' if waited else ''}; ws {code}; "
            note += f"sse: {how}; rows left: {leases} lease, connections {conns}"
            return not waited and proc.returncode is not None and kind == "close", note

        for name, coro in zip(CHECKS, (ws_live, sse_live, resume, oversize, sigterm), strict=True):
            if name in ("sse", "resume") and "seq" not in state:
                checks[name] = {"ok": False, "note": "skipped: no live event over WebSocket"}
                continue
            await check(name, coro())
        sse_task.cancel()
        return {"checks": checks, **s.log_report()}


async def idle_run(bench: Bench, server: str, run: int) -> dict[str, Any]:
    n, sem, conns = bench.args.connections, asyncio.Semaphore(IN_FLIGHT), []
    async with Session(bench, server, f"idle{run}", bench.args.processes) as s:
        compression = "deflate" if bench.args.deflate else None
        pids = [proc.pid for proc in s.servers]

        async def one(i: int, stream: str) -> None:
            async with sem:
                conns.append(ws := await s.ws(compression, server=i))  # in turn, as a balancer
                if (sub := await subscribe(ws, stream))["type"] != "subscribed":
                    raise BenchError(f"subscribe {stream}: {sub}")

        def rss() -> int:
            return sum(rss_kib(pid) for pid in pids)

        def cpu_now() -> float:
            return sum(cpu_seconds(pid) for pid in pids)

        try:
            await asyncio.gather(*(one(i, f"public:idle:w{i}") for i in range(WARM)))
            await asyncio.sleep(1)
            before, began, cpu, mine = rss(), time.monotonic(), cpu_now(), time.process_time()
            async with asyncio.timeout(120):
                await asyncio.gather(*(one(i, f"public:idle:{i}") for i in range(n)))
            seconds, cpu = time.monotonic() - began, cpu_now() - cpu
            mine = time.process_time() - mine
            await asyncio.sleep(2)
            after = rss()
        finally:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    result = {"rss_before_kib": before, "rss_after_kib": after, "open_s": round(seconds, 2)}
    result["kib_per_conn"] = round((after - before) / n, 1)
    result["cpu_ms_per_conn"] = round(cpu * 1000 / n, 2)  # the servers', while they opened
    result["client_cpu_ms_per_conn"] = round(mine * 1000 / n, 2)  # this process's (the clients)
    log(f"[{server}] idle run {run + 1}: {result}")
    return result


async def delivery_run(bench: Bench, server: str, run: int) -> dict[str, Any]:
    a = bench.args
    async with Session(bench, server, f"deliveries{run}") as s:
        pub = await s.publisher()
        client = await s.spawn(
            "client", "bench.client", s.ws_url + "?batch=1", "--protocol", "realtime",
            "--clients", str(a.subscribers), "--steps", "2", "--connect-timeout", "30",
        )  # fmt: skip
        count = await client.request({"cmd": "report", "k": 0}, WAIT)
        if (subs := count["subscribed"]) < a.subscribers:
            raise BenchError(f"only {subs} of {a.subscribers} subscribed:\n{client.tail()}")

        async def drain(k: int, want: int, within: float) -> None:
            deadline = time.monotonic() + within
            while (await client.request({"cmd": "count", "k": k}, WAIT))["unique"] < want:
                if time.monotonic() > deadline:
                    return
                await asyncio.sleep(0.05)

        warm = await pub.request({"cmd": "run", "k": 0, "rate": 20, "duration": 1}, 30)
        await drain(0, warm["count"] * subs, 5)
        cpu, began = cpu_seconds(s.proc.pid), time.monotonic()
        step = {"cmd": "run", "k": 1, "rate": a.rate, "duration": a.duration}
        sent = await pub.request(step, a.duration * 2 + 30)
        await drain(1, sent["count"] * subs, 10)
        cpu, window = cpu_seconds(s.proc.pid) - cpu, time.monotonic() - began
        report = await client.request({"cmd": "report", "k": 1}, WAIT)
    got = report["unique"]
    result = {
        "published": sent["count"], "subscribers": subs, "delivered": got,
        "lost": sent["count"] * subs - got, "dups": report["dups"],
        "deliveries_per_s": round(got / max(report["last_rx"] - sent["t0"], 1e-3)),
        "server_cpu_pct": round(100 * cpu / window, 1),
        "us_per_delivery": round(cpu * 1e6 / max(got, 1), 1), "closes": report["closes"],
    }  # fmt: skip
    log(f"[{server}] delivery run {run + 1}: {result}")
    return result


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:g}" if values else "-"
    return f"{statistics.median(values):g} ({min(values):g}-{max(values):g})"


def summary(result: dict[str, Any]) -> str:
    config = result["config"]
    over = f" on {config['processes']} processes" if config["processes"] > 1 else ""
    head = ["server", *CHECKS, f"idle KiB/conn{over}", f"open {config['connections']} s{over}"]
    head.append("server CPU ms/open")
    lines = ["| " + " | ".join([*head, "deliveries/s", "server µs/delivery"]) + " |"]
    lines.append("|" + "---|" * (len(head) + 2))
    notes = []
    for name, r in result["servers"].items():
        checks, idle, dl = r.get("checks", {}), r.get("idle", []), r.get("delivery", [])
        marks = [
            {None: "info", True: "ok"}.get(checks.get(c, {}).get("ok"), "FAIL") for c in CHECKS
        ]
        cost = [("kib_per_conn", idle), ("open_s", idle), ("cpu_ms_per_conn", idle)]
        cost.append(("deliveries_per_s", dl))
        cost.append(("us_per_delivery", dl))
        cells = [spread([x[key] for x in runs]) for key, runs in cost]
        lines.append("| " + " | ".join([name, *marks, *cells]) + " |")
        notes.append(f"\n{name}: python {SERVERS[name]}")
        notes += [f"  {k}: {c['note']}" for k, c in checks.items()]
        notes += [f"  lifespan: {x}" for x in r.get("lifespan", [])]
        notes += [f"  log: {x}" for x in r.get("log", [])]
        if any(x["lost"] or x["dups"] or x["closes"] for x in dl):
            losses = [(x["lost"], x["dups"], x["closes"]) for x in dl]
            notes.append(f"  deliveries lost, duplicated, closes per run: {losses}")
        notes += [f"  FAILED: {r['error']}"] if r.get("error") else []
    notes.append(f"\nrevision {result['revision']}; CPU reference {result['cpu_reference_s']} s")
    return "\n".join(lines + notes)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-servers-"))
        self.template = self.tmp / "template.sqlite3"
        self.env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DJANGO_DEBUG": "0",
            "DATABASE_URL": f"sqlite:///{self.template}", "REALTIME_LOG": "WARNING",
            "REALTIME_MAX_CONNECTIONS_PER_IP": "100000", "PYTHONUNBUFFERED": "1",
        }  # fmt: skip

    async def run(self) -> dict[str, Any]:
        await Processes(self.tmp, dict(self.env)).migrate()
        versions = {}
        for package in PACKAGES:
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[package] = metadata.version(package)
        out: dict[str, Any] = {"versions": versions, "config": vars(self.args), "servers": {}}
        out["revision"], out["cpu_reference_s"] = git_revision(), cpu_reference()
        log(f"versions: {versions}; revision {out['revision']}")
        log(f"CPU reference {out['cpu_reference_s']} s (a fixed loop; lower is a faster machine)")
        for name in self.args.servers:
            began, r = time.monotonic(), out["servers"].setdefault(name, {})
            try:
                r.update(await smoke(self, name))
                if not r["checks"]["ws"]["ok"]:
                    raise BenchError("no working WebSocket: costs not measured")
                r["idle"] = [await idle_run(self, name, i) for i in range(self.args.runs)]
                r["delivery"] = [await delivery_run(self, name, i) for i in range(self.args.runs)]
            except BenchError as exc:
                r["error"] = str(exc).splitlines()[0]
                log(f"[{name}] FAILED: {exc}")
            log(f"[{name}] done in {time.monotonic() - began:.0f} s")
        return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--servers", type=lambda s: s.split(","), default=[*SERVERS][:-1], help=",".join(SERVERS)
    )
    parser.add_argument("--runs", type=int, default=3, help="cost runs per server (default 3)")
    parser.add_argument("--connections", type=int, default=1000, help="idle connections")
    parser.add_argument("--deflate", action="store_true", help="idle clients offer deflate")
    parser.add_argument(
        "--processes", type=int, default=1,
        help="server processes for the idle step, the clients spread over them in turn",
    )  # fmt: skip
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="events/s published")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep-tmp", action="store_true", help="keep logs and databases")
    args = parser.parse_args(argv)
    if unknown := set(args.servers) - set(SERVERS):
        parser.error(f"unknown server {', '.join(sorted(unknown))}")
    procs.check_bounds(parser, [
        (args.runs, 1, 10, "--runs"), (args.connections, 1, 5000, "--connections"),
        (args.processes, 1, 4, "--processes"),
        (args.subscribers, 1, 2000, "--subscribers"), (args.rate, 1, 1000, "--rate"),
        (args.duration, 1, 60, "--duration"),
    ])  # fmt: skip
    return args


async def amain(args: argparse.Namespace) -> int:
    procs.raise_fd_limit(args.connections + WARM + args.subscribers)
    bench = Bench(args)
    try:
        result = await bench.run()
    finally:
        if args.keep_tmp:
            log(f"logs kept in {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    print(summary(result), flush=True)
    if args.json:
        write_json(args.json, result)
    return 1 if any(r.get("error") for r in result["servers"].values()) else 0


if __name__ == "__main__":
    sys.exit(procs.run_tool("ASGI servers benchmark", lambda: amain(parse_args())))
