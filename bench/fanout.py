"""Fan-out benchmark: this app against the naive Channels approach, side by side.

``make bench`` runs ``python -m bench.fanout``. For each approach in turn it starts two daphne
processes (``project.asgi`` for the app, ``bench.naive_asgi`` for a consumer per connection
with ``group_add`` / ``group_send``), sharing its own Redis (a ``redis-server`` on a free
loopback port, nothing saved) and its own SQLite file, migrated first. One load-client process
(``bench.client``) opens ``--clients`` WebSockets split evenly over the two servers,
all subscribed to one stream; one publisher process (``bench.publisher``) publishes
at each ``--rates`` step for ``--duration`` seconds. Events carry their publish time, so the
clients measure publish-to-receive latency; after each step the benchmark waits up to
``--drain`` seconds for stragglers, then reports deliveries/s, loss, duplicates, p50/p99/max
latency and the CPU each process used (from ``/proc``). The summary compares sustained
deliveries/s: the best step with no loss and p99 under ``--max-p99-ms``.

Progress goes to stderr; the Markdown summary goes to stdout (and JSON to ``--json PATH``).
Everything listens on 127.0.0.1, every wait has a time limit, and every process started is
stopped on the way out, also on Ctrl-C; children also get SIGKILL if this process dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import (
    START_TIMEOUT,
    THIS_PROCESS,
    BenchError,
    Proc,
    Processes,
    ScratchPostgres,
    background_load,
    check_bounds,
    cpu_pct,
    cpu_sample,
    free_port,
    log,
    run_tool,
    write_json,
)
from bench.report import (
    compare,
    git_revision,
    machine_info,
    markdown,
    progress_line,
    step_stats,
    summarize,
)

APPROACHES = {
    "realtime": ("project.asgi:application", "/realtime/ws/?batch=1"),
    # The same servers, fed one ``apublish`` per event even when behind (no apublish_many).
    "realtime-single": ("project.asgi:application", "/realtime/ws/?batch=1"),
    "naive": ("bench.naive_asgi:application", "/naive/ws/"),
    # The app with NATS as the backplane (REALTIME_BACKPLANE) instead of the channel layer.
    "realtime-nats": ("project.asgi:application", "/realtime/ws/?batch=1"),
    # ... and with Redis Cluster's sharded pub/sub (three primaries of the bench's own).
    "realtime-redis-cluster": ("project.asgi:application", "/realtime/ws/?batch=1"),
}
# The publisher's way of publishing for each approach (bench.publisher --approach).
PUBLISHES_AS = {"realtime-nats": "realtime", "realtime-redis-cluster": "realtime"}
REPLY_TIMEOUT = 30.0
TARGET_RATIO = 5.0
# Events/s per step. With 500 subscribers a step delivers 500x this. On two cores the naive
# approach saturates near 15 events/s and the app near 60, so the ladder is fine-grained
# (about 1.2x a step) around both, where "sustained" is decided; a run stops after two
# failed steps, so the top of the ladder only runs on bigger machines.
DEFAULT_RATES = [2, 5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 100, 125, 150, 200, 300, 400]
MIN_SUBSCRIBED = 0.99  # fraction of the clients that must be subscribed to go on
BUSY_WARNING = 20.0  # % of one core used by others before a run: the figures will suffer


class ApproachRun:
    """One approach's servers, load clients and publisher, and its ladder of steps."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench, self.args, self.name = bench, bench.args, name
        self.procs = bench.procs
        self.started: list[Proc] = []
        self.servers: list[Proc] = []
        self.clients: list[Proc] = []
        self.urls: list[str] = []
        self.subscribed = 0
        self.roles: dict[str, Proc] = {}

    def log(self, text: str) -> None:
        log(f"[{self.name}] {text}")

    async def spawn(self, name: str, *argv: str, control: bool = False) -> Proc:
        env = {}
        if self.name == "realtime-nats":
            if self.bench.nats_url is None:
                self.bench.nats_url = await self.procs.start_nats()
            env["REALTIME_BACKPLANE"] = self.bench.nats_url
        if self.name == "realtime-redis-cluster":
            if self.bench.cluster_url is None:
                self.bench.cluster_url = await self.procs.start_redis_cluster()
            env["REALTIME_BACKPLANE"] = self.bench.cluster_url
        proc = await self.procs.spawn(f"{self.name}-{name}", *argv, control=control, env=env)
        self.started.append(proc)
        return proc

    async def run(self) -> dict[str, Any]:
        try:
            await self.start_servers()
            await self.start_clients()
            publisher = await self.spawn(
                "publisher",
                *(sys.executable, "-m", "bench.publisher"),
                *("--approach", PUBLISHES_AS.get(self.name, self.name)),
                *("--stream", self.args.stream),
                control=True,
            )
            await publisher.read_json(within=START_TIMEOUT)
            self.roles = {
                f"client{i + 1}" if len(self.clients) > 1 else "client": c
                for i, c in enumerate(self.clients)
            }
            self.roles.update({f"server{i + 1}": s for i, s in enumerate(self.servers)})
            self.roles["publisher"] = publisher
            self.roles["bench"] = THIS_PROCESS
            if self.procs.redis is not None:
                self.roles["redis"] = self.procs.redis
            if self.name == "realtime-nats" and self.procs.nats is not None:
                self.roles["nats"] = self.procs.nats
            if self.name == "realtime-redis-cluster":
                for i, node in enumerate(self.procs.cluster):
                    self.roles[f"cluster{i + 1}"] = node
            warm = await self.warm_up(publisher)
            steps = await self.climb(publisher)
            for client in self.clients:
                with contextlib.suppress(Exception):
                    await client.request({"cmd": "quit"}, 2)
            return {
                "steps": steps,
                "summary": summarize(steps),
                "warmup": warm,
                "urls": self.urls,
                "subscribed": self.subscribed,
            }
        finally:
            await self.procs.stop(self.started)

    async def start_servers(self) -> None:
        app, path = APPROACHES[self.name]
        ports = []
        for i in range(self.args.servers):
            ports.append(free_port())
            # The app is served as its docs say (``--serve``); naive Channels by daphne itself.
            server = self.args.serve if self.name.startswith("realtime") else "daphne"
            argv = (sys.executable, "-m", server, "-b", "127.0.0.1", "-p", str(ports[-1]), app)
            self.servers.append(await self.spawn(f"server{i + 1}", *argv))
            self.urls.append(f"ws://127.0.0.1:{ports[-1]}{path}")
        for server, port in zip(self.servers, ports, strict=True):
            await self.procs.wait_listening(server, port)
        self.log(
            f"{len(self.servers)} daphne servers up; connecting {self.args.clients} clients..."
        )

    async def start_clients(self) -> None:
        args = self.args
        share = [args.clients // args.client_procs] * args.client_procs
        for i in range(args.clients % args.client_procs):
            share[i] += 1
        for i, n in enumerate(share):
            client = await self.spawn(
                f"client{i + 1}",
                *(sys.executable, "-m", "bench.client", *self.urls),
                *(
                    "--protocol",
                    "naive" if self.name == "naive" else "realtime",
                    "--stream",
                    args.stream,
                    "--clients",
                    str(n),
                ),
                *("--steps", str(1 + len(args.rates) + args.repeats)),
                *("--connect-timeout", str(args.connect_timeout)),
                control=True,
            )
            self.clients.append(client)
        for client in self.clients:
            ready = await client.read_json(within=args.connect_timeout + 60)
            self.subscribed += ready["subscribed"]
        # A few missing subscriptions are reported, not fatal: events are owed (and counted)
        # only on connections whose subscription was acknowledged.
        if self.subscribed < args.clients * MIN_SUBSCRIBED:
            raise BenchError(
                f"only {self.subscribed} of {args.clients} clients subscribed:\n"
                + "\n".join(f"  {p.name}:\n{p.tail()}" for p in (*self.clients, self.servers[0]))
            )
        if self.subscribed < args.clients:
            self.log(f"WARNING: only {self.subscribed} of {args.clients} clients subscribed")
            for client in self.clients:
                log(client.tail(3))
        else:
            self.log(f"{self.subscribed} clients subscribed")

    async def step(self, publisher: Proc, k: int, rate: float, duration: float) -> dict[str, Any]:
        """Publish at ``rate`` for ``duration`` into the clients' slot ``k``, drain, report."""
        before = cpu_sample(self.roles)
        published = await publisher.request(
            {"cmd": "run", "k": k, "rate": rate, "duration": duration},
            within=duration * 2 + REPLY_TIMEOUT,
        )
        expected = published["count"] * self.subscribed
        deadline = time.monotonic() + self.args.drain
        while True:
            counts = [
                await c.request({"cmd": "count", "k": k}, REPLY_TIMEOUT) for c in self.clients
            ]
            if sum(c["unique"] for c in counts) >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        after = cpu_sample(self.roles)
        reports = [await c.request({"cmd": "report", "k": k}, REPLY_TIMEOUT) for c in self.clients]
        for report in reports:
            report["per_server"] = report.pop("per_server_since_last_report")
        if published["errors"]:
            self.log(f"{published['errors']} publish errors, first: {published['first_error']}")
        return step_stats(
            rate,
            published,
            reports,
            self.subscribed,
            cpu_pct(before, after),
            after["at"] - before["at"],
            self.args.max_p99_ms,
        )

    async def warm_up(self, publisher: Proc) -> dict[str, Any]:
        warm = await self.step(publisher, 0, self.args.warmup_rate, self.args.warmup_duration)
        if not warm["delivered"]:
            raise BenchError(
                f"warm-up delivered nothing ({warm}); server log:\n{self.servers[0].tail()}"
            )
        self.log(f"warm-up: {warm['delivered']}/{warm['expected']} delivered")
        return warm

    async def climb(self, publisher: Proc) -> list[dict[str, Any]]:
        """Run the ladder of rates; stop after two steps in a row are not sustained."""
        args = self.args
        steps: list[dict[str, Any]] = []
        failures = slot = repeats = 0
        for index, rate in enumerate(args.rates, start=1):
            while True:
                slot += 1
                stats = await self.step(publisher, slot, rate, args.duration)
                stats["disturbed"] = stats["cpu_pct"]["other"] > args.max_other
                log(progress_line(self.name, index, len(args.rates), stats))
                if not stats["disturbed"] or repeats >= args.repeats:
                    break
                repeats += 1
                other = stats["cpu_pct"]["other"]
                self.log(f"other load took {other:g}% CPU during the step: repeating")
                await self.bench.wait_quiet(self.name)
            steps.append(stats)
            failures = 0 if stats["sustained"] else failures + 1
            if failures >= 2 and not args.keep_going and index < len(args.rates):
                self.log("overloaded twice: skipping higher rates (--keep-going runs them)")
                break
        return steps


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="realtime-bench-"))
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="project.settings",
            DATABASE_URL=f"sqlite:///{self.tmp / 'bench.sqlite3'}",
            DJANGO_DEBUG="0",  # DEBUG would record every query in memory
            REALTIME_LOG="WARNING",
            PYTHONUNBUFFERED="1",
        )
        self.pg = (
            ScratchPostgres(args.database_url, "realtime_bench") if args.database_url else None
        )
        if self.pg is not None:
            env["DATABASE_URL"] = self.pg.url
        self.procs = Processes(self.tmp, env)
        self.nats_url: str | None = None  # started for the first realtime-nats process
        self.cluster_url: str | None = None  # for the first realtime-redis-cluster one
        self.quiet_budget: float = args.wait_quiet

    async def wait_quiet(self, name: str) -> float:
        """Wait for other load to stop, within what is left of ``--wait-quiet``.

        One budget per approach, so a machine that never quietens down costs at most
        ``--wait-quiet`` seconds each. Returns the last reading (CPU % of one core).
        """
        idle = await background_load()
        began = time.monotonic()
        while idle > BUSY_WARNING and self.quiet_budget > time.monotonic() - began:
            log(f"[{name}] the machine is {idle:g}% busy without the bench: waiting...")
            await asyncio.sleep(2)
            idle = await background_load()
        self.quiet_budget = max(0.0, self.quiet_budget - (time.monotonic() - began))
        if idle > BUSY_WARNING:
            log(f"[{name}] WARNING: the machine is {idle:g}% busy without the bench")
        return idle

    async def run(self) -> dict[str, Any]:
        args = self.args
        await self.procs.start_redis()
        if self.pg is not None:
            self.pg.create()
        await self.procs.migrate()
        keys = (
            "database_url",
            "clients",
            "servers",
            "serve",
            "client_procs",
            "stream",
            "rates",
            "duration",
            "drain",
        )
        result: dict[str, Any] = {
            "config": {
                **{k: getattr(args, k) for k in keys},
                "max_p99_ms": args.max_p99_ms,
                "max_other": args.max_other,
            },
            "machine": machine_info(self.procs.redis_version),
            "revision": git_revision(),
            "approaches": {},
        }
        for name in args.approaches:
            began = time.monotonic()
            self.quiet_budget = args.wait_quiet
            idle = await self.wait_quiet(name)
            try:
                result["approaches"][name] = await ApproachRun(self, name).run()
                result["approaches"][name]["background_cpu_pct"] = idle
            except BenchError as exc:
                log(f"[{name}] FAILED: {exc}")
                result["approaches"][name] = {"error": str(exc).splitlines()[0]}
            log(f"[{name}] done in {time.monotonic() - began:.0f} s")
        compare(result, TARGET_RATIO)
        return result

    async def cleanup(self) -> None:
        await self.procs.stop_all()
        if self.pg is not None:
            self.pg.drop()
        if self.args.keep_tmp:
            log(f"logs and database kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fan-out benchmark: realtime against naive Channels group_send."
    )
    parser.add_argument("--clients", type=int, default=500, help="subscribers (default 500)")
    parser.add_argument("--servers", type=int, default=2, help="daphne processes (default 2)")
    parser.add_argument(
        "--serve",
        choices=("realtime.serve", "daphne"),
        default="realtime.serve",
        help="the command serving the app: the documented one (default), or plain daphne",
    )
    parser.add_argument(
        "--client-procs", type=int, default=1, help="load-client processes (default 1)"
    )
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=DEFAULT_RATES,
        help=f"events/s per step, comma-separated (default {','.join(map(str, DEFAULT_RATES))})",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--drain", type=float, default=5.0, help="max seconds to wait after")
    parser.add_argument("--warmup-rate", type=float, default=5.0)
    parser.add_argument("--warmup-duration", type=float, default=2.0)
    parser.add_argument("--max-p99-ms", type=float, default=1000.0, help="sustained: p99 below")
    parser.add_argument(
        "--approaches",
        type=lambda s: s.split(","),
        default=["naive", "realtime-single", "realtime", "realtime-nats", "realtime-redis-cluster"],
        help="which to run, in order (default naive,realtime-single,realtime,realtime-nats,"
        "realtime-redis-cluster: the last two are the app over NATS and over Redis Cluster's "
        "sharded pub/sub instead of the Redis channel layer)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="most seconds per approach to wait for other load on the machine to stop "
        "(before starting and before repeating a disturbed step; default 60)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=25.0,
        help="CPU %% of other load during a step above which the step is repeated",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=4,
        help="most steps repeated per approach because other load disturbed them (default 4)",
    )
    parser.add_argument("--stream", default="public:bench")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument(
        "--keep-going", action="store_true", help="run every rate even when overloaded"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server on loopback (postgres://postgres@127.0.0.1:5432/postgres): "
        "the run gets a scratch database there, dropped after; default a new SQLite file",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep logs and the database")
    args = parser.parse_args(argv)
    unknown = set(args.approaches) - set(APPROACHES)
    if unknown:
        parser.error(f"unknown approach {', '.join(sorted(unknown))}")
    limits = [
        (args.clients, 1, 5000, "--clients"),
        (args.servers, 1, 8, "--servers"),
        (args.client_procs, 1, 8, "--client-procs"),
        (args.duration, 0.5, 60, "--duration"),
        (args.drain, 0, 60, "--drain"),
        (args.wait_quiet, 0, 600, "--wait-quiet"),
        (args.repeats, 0, 20, "--repeats"),
        (len(args.rates), 1, 30, "number of --rates"),
        (max(args.rates), 1, 20_000, "--rates"),
    ]
    check_bounds(parser, limits)
    return args


async def amain(args: argparse.Namespace) -> int:
    bench = Bench(args)
    try:
        result = await bench.run()
    finally:
        await bench.cleanup()
    text = markdown(result)
    print("\n" + text, flush=True)
    if args.json:
        write_json(args.json, result)
    failed = [n for n, a in result["approaches"].items() if a.get("error")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_tool("benchmark", lambda: amain(args))


if __name__ == "__main__":
    sys.exit(main())
