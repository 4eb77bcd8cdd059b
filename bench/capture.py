"""What capturing bulk ORM writes of a live model costs (``realtime.live.capture``).

For the demo's ``Task`` (two streams: ``tasks`` and one per row, ``tasks:{pk}``): a
10,000-row ``bulk_create`` and a 10,000-row ``QuerySet.update()``, with capture on (each
row's events stored in the write's transaction: 20,000 events) and off
(``LIVE_CAPTURE_OFF``: the bare ORM write), and, on PostgreSQL, 1,000 ``save()`` calls with
and without the ``realtime.orm_write`` setting the capture triggers need. Medians of
``--runs`` runs, each on emptied tables, on a fresh migrated SQLite file and (``--pg-url``)
a scratch PostgreSQL database, dropped after. Each database is measured in a process of its
own; the channel layer is Redis's with ``REDIS_URL`` (else the in-memory one, whose sends
are one ``async_to_sync`` each and cost more than the writes). Markdown to stdout, progress
to stderr::

    python -m bench.capture --pg-url "$PG_DATABASE_URL"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench.procs import BenchError, ScratchPostgres, log


def child(db: str, rows: int, runs: int, saves: int) -> dict[str, list[float]]:
    os.environ["DATABASE_URL"] = db
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import override_settings

    from project.demo.models import Task
    from realtime.conf import realtime_settings
    from realtime.live import guard
    from realtime.models import Event, Stream

    call_command("migrate", verbosity=0)

    def empty() -> None:
        Task.objects.all()._raw_delete(Task.objects.db)
        Event.objects.all().delete()
        Stream.objects.all().delete()

    def timed(setup: Callable[[], None], work: Callable[[], Any], capture: bool) -> float:
        off = [] if capture else ["demo.Task"]
        with override_settings(
            REALTIME={**realtime_settings.user_settings, "LIVE_CAPTURE_OFF": off}
        ):
            setup()
            began = time.perf_counter()
            work()
            return time.perf_counter() - began

    def make() -> None:
        Task.objects.bulk_create([Task(title=f"t{n}") for n in range(rows)])

    def made() -> None:
        empty()
        with override_settings(
            REALTIME={**realtime_settings.user_settings, "LIVE_CAPTURE_OFF": ["demo.Task"]}
        ):
            make()

    results: dict[str, list[float]] = {}
    for run in range(runs):
        for capture in (True, False):
            label = "on" if capture else "off"
            log(f"{connection.vendor} run {run + 1}: bulk_create, capture {label}")
            results.setdefault(f"bulk_create {label}", []).append(timed(empty, make, capture))
            log(f"{connection.vendor} run {run + 1}: update, capture {label}")
            results.setdefault(f"update {label}", []).append(
                timed(made, lambda: Task.objects.update(done=True), capture)
            )
        if connection.vendor == "postgresql":
            made()
            tasks = list(Task.objects.all()[:saves])
            for task in tasks[:50]:  # warm up: the connection, the statements' plans
                task.save()
            # Alternate which goes first, so neither always pays for the other's leftovers.
            for guarded in (True, False) if run % 2 == 0 else (False, True):
                label = "with" if guarded else "without"
                log(f"run {run + 1}: {saves} save(), {label} the trigger guard")
                original = guard.orm_write
                if not guarded:
                    guard.orm_write = lambda using: nullcontext()  # type: ignore[assignment]
                try:
                    began = time.perf_counter()
                    for task in tasks:
                        task.save()
                    spent = time.perf_counter() - began
                finally:
                    guard.orm_write = original
                results.setdefault(f"save {label} guard", []).append(spent)
    empty()
    return results


def report(all_results: dict[str, dict[str, list[float]]], rows: int, saves: int) -> str:
    lines = [
        "| database | operation | capture | median s (runs) | rows/s | events/s |",
        "|---|---|---|---|---|---|",
    ]
    for db, results in all_results.items():
        for op in ("bulk_create", "update"):
            for label in ("on", "off"):
                times = results[f"{op} {label}"]
                median = statistics.median(times)
                events = 2 * rows / median if label == "on" else 0
                spread = ", ".join(f"{t:.2f}" for t in times)
                lines.append(
                    f"| {db} | {rows:,}-row `{op}` | {label} | {median:.2f} ({spread}) "
                    f"| {rows / median:,.0f} | {events:,.0f} |"
                )
        for label in ("with", "without"):
            key = f"save {label} guard"
            if key in results:
                median = statistics.median(results[key])
                lines.append(
                    f"| {db} | {saves:,} `save()` | {label} the trigger guard | "
                    f"{median:.2f} | {saves / median:,.0f} | {2 * saves / median:,.0f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", help="a PostgreSQL server on loopback (scratch database)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--saves", type=int, default=1000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.runs, args.saves)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="realtime-bench-capture-"))
    databases = {"SQLite": f"sqlite:///{tmp / 'bench.sqlite3'}"}
    scratch = ScratchPostgres(args.pg_url, "realtime_bench_capture") if args.pg_url else None
    try:
        if scratch is not None:
            try:
                databases["PostgreSQL"] = scratch.create()
            except BenchError as exc:
                log(f"{exc}: SQLite only")
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="project.settings", DJANGO_DEBUG="0")
        env.update(REALTIME_LOG="WARNING")
        # With REDIS_URL, the Redis layer as deployed (a prefix of its own); without it the
        # in-memory layer, whose sends go one by one through async_to_sync (bus.sender).
        env["REDIS_PREFIX"] = f"bench-capture-{os.getpid()}"
        found = {}
        for name, url in databases.items():
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.capture",
                    "--child",
                    url,
                    "--rows",
                    str(args.rows),
                    "--runs",
                    str(args.runs),
                    "--saves",
                    str(args.saves),
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            sys.stderr.write(out.stderr)
            found[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(report(found, args.rows, args.saves))
    finally:
        if scratch is not None:
            scratch.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
