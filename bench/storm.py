"""Connection storms: thousands of clients reconnecting at once, as after a deploy.

``python -m bench.storm`` runs one daphne process (``bench.storm_settings``: the demo's
settings plus a count of every SQL statement the process runs) on its own SQLite file (or a
database of its own on the PostgreSQL server of ``--database-url``), with its own Redis,
against ``--clients`` WebSocket clients in this process. Two scenarios:

``restart`` (the default), what a deploy does to a process's clients:

1. the clients connect (a few at a time: setting up is not measured) and each subscribes
   to one stream; ``--before`` events are published and every client receives them live;
2. the server is stopped (``--signals``: ``term`` sends SIGTERM, as systemd or a deploy
   does; ``kill`` sends SIGKILL, a crash) and ``--missed`` events are published while it is
   down, so every client has something to resume;
3. a new daphne process starts on the same port, and every client reconnects after its own
   random delay in [0, ``--spread``) s (the browser client's jittered backoff), subscribing
   with ``since`` = the last seq it received and its ``epoch``;
4. one more event is published live; every client must then hold exactly the events after
   its ``since``: each once, in order, none missing.

It reports admissions and failures, the time until every client was admitted
(``welcome``), resubscribed and caught up, per-client p50/p95/max, the SQL statements (by
kind and table) and database connections the new process used per client, its CPU time,
and how long the stopped process's rows stayed in the database.

``burst``: every client opens at the same instant against a fresh process, is held open
(``--hold``, heartbeating), then all close at once; the same figures for both halves.

Both run once per ``--modes`` entry: ``anonymous`` clients, or ``signed-in`` ones (each its
own user and session cookie: session and user lookups, online status). Every wait is bounded
(``--timeout``), every process is stopped on the way out. Progress goes to stderr, the
Markdown summary to stdout, JSON to ``--json PATH``. Results: docs/performance.md
("Connection storms").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Burst: closed connections leave at once, so the close storm is measured. A restart keeps
# the settings' grace (3 s), as in production: the stopping process does not wait for it.
PRESENCE_GRACE = "0"
SETUP_CONCURRENCY = 50  # handshakes at a time while setting a restart up
STOP_TIMEOUT = 30.0  # seconds a SIGTERM'd server gets to exit before it is killed
STORM_APP = "realtime-storm-server"  # the server's PostgreSQL application_name
PEAK = "peak connections in use"  # written by bench.storm_settings
NOT_STATEMENTS = {"connections opened", PEAK}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def per_client(counts: Counter[str], n: int) -> dict[str, Any]:
    """Statement counts divided by ``n``: in all, by first word, and by kind and table."""
    n = max(1, n)
    statements = Counter({k: v for k, v in counts.items() if k not in NOT_STATEMENTS})
    words: Counter[str] = Counter()
    for kind, value in statements.items():
        words[kind.split()[0]] += value
    return {
        "statements": round(sum(statements.values()) / n, 2),
        "by_word": {k: round(v / n, 2) for k, v in words.most_common()},
        "by_table": {k: round(v / n, 2) for k, v in statements.most_common()},
        "db_connections": round(counts["connections opened"] / n, 2),
    }


class BackendSampler:
    """The PostgreSQL backends the server holds (its ``application_name``), sampled in a
    thread every 0.1 s; keeps the peak."""

    def __init__(self, database_url: str | None) -> None:
        self.url = database_url
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storm-pg-sampler", daemon=True)

    def __enter__(self) -> BackendSampler:
        if self.url is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        with contextlib.suppress(Exception), psycopg.connect(str(self.url), autocommit=True) as db:
            self.peak = 0
            while not self._stop.is_set():
                row = db.execute(query, (STORM_APP,)).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                self._stop.wait(0.1)


class Storm:
    def __init__(self, args: argparse.Namespace) -> None:
        from bench.procs import Processes

        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="realtime-storm-"))
        self.counts = self.tmp / "counts.json"
        self.pg_admin_url: str | None = None
        self.pg_database: str | None = None
        if args.database_url and args.database_url.startswith("postgres"):
            # A database of our own on that server: its rows are only ours, and go with it.
            parts = urlsplit(args.database_url)
            self.pg_admin_url = args.database_url
            self.pg_database = f"{parts.path.lstrip('/') or 'postgres'}_storm_{os.getpid()}"
            database_url = urlunsplit(parts._replace(path=f"/{self.pg_database}"))
        elif args.database_url:
            database_url = args.database_url
        else:
            database_url = f"sqlite:///{self.tmp / 'storm.sqlite3'}"
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="bench.storm_settings",
            DATABASE_URL=database_url,
            DJANGO_DEBUG="0",
            REALTIME_LOG="WARNING",
            PYTHONUNBUFFERED="1",
            STORM_COUNTS=str(self.counts),
            PGAPPNAME=STORM_APP,
        )
        if args.scenario == "burst":
            env["REALTIME_PRESENCE_GRACE"] = PRESENCE_GRACE
        self.procs = Processes(self.tmp, env)

    # --- set-up ----------------------------------------------------------------------------
    def create_database(self) -> None:
        if self.pg_admin_url is None:
            return
        import psycopg

        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.pg_database}"')

    def drop_database(self) -> None:
        if self.pg_admin_url is None or self.args.keep_tmp:
            return
        import psycopg

        with (
            contextlib.suppress(Exception),
            psycopg.connect(self.pg_admin_url, autocommit=True) as conn,
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')

    async def run(self) -> dict[str, Any]:
        from bench.procs import log

        await self.procs.start_redis()
        if self.pg_database:
            log(f"creating the database {self.pg_database} (dropped at the end)")
            await asyncio.to_thread(self.create_database)
        await self.procs.migrate()
        # This process reads and writes the same database (rows, users, sessions, events).
        os.environ.update(
            DATABASE_URL=self.procs.env["DATABASE_URL"],
            REDIS_URL=self.procs.env["REDIS_URL"],
            DJANGO_SETTINGS_MODULE="project.settings",
        )
        import django

        django.setup()
        results: dict[str, Any] = {
            "scenario": self.args.scenario,
            "clients": self.args.clients,
            "database": self.procs.env["DATABASE_URL"].split(":", 1)[0],
            "backlog": self.args.backlog,
            "daphne_args": self.args.daphne_args,
            "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "addresses": self.args.addresses,
            "spread": self.args.spread,
            "runs": {},
        }
        for mode in self.args.modes:
            if self.args.scenario == "burst":
                log(f"[{mode}] starting a daphne process")
                results["runs"][mode] = await self.burst_run(mode)
                continue
            for how in self.args.signals:
                label = f"{mode}, SIG{how.upper()}"
                results["runs"][label] = await self.restart_run(mode, how, label)
        return results

    def read_counts(self) -> Counter[str]:
        try:
            return Counter(json.loads(self.counts.read_text()))
        except (OSError, ValueError):
            return Counter()

    async def settled_counts(self) -> Counter[str]:
        """The server's counts once its dump thread (every 0.25 s) has written the latest."""
        await asyncio.sleep(0.6)
        return self.read_counts()

    async def start_server(self, port: int | None = None) -> tuple[Any, int]:
        from bench.procs import free_port

        port = port or free_port()
        self.counts.unlink(missing_ok=True)  # the new process counts from zero
        endpoint = f"tcp:port={port}:interface=127.0.0.1"
        if self.args.backlog:
            endpoint += f":backlog={self.args.backlog}"
        server = await self.procs.spawn(
            f"daphne-{port}",
            *(sys.executable, "-m", "daphne", "-e", endpoint),
            *self.args.daphne_args.split(),
            "project.asgi:application",
        )
        await self.procs.wait_listening(server, port)
        return server, port

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
        prefix = f"storm{time.time_ns()}-"
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

    async def wait_for(
        self, check: Callable[[], Awaitable[bool] | bool], since: float
    ) -> float | None:
        """Seconds from ``since`` until ``check()`` holds, polled; None after ``--timeout``."""
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            result = check()
            if result if isinstance(result, bool) else await result:
                return round(time.perf_counter() - since, 3)
            await asyncio.sleep(0.05)
        return None

    @contextlib.contextmanager
    def ticker(self, label: str, clients: Any, every: float = 2.0) -> Iterator[None]:
        """Progress on stderr every ``every`` seconds while the block runs."""
        from bench.procs import log

        async def tick() -> None:
            while True:
                await asyncio.sleep(every)
                log(
                    f"[{label}]   {time.perf_counter() - clients.began:5.1f} s: "
                    f"{clients.progress()}"
                )

        task = asyncio.get_running_loop().create_task(tick())
        try:
            yield
        finally:
            task.cancel()

    async def publish(self, stream: str, event: str, count: int) -> int:
        """``count`` events, stored and sent as ``realtime.publish`` does; returns the head."""
        from asgiref.sync import sync_to_async

        from realtime import publish

        seq = 0
        for n in range(count):
            stored = await sync_to_async(publish, thread_sensitive=False)(stream, event, {"n": n})
            seq = int(stored.seq)
        return seq

    async def quiet(self, label: str) -> float:
        """Wait up to ``--wait-quiet`` s for the machine's other work to drop under
        ``--max-other`` % of a core; returns the load measured last (% of a core)."""
        from bench.procs import background_load, log

        deadline = time.monotonic() + self.args.wait_quiet
        while True:
            load = await background_load()
            if load <= self.args.max_other or time.monotonic() >= deadline:
                return load
            log(f"[{label}] the machine is busy ({load:.0f} % of a core): waiting")

    def server_errors(self, *servers: Any) -> int:
        return sum(
            "Traceback" in line or " ERROR " in line
            for server in servers
            for line in server.logfile.read_text(errors="replace").splitlines()
        )

    # --- the restart scenario -----------------------------------------------------------
    async def restart_run(self, mode: str, how: str, label: str) -> dict[str, Any]:
        from asgiref.sync import sync_to_async

        from bench.procs import THIS_PROCESS, BenchError, cpu_pct, cpu_sample, log
        from bench.storm_client import Clients
        from realtime.models import Connection, Server

        args, n = self.args, self.args.clients
        stream = f"{args.stream}-{mode}-{how}"
        if mode != "anonymous":
            log(f"[{label}] creating {n} users and sessions")
        cookies = await sync_to_async(self.sessions)(mode)
        log(f"[{label}] starting a daphne process")
        server, port = await self.start_server()
        servers = [server]
        url = f"ws://127.0.0.1:{port}/realtime/ws/"
        clients = Clients(url, args, cookies, stream)
        run: dict[str, Any] = {"mode": mode, "signal": f"SIG{how.upper()}", "stream": stream}
        try:
            # 1. Connected and subscribed, a few at a time: this part is not measured.
            log(
                f"[{label}] connecting {n} clients ({SETUP_CONCURRENCY} handshakes at a time), "
                f"each subscribing to {stream}"
            )
            with self.ticker(label, clients):
                await clients.open_gradually(SETUP_CONCURRENCY)
            if clients.failures:
                raise BenchError(
                    f"setting up, {len(clients.failures)} of {n} clients could not connect: "
                    f"{dict(Counter(clients.failures))}"
                )
            head = await self.publish(stream, "storm.before", args.before)
            live = await self.wait_for(
                lambda: all(c.last_seq >= head for c in clients.clients), time.perf_counter()
            )
            if live is None:
                behind = sum(c.last_seq < head for c in clients.clients)
                raise BenchError(f"{behind} clients did not receive the first events live")
            log(f"[{label}] {n} clients connected; {args.before} events received live by all")
            old_id = await sync_to_async(
                lambda: Server.objects.filter(pid=server.pid).values_list("id", flat=True)[0]
            )()

            run["other_load_pct"] = await self.quiet(label)

            # 2. Stopped; events published while it is down.
            log(f"[{label}] stopping the server with SIG{how.upper()}")
            stopping = time.perf_counter()
            server.process.send_signal(signal.SIGTERM if how == "term" else signal.SIGKILL)
            try:
                await asyncio.wait_for(server.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log(f"[{label}] not stopped after {STOP_TIMEOUT:g} s: killing it")
                run["stop_timed_out"] = True
            await self.procs.stop([server])
            run["stop_s"] = round(time.perf_counter() - stopping, 3)
            await clients.wait_all("gone", 10)
            clients.stop_pinger()
            run["close_codes"] = dict(Counter(str(c.close_code) for c in clients.clients))
            head = await self.publish(stream, "storm.missed", args.missed)
            stale = sync_to_async(Connection.objects.filter(server_id=old_id).count)
            run["stale_rows"] = await stale()
            log(
                f"[{label}] stopped in {run['stop_s']:.1f} s; published {args.missed} events "
                f"while down; {run['stale_rows']} of its connection rows are left"
            )

            # 3. A new process on the same port; every client reconnects within --spread.
            server, _ = await self.start_server(port)
            servers.append(server)
            run["down_s"] = round(time.perf_counter() - stopping, 3)
            roles = {"server": server, "clients": THIS_PROCESS}
            if self.procs.redis is not None:
                roles["redis"] = self.procs.redis
            cpu_before = cpu_sample(roles)
            log(
                f"[{label}] new server listening after {run['down_s']:.1f} s; {n} clients "
                f"reconnect within {args.spread:g} s, resuming from seq {head - args.missed}"
            )
            pg_url = self.procs.env["DATABASE_URL"] if self.pg_database else None
            with BackendSampler(pg_url) as sampler, self.ticker(label, clients, every=1.0):
                await clients.reconnect_all(args.spread)
                await clients.wait_all("caught", args.timeout)
                cpu = cpu_pct(cpu_before, cpu_sample(roles))
                storm_s = time.perf_counter() - clients.began
            counts = await self.settled_counts()  # the new process counts from zero
            admitted = sum(bool(c.welcome_at) for c in clients.clients)
            log(f"[{label}] {clients.progress()}")

            # 4. One event live after the storm, then the check of every client's events.
            final = await self.publish(stream, "storm.after", 1)
            await self.wait_for(
                lambda: all(c.last_seq >= final for c in clients.clients if c.open),
                time.perf_counter(),
            )
            run.update(self.check_events(clients, final))
            log(
                f"[{label}] {run['exact']} of {admitted} admitted clients got exactly the events "
                f"they missed" + (f"; problems: {run['problems']}" if run["problems"] else "")
            )
            if run["stale_rows"]:
                log(
                    f"[{label}] waiting for the stopped process's rows to go (swept when its "
                    "lease expires)"
                )
            run["stale_rows_gone_s"] = (
                await self.wait_for(lambda: _equals(stale(), 0), stopping)
                if run["stale_rows"]
                else 0.0
            )
        finally:
            await clients.close_all()
            await self.procs.stop(servers)
        run.update(
            {
                "admitted": admitted,
                "failures": dict(Counter(clients.failures)),
                "server_errors": self.server_errors(*servers),
                "admitted_all_s": clients.last("welcome_at"),
                "subscribed_all_s": clients.last("subscribed_at"),
                "caught_up_all_s": clients.last("caught_at"),
                "storm_s": round(storm_s, 3),
                **self.latency_figures(clients),
                **per_client(counts, n),
                "by_table_total": dict(counts.most_common()),
                "db_connections_peak": counts[PEAK],
                "pg_backends_peak": sampler.peak,
                "server_cpu_s": round(cpu["server"] / 100 * storm_s, 2),
                "cpu_pct": cpu,
            }
        )
        return run

    @staticmethod
    def check_events(clients: Any, final: int) -> dict[str, Any]:
        """Whether each admitted client received exactly ``since + 1 .. final``."""
        problems: Counter[str] = Counter()
        exact = 0
        for client in clients.clients:
            if not client.welcome_at:
                continue
            wanted = list(range((client.since or 0) + 1, final + 1))
            if client.seqs == wanted:
                exact += 1
            elif len(set(client.seqs)) < len(client.seqs):
                problems["duplicates"] += 1
            elif set(client.seqs) < set(wanted):
                problems["missing events"] += 1
            elif sorted(client.seqs) == wanted:
                problems["out of order"] += 1
            else:
                problems["other"] += 1
            if client.recovered is False:
                problems["subscribed with recovered: false"] += 1
            if client.errors:
                problems["error frames"] += 1
        return {"exact": exact, "problems": dict(problems), "final_seq": final}

    @staticmethod
    def latency_figures(clients: Any) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        for name, mark in (
            ("welcome", "welcome_at"),
            ("subscribed", "subscribed_at"),
            ("caught_up", "caught_at"),
        ):
            values = clients.latencies(mark)
            figures[f"{name}_p50_s"] = percentile(values, 0.5)
            figures[f"{name}_p95_s"] = percentile(values, 0.95)
            figures[f"{name}_max_s"] = round(max(values), 3) if values else None
        return figures

    # --- the burst scenario ---------------------------------------------------------------
    async def burst_run(self, mode: str) -> dict[str, Any]:
        from asgiref.sync import sync_to_async

        from bench.procs import cpu_pct, cpu_sample, log
        from bench.storm_client import Clients
        from realtime.models import Connection

        cookies = await sync_to_async(self.sessions)(mode)
        server, port = await self.start_server()
        url = f"ws://127.0.0.1:{port}/realtime/ws/"
        count_rows = sync_to_async(Connection.objects.count)
        clients = Clients(url, self.args, cookies)
        try:
            # A new process's first connection starts its hub (lease, channel, imports):
            # timed apart, so the storm measures admission itself.
            warm = time.perf_counter()
            await Clients(url, self.args, [None]).open_all_and_close()
            cold_start = round(time.perf_counter() - warm, 3)
            await asyncio.sleep(0.5)
            before, cpu_before = self.read_counts(), cpu_sample({"server": server})
            log(f"[{mode}] opening {self.args.clients} connections at once")
            with self.ticker(mode, clients):
                await clients.open_all()
                began = clients.began
                recorded = await self.wait_for(
                    lambda: _equals(count_rows(), clients.open_count), began
                )
            after_open = await self.settled_counts()
            opened_counts = after_open - before
            cpu_open = cpu_pct(cpu_before, cpu_sample({"server": server}))
            open_seconds = time.perf_counter() - began
            n = clients.open_count
            log(f"[{mode}] {n} open, {len(clients.failures)} failed")

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
            gone = await self.wait_for(lambda: _equals(count_rows(), 0), closing)
            closed_counts = await self.settled_counts() - before_close
            cpu_close = cpu_pct(cpu_before, cpu_sample({"server": server}))
            close_seconds = time.perf_counter() - closing
        finally:
            await clients.close_all()
            await self.procs.stop([server])
        opened, closed = per_client(opened_counts, n), per_client(closed_counts, n)
        return {
            "mode": mode,
            "cold_start_s": cold_start,
            "open": n,
            "admitted": n,
            "failures": dict(Counter(clients.failures)),
            "server_errors": self.server_errors(server),
            "admitted_all_s": clients.last("welcome_at"),
            "subscribed_all_s": clients.last("subscribed_at"),
            **self.latency_figures(clients),
            "recorded_all_s": recorded,
            **opened,
            "by_table_total": dict(opened_counts.most_common()),
            "db_connections_peak": after_open[PEAK],
            "server_cpu_s": round(cpu_open["server"] / 100 * open_seconds, 2),
            "closed_all_s": gone,
            "close_statements": closed["statements"],
            "close_by_table": closed["by_table"],
            "close_server_cpu_s": round(cpu_close["server"] / 100 * close_seconds, 2),
            "hold_s": self.args.hold,
            "hold_statements": {
                k: v for k, v in held_counts.most_common() if k not in NOT_STATEMENTS
            },
        }

    async def cleanup(self) -> None:
        await self.procs.stop_all()
        await asyncio.to_thread(self.drop_database)
        if self.args.keep_tmp:
            where = f" (and the database {self.pg_database})" if self.pg_database else ""
            print(f"logs and database kept in {self.tmp}{where}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


async def _equals(value: Awaitable[int], target: int) -> bool:
    return await value == target


# --- the summary ----------------------------------------------------------------------------
def _cell(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}{unit}"
    return f"{value}{unit}"


def _failures(run: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in run["failures"].items()) or "none"


def _table(
    runs: dict[str, Any], rows: list[tuple[str, Callable[[dict[str, Any]], Any]]]
) -> list[str]:
    lines = ["| | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(get(r)) for r in runs.values()) + " |")
    return lines


def _latency(run: dict[str, Any], name: str) -> str:
    values = [run.get(f"{name}_{q}_s") for q in ("p50", "p95", "max")]
    return " / ".join(_cell(v) for v in values) + " s"


def markdown(results: dict[str, Any]) -> str:
    runs = results["runs"]
    head = (
        f"{results['clients']} clients, one daphne process, {results['database']}"
        + (f", listen backlog {results['backlog']}" if results["backlog"] else "")
        + f", daphne {results['daphne_args'] or 'as is (5 s connect timeout)'}"
        + f", clients from {results['addresses']} address(es)"
        + f", open-file limit {results['fd_limit']}"
    )
    if results["scenario"] == "restart":
        return _restart_markdown(results, runs, head)
    return _burst_markdown(runs, head)


def _restart_markdown(results: dict[str, Any], runs: dict[str, Any], head: str) -> str:
    lines = [
        f"Restart: {head}; every client reconnects within {results['spread']:g} s of the new "
        "process listening, resuming with `since`.",
        "",
    ]
    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("stopped process: exit after", lambda r: _cell(r["stop_s"], " s")),
        (
            "close codes the clients saw",
            lambda r: ", ".join(f"{k}: {v}" for k, v in r["close_codes"].items()),
        ),
        ("its connection rows left in the database", lambda r: r["stale_rows"]),
        ("... gone after (from the stop)", lambda r: _cell(r["stale_rows_gone_s"], " s")),
        ("down (stop to listening again)", lambda r: _cell(r["down_s"], " s")),
        ("admitted", lambda r: f"{r['admitted']} of {results['clients']}"),
        ("failures", _failures),
        ("all admitted (`welcome`) after", lambda r: _cell(r["admitted_all_s"], " s")),
        ("all resubscribed (`subscribed`) after", lambda r: _cell(r["subscribed_all_s"], " s")),
        ("all caught up (every missed event) after", lambda r: _cell(r["caught_up_all_s"], " s")),
        ("per client `welcome` p50 / p95 / max", lambda r: _latency(r, "welcome")),
        ("per client `subscribed` p50 / p95 / max", lambda r: _latency(r, "subscribed")),
        ("per client caught up p50 / p95 / max", lambda r: _latency(r, "caught_up")),
        ("got exactly the events they missed", lambda r: f"{r['exact']} of {r['admitted']}"),
        (
            "event problems",
            lambda r: ", ".join(f"{k}: {v}" for k, v in r["problems"].items()) or "none",
        ),
        ("SQL statements per client (all that tried)", lambda r: r["statements"]),
        (
            "database connections opened (or taken from the pool) per client",
            lambda r: r["db_connections"],
        ),
        (
            "most database connections in use at once (PostgreSQL backends)",
            lambda r: (
                f"{r['db_connections_peak']}"
                + (f" ({r['pg_backends_peak']})" if r["pg_backends_peak"] is not None else "")
            ),
        ),
        ("server CPU for the storm", lambda r: _cell(r["server_cpu_s"], " s")),
        (
            "CPU % of a core: server / clients / everything else",
            lambda r: " / ".join(
                f"{r['cpu_pct'].get(k, 0):.0f}" for k in ("server", "clients", "other")
            ),
        ),
        (
            "machine busy just before, % of a core (idle clients and server included)",
            lambda r: f"{r['other_load_pct']:.0f}",
        ),
        ("server errors logged", lambda r: r["server_errors"]),
    ]
    lines += _table(runs, rows)
    lines.append("")
    for label, run in runs.items():
        kinds = ", ".join(f"{k} {v:g}" for k, v in run["by_table"].items())
        lines.append(f"- {label}, statements per client: {kinds or 'none'}")
    return "\n".join(lines)


def _burst_markdown(runs: dict[str, Any], head: str) -> str:
    lines = [f"Burst: {head}; every client opens at the same instant.", ""]
    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        (
            "first connection of the new process (starts its hub)",
            lambda r: _cell(r["cold_start_s"], " s"),
        ),
        ("admitted (all `welcome`)", lambda r: _cell(r["admitted_all_s"], " s")),
        ("subscribed (all `subscribed`)", lambda r: _cell(r["subscribed_all_s"], " s")),
        ("per client `welcome` p50 / p95 / max", lambda r: _latency(r, "welcome")),
        ("all `Connection` rows recorded", lambda r: _cell(r["recorded_all_s"], " s")),
        ("failures", _failures),
        ("server errors logged", lambda r: r["server_errors"]),
        ("SQL statements per connection", lambda r: r["statements"]),
        (
            "database connections opened (or taken from the pool) per connection",
            lambda r: r["db_connections"],
        ),
        ("most database connections in use at once", lambda r: r["db_connections_peak"]),
        ("server CPU for the storm", lambda r: _cell(r["server_cpu_s"], " s")),
        (
            "holding them: SQL statements in all",
            lambda r: f"{sum(r['hold_statements'].values())} in {r['hold_s']:g} s",
        ),
        ("close all: rows gone after", lambda r: _cell(r["closed_all_s"], " s")),
        ("close: SQL statements per connection", lambda r: r["close_statements"]),
        ("close: server CPU", lambda r: _cell(r["close_server_cpu_s"], " s")),
    ]
    lines += _table(runs, rows)
    lines.append("")
    for mode, run in runs.items():
        kinds = ", ".join(f"{k} {v:g}" for k, v in run["by_table"].items())
        lines.append(f"- {mode}, per connection: {kinds}")
        held = ", ".join(f"{k} {v}" for k, v in run["hold_statements"].items())
        lines.append(f"- {mode}, holding {run['open']} for {run['hold_s']:g} s: {held or 'none'}")
    return "\n".join(lines)


# --- the command line -------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def names(allowed: set[str]) -> Callable[[str], list[str]]:
        def parse(text: str) -> list[str]:
            values = [v for v in text.split(",") if v]
            bad = set(values) - allowed
            if bad or not values:
                raise argparse.ArgumentTypeError(
                    f"choose from {', '.join(sorted(allowed))} (comma-separated)"
                )
            return values

        return parse

    parser = argparse.ArgumentParser(
        prog="python -m bench.storm",
        description="Restart a daphne process under many subscribed WebSocket clients (or "
        "open them all at once) and measure admission, resumption and database work.",
    )
    parser.add_argument("--clients", type=int, default=2000, help="clients (default 2000)")
    parser.add_argument(
        "--scenario",
        choices=("restart", "burst"),
        default="restart",
        help="restart: connected clients reconnect after a server restart (default); burst: "
        "all open at once against a fresh process, are held, then close",
    )
    parser.add_argument(
        "--modes",
        default=["anonymous", "signed-in"],
        type=names({"anonymous", "signed-in"}),
        help="runs, comma-separated: anonymous, signed-in (default both)",
    )
    parser.add_argument(
        "--signals",
        default=["term"],
        type=names({"term", "kill"}),
        help="restart: how the server is stopped, comma-separated: term (SIGTERM, a deploy; "
        "default), kill (SIGKILL, a crash)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="restart: each client reconnects after a random delay in [0, SPREAD) s (default 1)",
    )
    parser.add_argument(
        "--before", type=int, default=3, help="restart: events received live before (default 3)"
    )
    parser.add_argument(
        "--missed",
        type=int,
        default=5,
        help="restart: events published while the server is down (default 5)",
    )
    parser.add_argument(
        "--addresses",
        type=int,
        help="distinct client addresses (127.x.y.z; default: one per client, as real users; "
        "1: every client from 127.0.0.1, as behind a proxy without --proxy-headers)",
    )
    parser.add_argument("--stream", default="public:storm", help="the stream's name prefix")
    parser.add_argument(
        "--no-subscribe", dest="subscribe", action="store_false", help="burst: only connect"
    )
    parser.add_argument(
        "--database-url",
        help="postgres://user@host/db: a new database is created on that server (and dropped "
        "afterwards); default: a new SQLite file",
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
        help="burst: seconds to keep the clients open, heartbeating, before closing (default "
        "25: two lease renewals)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="restart: wait up to this many seconds for other work on the machine to stop "
        "before stopping the server (default 0: do not wait)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=25.0,
        help="what --wait-quiet calls quiet: %% of a core busy (default 25)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="bound on each wait (s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the logs and database")
    args = parser.parse_args(argv)
    args.addresses = args.addresses or args.clients
    if args.scenario == "restart" and not args.subscribe:
        parser.error("--no-subscribe is for --scenario burst: a restart resumes subscriptions")
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
    clean = all(
        not r["failures"]
        and r.get("exact", r["admitted"]) == r["admitted"]
        and not r.get("problems")
        for r in results["runs"].values()
    )
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> int:
    from bench.procs import BenchError, raise_fd_limit

    args = parse_args(argv)
    try:
        raise_fd_limit(args.clients)
    except BenchError as exc:
        raise SystemExit(f"storm: {exc}") from None
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
