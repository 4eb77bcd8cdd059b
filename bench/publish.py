"""Publish-path benchmark (issue 13): what storing and fanning out one event costs, per API.

``python -m bench.publish`` measures on SQLite and PostgreSQL: ``publish`` (a plain
sync process calling ``realtime.publish`` per event), ``publish-full`` (the same on a stream
already holding its ``max_events``, 10,000 by default, so that every publish also trims the
oldest event: where a busy stream lives), ``apublish`` (awaited one at a time),
``apublish-64`` (64 calls in flight over 1,000 streams, round robin), ``publish_many`` (chunks
of 100, the batched reference) and ``raw`` (one ``INSERT`` and commit per row with the bare
driver: psycopg in autocommit, or sqlite3 on the WAL file with ``synchronous=NORMAL``; the
physical reference). Each measurement is a fresh child process (``--child KIND``) that warms
up (``--warmup`` events; all 1,000 streams for ``apublish-64``), then times ``--events`` in
wall and process CPU time (``time.process_time``: every thread), the app's fan-out flush
included if it has one, and prints one JSON line. The parent runs ``--runs`` rounds, each
database and kind in turn within a round so drift hits every kind alike, and prints per
database the median and min-max of events/s and CPU us/event (never a best run), and the
median's ratio to raw commits. It starts a memory-only Redis for the channel layer (no
subscribers: ``group_send`` costs the same), a fresh migrated SQLite file and a scratch
PostgreSQL database ``realtime_bench_<pid>``, dropped at the end (SQLite only if the server
is unreachable). Loopback only; a child running over 120 s is killed and reported.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.procs import (
    BenchError,
    Processes,
    ScratchPostgres,
    check_bounds,
    log,
    run_tool,
    write_json,
)
from bench.report import git_revision, machine_info

KINDS = ("publish", "publish-full", "apublish", "apublish-64", "publish_many", "raw")
DATABASES = ("sqlite", "postgresql")
CHILD_TIMEOUT = 120.0
FLUSH_TIMEOUT = 30.0
IN_FLIGHT = 64
STREAMS = 1000
CHUNK = 100
DASH = "\N{EN DASH}"  # of ranges in the table
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Where the app may offer "wait until queued fan-out has left"; the first found is called.
FLUSHERS = (
    ("realtime.publishing", "flush_sender"),
    ("realtime.bus.sender", "flush"),
    ("realtime.sender", "flush"),  # revisions before 2026-12-06
    ("realtime", "flush"),
)


# --- the child: one measurement -----------------------------------------------------------
def flush_fan_out() -> str | None:
    """Wait for the fan-out the app queued, if it offers a way; returns the function's name.

    Looked up among modules the app loaded itself, never imported here: under an editable
    install a module missing from this checkout would come from the other one.
    """
    for module, name in FLUSHERS:
        found = getattr(sys.modules.get(module), name, None)
        if callable(found):
            found(FLUSH_TIMEOUT)
            return f"{module}.{name}"
    return None


Batch = Callable[[int, int], Any]  # publishes events start .. start + count - 1
Flush = Callable[[], str | None]  # returns the name of the flush it called, if any
Timing = tuple[float, float, str | None]  # wall and CPU seconds, and that name


def raw_batch(url: str) -> Batch:
    """Single-row commits with the bare driver on a scratch table (connected once, here)."""
    if url.startswith("sqlite:"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level="IMMEDIATE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS bench_raw (id INTEGER PRIMARY KEY, n, data)")
        db.commit()

        def sqlite_rows(start: int, count: int) -> None:
            for i in range(start, start + count):
                db.execute("INSERT INTO bench_raw(n, data) VALUES (?, ?)", (i, f'{{"n": {i}}}'))
                db.commit()

        return sqlite_rows
    import psycopg
    from psycopg.types.json import Jsonb

    pg = psycopg.connect(url, autocommit=True)
    pg.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigserial PRIMARY KEY, n int, data jsonb)")

    def pg_rows(start: int, count: int) -> None:
        for i in range(start, start + count):
            pg.execute("INSERT INTO bench_raw(n, data) VALUES (%s, %s)", (i, Jsonb({"n": i})))

    return pg_rows


def app_batch(kind: str, stream: str) -> Batch:
    import realtime

    def publish(start: int, count: int) -> None:
        for i in range(start, start + count):
            realtime.publish(stream, "bench.tick", {"n": i})

    def publish_many(start: int, count: int) -> None:
        for first in range(start, start + count, CHUNK):
            ns = range(first, min(first + CHUNK, start + count))
            realtime.publish_many(stream, [("bench.tick", {"n": i}) for i in ns])

    async def apublish(start: int, count: int) -> None:
        for i in range(start, start + count):
            await realtime.apublish(stream, "bench.tick", {"n": i})

    async def apublish_64(start: int, count: int) -> None:
        numbers = iter(range(start, start + count))

        async def worker() -> None:  # IN_FLIGHT of these, one call each in flight
            for i in numbers:
                await realtime.apublish(f"bench:s{i % STREAMS}", "bench.tick", {"n": i})

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))

    kinds = {"publish": publish, "publish-full": publish, "publish_many": publish_many}
    kinds["apublish"] = apublish
    return kinds.get(kind, apublish_64)


def fill(stream: str) -> None:
    """Publish the stream's ``max_events`` (untimed), so that each publish after trims one."""
    import realtime
    from realtime.storage import retention

    cap = retention.rule_for(stream).max_events or 0
    for first in range(0, cap, 1000):
        events = [("bench.fill", {"n": i}) for i in range(first, min(first + 1000, cap))]
        realtime.publish_many(stream, events)


async def run_async(batch: Batch, warmup: int, events: int, flush: Flush) -> Timing:
    await batch(0, warmup)
    await asyncio.to_thread(flush)  # off the loop: the loop may be what sends
    wall, cpu = time.perf_counter(), time.process_time()
    await batch(warmup, events)
    flushed = await asyncio.to_thread(flush)
    return time.perf_counter() - wall, time.process_time() - cpu, flushed


def run_sync(batch: Batch, warmup: int, events: int, flush: Flush) -> Timing:
    batch(0, warmup)
    flush()
    wall, cpu = time.perf_counter(), time.process_time()
    batch(warmup, events)
    flushed = flush()
    return time.perf_counter() - wall, time.process_time() - cpu, flushed


def child(args: argparse.Namespace) -> dict[str, Any]:
    kind, warmup = args.child, args.warmup
    if kind == "apublish-64":
        warmup = max(warmup, STREAMS)  # every stream exists before the timed part
    if kind == "raw":
        batch, flush = raw_batch(args.db), (lambda: None)
    else:
        os.environ["DATABASE_URL"] = args.db
        import django

        django.setup()
        # A stream a run, so retention (10,000 events a stream) never trims while timed;
        # but for publish-full, whose stream is filled to its cap first.
        stream = f"bench:{kind}:{args.run}"
        if kind == "publish-full":
            fill(stream)
        batch, flush = app_batch(kind, stream), flush_fan_out
    if inspect.iscoroutinefunction(batch):
        wall, cpu, flushed = asyncio.run(run_async(batch, warmup, args.events, flush))
    else:
        wall, cpu, flushed = run_sync(batch, warmup, args.events, flush)
    return {"events": args.events, "wall_s": wall, "cpu_s": cpu, "flush": flushed}


# --- the parent: databases, children, report ------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="realtime-bench-publish-"))
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="project.settings", DJANGO_DEBUG="0")
        env.update(REALTIME_LOG="WARNING", PYTHONUNBUFFERED="1")
        self.procs = Processes(self.tmp, env)
        self.urls: dict[str, str] = {}
        self.pg = ScratchPostgres(args.pg_url, "realtime_bench")
        self.results: list[dict[str, Any]] = []

    async def setup(self) -> None:
        await self.procs.start_redis()
        for db in self.args.databases:
            if db == "sqlite":
                url = f"sqlite:///{self.tmp / 'bench.sqlite3'}"
            else:
                try:
                    url = self.pg.create()
                except BenchError as exc:
                    log(f"{exc}: SQLite only")
                    continue
            self.procs.env["DATABASE_URL"] = url
            await self.procs.migrate()
            self.urls[db] = url
        if not self.urls:
            raise BenchError("no database to measure")

    async def measure(self, run: int, db: str, kind: str) -> dict[str, Any]:
        args = self.args
        proc = await self.procs.spawn(
            f"{db}-{kind}-{run}",
            *(sys.executable, "-m", "bench.publish", "--child", kind),
            *("--db", self.urls[db], "--run", str(run)),
            *("--events", str(args.events), "--warmup", str(args.warmup)),
            control=True,
        )
        result: dict[str, Any] = {"run": run, "database": db, "kind": kind}
        try:
            result.update(await proc.read_json(within=CHILD_TIMEOUT))
        except BenchError as exc:  # timed out (killed below) or died: reported, not fatal
            result["error"] = str(exc).splitlines()[0]
        finally:
            await self.procs.stop([proc])
        where = f"run {run}/{args.runs} {db} {kind}"
        if "error" in result:
            log(f"{where}: FAILED: {result['error']}")
        else:
            rate, cpu_us = result["events"] / result["wall_s"], cpu_per_event(result)
            log(f"{where}: {rate:,.0f} events/s ({cpu_us:,.0f} µs CPU/event)")
        return result

    async def run(self) -> None:
        await self.setup()
        for run in range(1, self.args.runs + 1):
            for db in self.urls:
                for kind in self.args.kinds:
                    self.results.append(await self.measure(run, db, kind))

    async def cleanup(self) -> None:
        await self.procs.stop_all()
        self.pg.drop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def cpu_per_event(result: dict[str, Any]) -> float:
    return float(result["cpu_s"]) / result["events"] * 1e6


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}{DASH}{max(values):,.0f})"


def table(results: list[dict[str, Any]], db: str, kinds: list[str], runs: int) -> str:
    ok = {k: [r for r in results if r["database"] == db and r["kind"] == k] for k in kinds}
    ok = {k: [r for r in rs if "error" not in r] for k, rs in ok.items()}
    raw = statistics.median(r["events"] / r["wall_s"] for r in ok["raw"]) if ok.get("raw") else 0
    lines = [
        f"### {db}",
        "",
        f"| kind | events/s median (min{DASH}max) | CPU µs/event median (min{DASH}max) "
        "| ratio to raw commits |",
        "|---|---:|---:|---:|",
    ]
    for kind in kinds:
        got = ok[kind]
        if not got:
            lines.append(f"| {kind} | failed | - | - |")
            continue
        rates = [r["events"] / r["wall_s"] for r in got]
        ratio = f"{statistics.median(rates) / raw:.3g}x" if raw else "-"
        note = "" if len(got) == runs else f" [{len(got)} of {runs} runs]"
        cpus = [cpu_per_event(r) for r in got]
        lines.append(f"| {kind}{note} | {spread(rates)} | {spread(cpus)} | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Publish-path benchmark (see the docstring).")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (3)")
    parser.add_argument("--events", type=int, default=2000, help="timed events (2000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed events first (100)")
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS))
    parser.add_argument("--databases", type=lambda s: s.split(","), default=list(DATABASES))
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path, help="also write every raw result here")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for given, known in ((args.kinds, KINDS), (args.databases, DATABASES)):
        if set(given) - set(known):
            parser.error(f"unknown {', '.join(sorted(set(given) - set(known)))}")
    if urlsplit(args.pg_url).hostname not in LOOPBACK:
        parser.error("--pg-url must point at a loopback address (127.0.0.1, ::1, localhost)")
    # At most 9,000 events a stream and run: under the default retention of 10,000 a stream.
    limits = [(args.runs, 1, 9, "--runs"), (args.events, 10, 9000, "--events")]
    check_bounds(parser, [*limits, (args.warmup, 1, 1000, "--warmup")])
    return args


async def amain(args: argparse.Namespace) -> int:
    began = time.monotonic()
    bench = Bench(args)
    try:
        await bench.run()
        redis = bench.procs.redis_version
    finally:
        await bench.cleanup()
    flushers = {r.get("flush") for r in bench.results if r["kind"] != "raw" and "error" not in r}
    runs = f"{args.runs} run{'s' if args.runs > 1 else ''}"
    print(f"\n## Publish path: {args.events:,} events a measurement, {runs} of each\n")
    print(f"Fan-out flushed with: {', '.join(sorted(f or 'nothing' for f in flushers)) or '-'}")
    machine = machine_info(redis)
    print(f"CPU reference: {machine['cpu_reference_s']:g} s (a fixed loop; lower is faster)")
    for db in bench.urls:
        print("\n" + table(bench.results, db, args.kinds, args.runs))
    log(f"done in {time.monotonic() - began:.0f} s")
    if args.json:
        config = {k: getattr(args, k) for k in ("runs", "events", "warmup", "kinds")}
        out = {"config": config, "revision": git_revision(), "machine": machine}
        write_json(args.json, {**out, "results": bench.results})
    return 1 if any("error" in r for r in bench.results) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    return run_tool("publish benchmark", lambda: amain(args))


if __name__ == "__main__":
    sys.exit(main())
