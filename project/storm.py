"""Connection storm: a thousand clients reconnecting at once, as after a deploy.

``python -m project.storm`` starts one daphne process (``project.storm_settings``: the demo's
settings plus a count of every SQL statement the process runs) on its own SQLite file (or on
``--database-url``), with its own Redis, and opens ``--clients`` WebSocket connections at
the same instant from this process. Each client waits for ``welcome``, then (unless
``--no-subscribe``) subscribes to one stream with ``since: 0``, as a client resuming after
a deploy does. It reports, per run:

* the time until every client was admitted (``welcome``) and subscribed, with the
  p50/p95/max per client, and the failures (refused handshakes, timeouts, closes);
* the time until every ``Connection`` row was recorded, and the SQL statements (by kind)
  and database connections the server process used per client;
* the server's CPU time; then the same for closing every client at once.

Runs: ``--modes anonymous,signed-in`` (signed-in clients carry a session cookie of their own
user each: session and user lookups, online status). Every wait is bounded (``--timeout``),
every process is stopped on the way out. The Markdown summary goes to stdout, progress to
stderr, JSON to ``--json PATH``. Results: docs/performance.md ("Connection storms").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

PRESENCE_GRACE = "0"  # closed connections leave at once, so the close storm is measured


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Storm:
    def __init__(self, args: argparse.Namespace) -> None:
        from project.bench_procs import Processes

        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="realtime-storm-"))
        self.counts = self.tmp / "counts.json"
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="project.storm_settings",
            DATABASE_URL=args.database_url or f"sqlite:///{self.tmp / 'storm.sqlite3'}",
            DJANGO_DEBUG="0",
            REALTIME_LOG="WARNING",
            REALTIME_PRESENCE_GRACE=PRESENCE_GRACE,
            PYTHONUNBUFFERED="1",
            STORM_COUNTS=str(self.counts),
        )
        self.procs = Processes(self.tmp, env)

    def read_counts(self) -> Counter[str]:
        try:
            return Counter(json.loads(self.counts.read_text()))
        except (OSError, ValueError):
            return Counter()

    async def run(self) -> dict[str, Any]:
        from project.bench_procs import log

        await self.procs.start_redis()
        await self.procs.migrate()
        # This process reads the same database (Connection rows, users, sessions).
        os.environ.update(
            DATABASE_URL=self.procs.env["DATABASE_URL"],
            REDIS_URL=self.procs.env["REDIS_URL"],
            DJANGO_SETTINGS_MODULE="project.settings",
        )
        import django

        django.setup()
        results: dict[str, Any] = {
            "clients": self.args.clients,
            "database": self.procs.env["DATABASE_URL"].split(":", 1)[0],
            "backlog": self.args.backlog,
            "daphne_args": self.args.daphne_args,
            "runs": {},
        }
        for mode in self.args.modes:
            log(f"[{mode}] starting a daphne process")
            results["runs"][mode] = await self.one_run(mode)
        return results

    async def start_server(self) -> tuple[Any, int]:
        from project.bench_procs import free_port

        port = free_port()
        endpoint = f"tcp:port={port}:interface=127.0.0.1"
        if self.args.backlog:
            endpoint += f":backlog={self.args.backlog}"
        server = await self.procs.spawn(
            "daphne",
            *(sys.executable, "-m", "daphne", "-e", endpoint),
            *self.args.daphne_args.split(),
            "project.asgi:application",
        )
        await self.procs.wait_listening(server, port)
        return server, port

    async def one_run(self, mode: str) -> dict[str, Any]:
        from asgiref.sync import sync_to_async

        from project.bench_procs import cpu_pct, cpu_sample, log
        from project.storm_client import Clients
        from realtime.models import Connection

        cookies = await sync_to_async(self.sessions)(mode)
        server, port = await self.start_server()
        url = f"ws://127.0.0.1:{port}/realtime/ws/"
        count_rows = sync_to_async(Connection.objects.count)
        try:
            # A new process's first connection starts its hub (lease, channel, imports):
            # timed apart, so the storm measures admission itself.
            warm = time.perf_counter()
            await Clients(url, self.args, [None]).open_all_and_close()
            cold_start = round(time.perf_counter() - warm, 3)
            await asyncio.sleep(0.5)
            before, cpu_before = self.read_counts(), cpu_sample({"server": server})
            log(f"[{mode}] opening {self.args.clients} connections at once")
            clients = Clients(url, self.args, cookies)
            began = time.perf_counter()
            await clients.open_all()
            admitted = time.perf_counter() - began
            recorded = await self.wait_rows(count_rows, clients.open_count, began)
            await asyncio.sleep(0.6)  # the counts file is rewritten every 0.25 s
            opened_counts = self.read_counts() - before
            cpu_open = cpu_pct(cpu_before, cpu_sample({"server": server}))
            open_seconds = time.perf_counter() - began
            n = max(1, clients.open_count)
            log(f"[{mode}] {clients.open_count} open, {len(clients.failures)} failed")

            # Holding them: heartbeats every 10 s must cost no database write each; the
            # lease renewal (every PRESENCE_TIMEOUT / 3) refreshes every record at once.
            log(f"[{mode}] holding them for {self.args.hold:g} s")
            before_hold = self.read_counts()
            await asyncio.sleep(self.args.hold)
            held_counts = self.read_counts() - before_hold
            log(f"[{mode}] closing")

            before_close, cpu_before = self.read_counts(), cpu_sample({"server": server})
            closing = time.perf_counter()
            await clients.close_all()
            gone = await self.wait_rows(count_rows, 0, closing)
            await asyncio.sleep(0.6)
            closed_counts = self.read_counts() - before_close
            cpu_close = cpu_pct(cpu_before, cpu_sample({"server": server}))
            close_seconds = time.perf_counter() - closing
            server_errors = sum(
                "Traceback" in line or " ERROR " in line
                for line in server.logfile.read_text(errors="replace").splitlines()
            )
        finally:
            await self.procs.stop([server])
        return {
            "mode": mode,
            "cold_start_s": cold_start,
            "open": clients.open_count,
            "failures": dict(Counter(clients.failures)),
            "server_errors": server_errors,
            "admitted_all_s": round(clients.last_welcome - began, 3) if clients.welcomes else None,
            "subscribed_all_s": (
                round(clients.last_subscribed - began, 3) if clients.subscribed else None
            ),
            "storm_s": round(admitted, 3),
            "welcome_p50_s": percentile(clients.welcomes, 0.5),
            "welcome_p95_s": percentile(clients.welcomes, 0.95),
            "welcome_max_s": max(clients.welcomes, default=None),
            "subscribed_p95_s": percentile(clients.subscribed, 0.95),
            "recorded_all_s": recorded,
            "statements_per_connection": round(
                sum(v for k, v in opened_counts.items() if k != "connections opened") / n, 2
            ),
            "statements_by_kind": {k: round(v / n, 2) for k, v in opened_counts.most_common()},
            "db_connections_per_connection": round(opened_counts["connections opened"] / n, 2),
            "server_cpu_s": round(cpu_open["server"] / 100 * open_seconds, 2),
            "closed_all_s": gone,
            "close_statements_per_connection": round(
                sum(v for k, v in closed_counts.items() if k != "connections opened") / n, 2
            ),
            "close_statements_by_kind": {
                k: round(v / n, 2) for k, v in closed_counts.most_common()
            },
            "close_server_cpu_s": round(cpu_close["server"] / 100 * close_seconds, 2),
            "hold_s": self.args.hold,
            "hold_statements": dict(held_counts.most_common()),
        }

    async def wait_rows(self, count: Any, target: int, since: float) -> float | None:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            if await count() == target:
                return round(time.perf_counter() - since, 3)
            await asyncio.sleep(0.05)
        return None

    def sessions(self, mode: str) -> list[str | None]:
        """A session cookie per client: each its own signed-in user, or none."""
        if mode == "anonymous":
            return [None] * self.args.clients
        from django.contrib.auth import (
            BACKEND_SESSION_KEY,
            HASH_SESSION_KEY,
            SESSION_KEY,
            get_user_model,
        )
        from django.contrib.sessions.backends.db import SessionStore

        model = get_user_model()
        prefix = f"storm{int(time.time())}-"
        model.objects.bulk_create(
            [model(username=f"{prefix}{i}", password="!") for i in range(self.args.clients)]
        )
        cookies: list[str | None] = []
        for user in model.objects.filter(username__startswith=prefix).order_by("pk"):
            session = SessionStore()
            session[SESSION_KEY] = str(user.pk)
            session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.create()
            cookies.append(f"sessionid={session.session_key}")
        return cookies

    async def cleanup(self) -> None:
        await self.procs.stop_all()
        if self.args.keep_tmp:
            print(f"logs and database kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def markdown(results: dict[str, Any]) -> str:
    def cell(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}{unit}"
        return f"{value}{unit}"

    runs = results["runs"]
    lines = [
        f"{results['clients']} clients at once, one daphne process, {results['database']}"
        + (f", listen backlog {results['backlog']}" if results["backlog"] else "")
        + (f", daphne {results['daphne_args']}" if results["daphne_args"] else ""),
        "",
        "| | " + " | ".join(runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    rows = [
        ("first connection of the new process (starts its hub)", "cold_start_s", " s"),
        ("admitted (all `welcome`)", "admitted_all_s", " s"),
        ("subscribed (all `subscribed`)", "subscribed_all_s", " s"),
        ("per client: welcome p50", "welcome_p50_s", " s"),
        ("per client: welcome p95", "welcome_p95_s", " s"),
        ("per client: welcome max", "welcome_max_s", " s"),
        ("all `Connection` rows recorded", "recorded_all_s", " s"),
        ("failures", "failures", ""),
        ("server errors logged", "server_errors", ""),
        ("SQL statements per connection", "statements_per_connection", ""),
        (
            "database connections opened (or taken from the pool) per connection",
            "db_connections_per_connection",
            "",
        ),
        ("server CPU for the storm", "server_cpu_s", " s"),
        ("holding them: SQL statements in all", "hold_total", ""),
        ("close all: rows gone after", "closed_all_s", " s"),
        ("close: SQL statements per connection", "close_statements_per_connection", ""),
        ("close: server CPU", "close_server_cpu_s", " s"),
    ]
    for label, key, unit in rows:
        values = []
        for run in runs.values():
            value = run.get(key)
            if key == "failures":
                value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
            elif key == "hold_total":
                held = run["hold_statements"]
                total = sum(v for k, v in held.items() if k != "connections opened")
                value = f"{total} in {run['hold_s']:g} s"
            values.append(cell(value, unit))
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    lines.append("")
    for mode, run in runs.items():
        kinds = ", ".join(f"{k} {v:g}" for k, v in run["statements_by_kind"].items())
        lines.append(f"- {mode}, per connection: {kinds}")
        held = ", ".join(f"{k} {v}" for k, v in run["hold_statements"].items())
        lines.append(f"- {mode}, holding {run['open']} for {run['hold_s']:g} s: {held or 'none'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m project.storm",
        description="Open many WebSocket clients at once against one daphne process and "
        "measure admission time, failures and database work per connection.",
    )
    parser.add_argument("--clients", type=int, default=1000, help="clients (default 1000)")
    parser.add_argument(
        "--modes",
        default="anonymous,signed-in",
        type=lambda s: [m for m in s.split(",") if m],
        help="runs, comma-separated: anonymous, signed-in (default both)",
    )
    parser.add_argument("--stream", default="public:storm", help="stream each client resumes")
    parser.add_argument(
        "--no-subscribe", dest="subscribe", action="store_false", help="only connect"
    )
    parser.add_argument(
        "--database-url", help="e.g. postgres://user@127.0.0.1/db (default: a new SQLite file)"
    )
    parser.add_argument(
        "--backlog", type=int, help="daphne's listen backlog (Twisted's default: 50)"
    )
    parser.add_argument(
        "--daphne-args",
        default="",
        help='more daphne options, e.g. "--websocket_connect_timeout 30" (daphne drops a '
        "handshake the application has not accepted within 5 s by default)",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=25.0,
        help="seconds to keep the clients open, heartbeating, before closing (default 25: "
        "two lease renewals)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="bound on each wait (s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the logs and database")
    args = parser.parse_args(argv)
    bad = set(args.modes) - {"anonymous", "signed-in"}
    if bad:
        parser.error(f"unknown mode(s): {', '.join(sorted(bad))}")
    return args


async def amain(args: argparse.Namespace) -> int:
    storm = Storm(args)
    try:
        results = await storm.run()
    finally:
        await storm.cleanup()
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(not r["failures"] for r in results["runs"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Two sockets per client on this machine (client and server side): raise the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.clients + 256)), hard))
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
