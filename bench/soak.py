"""Soak: hostile churn against real daphne processes, and what it leaves behind (issue 12).

``make soak`` runs ``python -m bench.soak``. It starts ``--servers`` fresh daphne processes
(``project.settings``, the demo's rules: ``public:*`` is open to anyone for subscribe,
history and presence) on a database of their own (a new SQLite file, or a new database on
the PostgreSQL server of ``--database-url``), with the in-memory channel layer for one
process or Redis for several (``REDIS_URL``, as ``scripts/services.sh`` gives it, under a
private key prefix; without it a ``redis-server`` of its own). Then ``--clients`` anonymous
WebSocket clients, spread over the processes, churn for ``--duration`` seconds. Each, over
and over:

1. subscribes to a fresh, never-published stream ``public:soak-<random>``,
2. joins its presence,
3. leaves the presence,
4. unsubscribes;

and every ``--reconnect-every`` cycles or so (at random) disconnects — half the time in
the middle of a cycle, still subscribed and present — and connects again. Each waits for the
reply to every frame and sends at most ``--frame-rate`` frames a second, under the server's
per-connection ``RATE_LIMIT`` (read from the realtime settings), so nothing is refused for
going too fast: this is what any anonymous client may do.

Every ``--interval`` seconds it records the row count of every model of the ``realtime``
app (``apps.get_app_config("realtime").get_models()``, so new tables count too) and each
server's RSS (``VmRSS`` from ``/proc``). At the end every client closes, and after the
server's cleanup had time (``--settle``) it counts once more: what outlived the connections.

The verdict:

* **rows plateau**: after the warm-up (``--warmup``, default the first interval) no table
  grows by more than ``--row-slack`` rows (default twice the clients plus 10: what the
  clients hold open at once varies, with connections closing within ``PRESENCE_GRACE``);
* **RSS plateau**: no server's RSS grows by more than ``--rss-limit`` MiB over the second
  half of the run;
* **nothing left behind**: once every client has closed, every table is back where it was
  before the first client connected (``Server``: one row per running process);
* **churn ran**: every client completed cycles, and the servers logged no errors.

Exit status 1 if any fails. Progress goes to stderr, the Markdown report to stdout, JSON to
``--json PATH``. Everything listens on 127.0.0.1, counts and times are bounded, and every
process started is stopped on the way out (and killed should this process die).
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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from bench.client import CONNECT_ATTEMPTS
from bench.load import rss_kib
from bench.procs import (
    BenchError,
    Proc,
    Processes,
    check_bounds,
    free_port,
    log,
    raise_fd_limit,
    run_tool,
    with_socket_timeout,
    write_json,
)
from bench.storm_client import failure_label

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

WS_PATH = "/realtime/ws/"
STREAM_PREFIX = "public:soak-"
REPLY_TIMEOUT = 15.0  # seconds for the answer to one frame
CLOSE_TIMEOUT = 5.0  # seconds for a closing handshake
START_SPREAD = 1.0  # clients start within this many seconds, not all at once
SERVER_ROWS = "Server"  # one row per running process: not a leftover


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


@dataclass
class Tally:
    """What the clients did, all together."""

    cycles: int = 0  # complete: subscribe, join, leave, unsubscribe
    cut_short: int = 0  # disconnected after joining, without leaving or unsubscribing
    frames: int = 0
    connects: int = 0
    reconnects: int = 0  # connects after a client's first
    connected: int = 0  # open right now
    errors: Counter[str] = field(default_factory=Counter)  # error frames, by code
    failures: Counter[str] = field(default_factory=Counter)  # connections that broke

    def snapshot(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "cut_short": self.cut_short,
            "frames": self.frames,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "connected": self.connected,
            "errors": dict(self.errors),
            "failures": dict(self.failures),
        }


class Churner:
    """One anonymous client (a browser tab: its ``client_id`` survives reconnections)."""

    def __init__(
        self, index: int, url: str, tally: Tally, args: argparse.Namespace, gap: float
    ) -> None:
        self.index, self.tally, self.args, self.gap = index, tally, args, gap
        self.url = f"{url}?client_id=soak-{index}"
        self.origin = "http://" + urlsplit(url).netloc
        self.rng = random.Random(f"{args.seed}-{index}")
        self.next_send = 0.0
        self.frame_id = 0
        self.connected_before = False

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, churn, reconnect, until ``stop``; a broken connection is counted and
        replaced (after a pause, as a browser backs off)."""
        await asyncio.sleep(self.rng.random() * START_SPREAD)
        failed_in_a_row = 0
        while not stop.is_set():
            try:
                await self.connection(stop)
                failed_in_a_row = 0
            except Exception as exc:
                self.tally.failures[failure_label(exc)] += 1
                failed_in_a_row += 1
                if failed_in_a_row == CONNECT_ATTEMPTS:
                    log(f"client {self.index}: {failed_in_a_row} failures in a row: {exc!r}")
                await asyncio.sleep(min(5.0, 0.5 * failed_in_a_row))

    async def connection(self, stop: asyncio.Event) -> None:
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

        ws = await connect(
            self.url,
            origin=Origin(self.origin),
            open_timeout=REPLY_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            ping_interval=None,  # the app's own frames keep the connection alive
            compression=None,
        )
        self.tally.connects += 1
        self.tally.reconnects += self.connected_before
        self.connected_before = True
        self.tally.connected += 1
        self.frame_id = 0
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                while json.loads(await ws.recv()).get("type") != "welcome":
                    pass
            # This many cycles on this connection, the last one cut short half the time.
            mean = self.args.reconnect_every
            cycles = self.rng.randint(1, 2 * mean - 1)
            cut_short = self.rng.random() < 0.5
            for n in range(cycles):
                if stop.is_set():
                    return
                await self.cycle(ws, cut_short=cut_short and n == cycles - 1)
        finally:
            self.tally.connected -= 1
            await ws.close()

    async def cycle(self, ws: ClientConnection, *, cut_short: bool) -> None:
        stream = f"{STREAM_PREFIX}{self.rng.getrandbits(64):016x}"
        if not await self.request(ws, {"type": "subscribe", "stream": stream}, "subscribed"):
            return
        join = {"type": "presence", "stream": stream, "meta": {"client": self.index}}
        if not await self.request(ws, join, "ack"):
            return
        if cut_short:
            self.tally.cut_short += 1
            return
        leave = {"type": "presence", "stream": stream, "leave": True}
        if not await self.request(ws, leave, "ack"):
            return
        if await self.request(ws, {"type": "unsubscribe", "stream": stream}, "unsubscribed"):
            self.tally.cycles += 1

    async def request(self, ws: ClientConnection, frame: dict[str, Any], reply: str) -> bool:
        """Send ``frame`` (paced) and read until its reply; False if an error answered it."""
        now = time.monotonic()
        if self.next_send > now:
            await asyncio.sleep(self.next_send - now)
        self.next_send = max(now, self.next_send) + self.gap
        self.frame_id += 1
        frame_id = self.frame_id
        await ws.send(json.dumps({**frame, "id": frame_id}))
        self.tally.frames += 1
        async with asyncio.timeout(REPLY_TIMEOUT):
            while True:
                answer = json.loads(await ws.recv())
                kind = answer.get("type")
                if kind == "error" and answer.get("id") in (frame_id, None):
                    # rate_limited has no id: the frame was dropped, no other reply comes.
                    self.tally.errors[str(answer.get("code"))] += 1
                    return False
                if kind == reply and answer.get("id") == frame_id:
                    return True


# --- the database ---------------------------------------------------------------------------
def count_rows() -> dict[str, int]:
    """Rows of every model of the ``realtime`` app, by model name, in the app's order."""
    from django.apps import apps

    models = apps.get_app_config("realtime").get_models()
    return {model.__name__: model._default_manager.count() for model in models}


def own_database(url: str) -> tuple[str, str]:
    """A new database's name on the PostgreSQL server of ``url``, and the URL naming it."""
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'postgres'}_soak_{os.getpid()}"
    return name, urlunsplit(parts._replace(path=f"/{name}"))


def pg_admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # a database name of our own making: nothing to quote


class Soak:
    """One run: set up, churn while sampling, close, settle, judge, clean up."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="realtime-soak-"))
        self.pg_admin_url: str | None = None
        self.pg_database: str | None = None
        if args.database_url and args.database_url.startswith("postgres"):
            # A database of our own: its rows are only ours, and it is dropped at the end.
            self.pg_admin_url = args.database_url
            self.pg_database, database_url = own_database(args.database_url)
        elif args.database_url:
            database_url = args.database_url
        else:
            database_url = f"sqlite:///{self.tmp / 'soak.sqlite3'}"
        env = dict(os.environ)
        for name in ("REDIS_URL", "REDIS_SENTINELS", "REDIS_PREFIX", "PYTEST_CURRENT_TEST"):
            env.pop(name, None)  # one process: the in-memory layer; several: set in run()
        env.update(
            DJANGO_SETTINGS_MODULE="project.settings",
            DATABASE_URL=database_url,
            DJANGO_DEBUG="0",  # DEBUG would keep every query in memory: RSS would grow
            REALTIME_LOG="WARNING",
            PYTHONUNBUFFERED="1",
        )
        self.procs = Processes(self.tmp, env)
        self.servers: list[Proc] = []
        self.ports: list[int] = []
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="soak-db")
        self.tally = Tally()

    @property
    def layer(self) -> str:
        return "Redis" if "REDIS_URL" in self.procs.env else "in-memory"

    async def rows(self) -> dict[str, int]:
        return await asyncio.get_running_loop().run_in_executor(self.db, count_rows)

    def rss(self) -> list[float | None]:
        return [mib(rss_kib(server.pid)) for server in self.servers]

    async def set_up(self) -> None:
        args = self.args
        if self.pg_database and self.pg_admin_url:
            log(f"soak: creating the database {self.pg_database} (dropped at the end)")
            await asyncio.to_thread(
                pg_admin, self.pg_admin_url, f'CREATE DATABASE "{self.pg_database}"'
            )
        if args.servers > 1:
            url = os.environ.get("REDIS_URL")
            if url:
                self.procs.env.update(
                    REDIS_URL=with_socket_timeout(url), REDIS_PREFIX=f"soak{os.getpid()}"
                )
            else:
                log("soak: no REDIS_URL: starting a redis-server of its own")
                await self.procs.start_redis()
        await self.procs.migrate()
        # This process counts the rows: the same database, the same settings.
        os.environ.update(
            DJANGO_SETTINGS_MODULE="project.settings",
            DATABASE_URL=self.procs.env["DATABASE_URL"],
            DJANGO_DEBUG="0",
        )
        import django

        django.setup()
        for n in range(1, args.servers + 1):
            port = free_port()
            server = await self.procs.spawn(
                f"daphne-{n}",
                *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)),
                "project.asgi:application",
            )
            await self.procs.wait_listening(server, port)
            self.servers.append(server)
            self.ports.append(port)

    def frame_rate(self) -> tuple[float, float]:
        """Frames per second each client sends, and the server's limit (``RATE_LIMIT``)."""
        from realtime.conf import realtime_settings

        limit = float(realtime_settings.RATE_LIMIT["rate"])
        wanted = self.args.frame_rate if self.args.frame_rate is not None else limit / 2
        if wanted > limit:
            raise BenchError(
                f"--frame-rate {wanted:g} is over the server's RATE_LIMIT of {limit:g} "
                "frames/s: frames would be dropped. Use at most the limit."
            )
        return wanted, limit

    async def run(self) -> dict[str, Any]:
        args = self.args
        await self.set_up()
        rate, limit = self.frame_rate()
        database = self.procs.env["DATABASE_URL"].split(":", 1)[0]
        log(
            f"soak: {args.servers} daphne process(es) on {database}, {self.layer} channel "
            f"layer; {args.clients} anonymous WebSocket clients churning for {args.duration:g} s"
        )
        log(
            f"soak: each client, at most {rate:g} frames/s (the server allows {limit:g}): "
            f"subscribe to a fresh {STREAM_PREFIX}<random> stream, join its presence, leave, "
            f"unsubscribe; every ~{args.reconnect_every} cycles it disconnects (half the "
            "time while still present) and connects again"
        )
        log(
            f"soak: every {args.interval:g} s: rows of every realtime table and each server's "
            f"RSS; the first {args.warmup:g} s are warm-up"
        )
        samples: list[dict[str, Any]] = []
        baseline = await self.rows()
        samples.append(self.sample("before", 0.0, baseline))
        self.progress(samples)
        stop = asyncio.Event()
        urls = [f"ws://127.0.0.1:{port}{WS_PATH}" for port in self.ports]
        churners = [
            Churner(i, urls[i % len(urls)], self.tally, args, 1.0 / rate)
            for i in range(args.clients)
        ]
        tasks = [asyncio.create_task(c.run(stop)) for c in churners]
        began = time.monotonic()
        try:
            for at in sample_times(args.duration, args.interval):
                await asyncio.sleep(max(0.0, began + at - time.monotonic()))
                samples.append(self.sample(f"{at:g} s", at, await self.rows()))
                self.progress(samples)
        finally:
            stop.set()
            log("soak: stopping the clients (each finishes its cycle, then closes)")
            _, pending = await asyncio.wait(tasks, timeout=REPLY_TIMEOUT + CLOSE_TIMEOUT + 5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        expected = {**baseline, SERVER_ROWS: len(self.servers)}
        log(f"soak: every client closed; waiting up to {args.settle:g} s for the rows to go")
        closed_at = time.monotonic()
        rows = await self.rows()
        while rows != expected and time.monotonic() - closed_at < args.settle:
            await asyncio.sleep(0.5)
            rows = await self.rows()
        after = self.sample("after close", round(time.monotonic() - began, 1), rows)
        after["settled_s"] = round(time.monotonic() - closed_at, 1)
        samples.append(after)
        self.progress(samples)
        report: dict[str, Any] = {
            "config": {
                **{k: getattr(args, k) for k in ("clients", "servers", "duration", "interval")},
                **{k: getattr(args, k) for k in ("warmup", "reconnect_every", "seed")},
                "frame_rate": rate,
                "rate_limit": limit,
                "database": database,
                "channel_layer": self.layer,
                "row_slack": args.row_slack,
                "rss_limit_mib": args.rss_limit,
            },
            "tables": list(baseline),
            "servers": self.names(),
            "samples": samples,
            "expected_after_close": expected,
            "churn": self.tally.snapshot(),
            "server_errors": self.server_errors(),
        }
        report["verdict"] = judge(report)
        return report

    def sample(self, label: str, at: float, rows: dict[str, int]) -> dict[str, Any]:
        return {
            "label": label,
            "t": at,
            **self.tally.snapshot(),
            "rows": rows,
            "rss_mib": self.rss(),
        }

    def progress(self, samples: list[dict[str, Any]]) -> None:
        """Two or three lines a newcomer can read: what the clients did, rows, memory."""
        now, first = samples[-1], samples[0]
        if len(samples) > 1 and now["label"] != "after close":
            before = samples[-2]
            rate = (now["cycles"] - before["cycles"]) / max(now["t"] - before["t"], 1e-6)
            errors = sum(now["errors"].values())
            log(
                f"[{now['t']:5.0f} s] {now['cycles']:,} cycles ({rate:,.0f}/s), "
                f"{now['connected']}/{self.args.clients} connected, "
                f"{now['reconnects']:,} reconnects ({now['cut_short']:,} while present), "
                f"{errors} error frames, {sum(now['failures'].values())} broken connections"
            )
        else:
            log(f"[{now['label']}]")
        cells = []
        for table, count in now["rows"].items():
            change = count - first["rows"][table]
            if count or change:
                cells.append(f"{table} {count:,}" + (f" ({change:+,})" if change else ""))
        log("         rows: " + ("  ".join(cells) or "every realtime table is empty"))
        rss = [
            f"{name} {value} MiB" for name, value in zip(self.names(), now["rss_mib"], strict=True)
        ]
        if rss:
            log("         RSS:  " + "  ".join(rss))

    def names(self) -> list[str]:
        return [f"server {n}" for n in range(1, len(self.servers) + 1)]

    def server_errors(self) -> list[str]:
        """The servers' error lines (tracebacks, ERROR log records), the first few of each."""
        lines: list[str] = []
        for server in self.servers:
            text = server.logfile.read_text(errors="replace").splitlines()
            bad = [line for line in text if "Traceback" in line or " ERROR " in line]
            lines += [f"{server.name}: {line}" for line in bad[:5]]
        return lines

    async def cleanup(self) -> None:
        await self.procs.stop_all()
        with contextlib.suppress(Exception):
            from django.db import connections

            await asyncio.get_running_loop().run_in_executor(self.db, connections.close_all)
        self.db.shutdown(wait=False)
        if self.pg_database and self.pg_admin_url and not self.args.keep_tmp:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    pg_admin,
                    self.pg_admin_url,
                    f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)',
                )
        if self.args.keep_tmp:
            where = f" (and the database {self.pg_database})" if self.pg_database else ""
            log(f"soak: logs and database kept in {self.tmp}{where}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def sample_times(duration: float, interval: float) -> list[float]:
    """Every ``interval`` seconds until ``duration``, which is always the last."""
    count = math.ceil(duration / interval - 1e-9)
    return [round(min(k * interval, duration), 3) for k in range(1, count + 1)]


# --- the verdict ----------------------------------------------------------------------------
def judge(report: dict[str, Any]) -> dict[str, Any]:
    """Rows plateau, RSS plateau, nothing left behind, churn ran: see the module docstring."""
    cfg = report["config"]
    samples = report["samples"]
    during = [s for s in samples if s["label"] not in ("before", "after close")]
    warm = [s for s in during if s["t"] <= cfg["warmup"] + 1e-9]
    reference = warm[-1] if warm else during[0]
    later = [s for s in during if s["t"] > reference["t"]]
    growth = {
        table: max((s["rows"][table] for s in later), default=reference["rows"][table])
        - reference["rows"][table]
        for table in report["tables"]
    }
    growing = {t: g for t, g in growth.items() if g > cfg["row_slack"]}
    half = next(s for s in during if s["t"] >= cfg["duration"] / 2 - 1e-9)
    last = during[-1]
    rss_growth = [
        None if a is None or b is None else round(b - a, 1)
        for a, b in zip(half["rss_mib"], last["rss_mib"], strict=True)
    ]
    after = samples[-1]
    left = {
        table: after["rows"][table] - report["expected_after_close"][table]
        for table in report["tables"]
        if after["rows"][table] != report["expected_after_close"][table]
    }
    churn = report["churn"]
    churn_ok = churn["cycles"] >= cfg["clients"] and not report["server_errors"]
    verdict: dict[str, Any] = {
        "rows": {
            "ok": not growing,
            "from": reference["label"],
            "growth": growth,
            "growing": growing,
            "per_second": {
                t: round(g / max(last["t"] - reference["t"], 1e-6), 1) for t, g in growing.items()
            },
        },
        "rss": {
            "ok": all(g is not None and g <= cfg["rss_limit_mib"] for g in rss_growth),
            "from": half["label"],
            "to": last["label"],
            "growth_mib": rss_growth,
        },
        "left_behind": {"ok": not left, "rows": left, "settled_s": after.get("settled_s")},
        "churn": {"ok": churn_ok},
    }
    verdict["ok"] = all(v["ok"] for v in verdict.values())
    return verdict


# --- the report -----------------------------------------------------------------------------
def markdown(report: dict[str, Any]) -> str:
    cfg, verdict = report["config"], report["verdict"]
    tables, servers = report["tables"], report["servers"]
    churn = report["churn"]
    lines = [
        "## Soak",
        "",
        f"{cfg['clients']} anonymous WebSocket clients on {cfg['servers']} daphne process(es) "
        f"({cfg['database']}, {cfg['channel_layer']} channel layer) for {cfg['duration']:g} s, "
        f"each at most {cfg['frame_rate']:g} frames/s (limit {cfg['rate_limit']:g}): "
        f"{churn['cycles']:,} cycles (subscribe to a never-published stream, join, leave, "
        f"unsubscribe), {churn['reconnects']:,} reconnections, {churn['cut_short']:,} of them "
        f"while present; {sum(churn['errors'].values())} error frames"
        + (f" ({_counts(churn['errors'])})" if churn["errors"] else "")
        + f", {sum(churn['failures'].values())} broken connections"
        + (f" ({_counts(churn['failures'])})" if churn["failures"] else "")
        + ".",
        "",
        "| after | cycles | "
        + " | ".join(tables)
        + " | "
        + " | ".join(f"{s} MiB" for s in servers)
        + " |",
        "|---|---:|" + "---:|" * (len(tables) + len(servers)),
    ]
    for s in report["samples"]:
        label = s["label"] + (f" (+{s['settled_s']:g} s)" if "settled_s" in s else "")
        cells = [f"{s['rows'][t]:,}" for t in tables]
        cells += ["-" if v is None else f"{v:.1f}" for v in s["rss_mib"]]
        lines.append(f"| {label} | {s['cycles']:,} | " + " | ".join(cells) + " |")
    rows, rss, left = verdict["rows"], verdict["rss"], verdict["left_behind"]
    lines.append("")
    if rows["ok"]:
        biggest = max(rows["growth"].items(), key=lambda item: item[1])
        lines.append(
            f"- rows: **plateau** — after the warm-up ({rows['from']}) no table grew by more "
            f"than {cfg['row_slack']} rows (most: {biggest[0]} {biggest[1]:+,})"
        )
    else:
        grew = ", ".join(
            f"{t} {g:+,} ({rows['per_second'][t]:,}/s)" for t, g in rows["growing"].items()
        )
        lines.append(
            f"- rows: **GROWING** after the warm-up ({rows['from']}): {grew}; "
            f"allowed {cfg['row_slack']}"
        )
    growth = ", ".join("-" if g is None else f"{g:+.1f}" for g in rss["growth_mib"])
    lines.append(
        f"- RSS: **{'plateau' if rss['ok'] else 'GROWING'}** — from {rss['from']} to "
        f"{rss['to']}: {growth} MiB; allowed {cfg['rss_limit_mib']:g} MiB"
    )
    if left["ok"]:
        lines.append(
            f"- after every client closed: **nothing left behind** (settled in "
            f"{left['settled_s']:g} s)"
        )
    else:
        lines.append(
            f"- after every client closed: **LEFT BEHIND** after {left['settled_s']:g} s: "
            + ", ".join(f"{t} {n:+,}" for t, n in left["rows"].items())
        )
    if report["server_errors"]:
        lines.append(f"- the servers logged errors: {report['server_errors'][0]}")
    if churn["cycles"] < cfg["clients"]:
        lines.append(f"- the clients completed only {churn['cycles']} cycles")
    lines += ["", f"Verdict: **{'PASS' if verdict['ok'] else 'FAIL'}**"]
    return "\n".join(lines) + "\n"


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counter.items())


# --- the command line -----------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Anonymous WebSocket clients churn against fresh daphne processes (connect, "
        "subscribe to never-published streams, join and leave presence, unsubscribe, "
        "reconnect); checks that the realtime tables' rows and the servers' RSS plateau.",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of churn (60)")
    parser.add_argument("--clients", type=int, default=20, help="WebSocket clients (20)")
    parser.add_argument("--servers", type=int, default=2, help="daphne processes (2)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument(
        "--warmup", type=float, help="seconds not judged for row growth (default: one interval)"
    )
    parser.add_argument(
        "--frame-rate",
        type=float,
        help="frames/s each client sends at most (default: half the server's RATE_LIMIT)",
    )
    parser.add_argument(
        "--reconnect-every",
        type=int,
        default=20,
        help="cycles per connection on average before it disconnects (20)",
    )
    parser.add_argument(
        "--row-slack",
        type=int,
        help="rows a table may grow by after the warm-up (default: twice --clients, plus 10)",
    )
    parser.add_argument(
        "--rss-limit",
        type=float,
        default=8.0,
        help="MiB a server's RSS may grow by over the second half (8)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="most seconds to wait, after the clients closed, for their rows to go (15)",
    )
    parser.add_argument(
        "--database-url",
        help="postgres://user@host/db: a new database is created on that server (and dropped "
        "afterwards); default: a new SQLite file",
    )
    parser.add_argument("--seed", default="soak", help="seeds the clients' choices")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the logs and database")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = args.interval
    if args.row_slack is None:
        args.row_slack = 2 * args.clients + 10
    check_bounds(
        parser,
        [
            (args.duration, 5, 3600, "--duration"),
            (args.clients, 1, 500, "--clients"),
            (args.servers, 1, 8, "--servers"),
            (args.interval, 1, 600, "--interval"),
            (args.duration / args.interval, 3, 360, "--duration / --interval (samples)"),
            (args.warmup, 0, args.duration - args.interval, "--warmup"),
            (args.frame_rate if args.frame_rate is not None else 1, 0.2, 10_000, "--frame-rate"),
            (args.reconnect_every, 1, 10_000, "--reconnect-every"),
            (args.row_slack, 0, 10**9, "--row-slack"),
            (args.rss_limit, 0, 10_000, "--rss-limit"),
            (args.settle, 0, 300, "--settle"),
        ],
    )
    return args


async def amain(args: argparse.Namespace) -> int:
    raise_fd_limit(args.clients)
    soak = Soak(args)
    try:
        report = await soak.run()
    finally:
        await soak.cleanup()
    print("\n" + markdown(report), flush=True)
    if args.json:
        write_json(args.json, report, "soak")
    return 0 if report["verdict"]["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_tool("soak", lambda: amain(args))


if __name__ == "__main__":
    sys.exit(main())
