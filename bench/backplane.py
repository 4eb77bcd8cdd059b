"""What one Redis, one NATS server and one Redis Cluster carry as the backplane.

``python -m bench.backplane`` measures, for each backplane (``--backplanes``: ``channels``,
the Redis channel layer on a ``redis-server`` of its own; ``nats``, a ``nats-server`` of its
own; ``redis-cluster``, three primaries of its own, as ``bench.fanout`` starts them), how
many backplane messages per second it carries and what each costs the backplane server(s),
the sender and the receivers. Each measurement starts fresh processes
(``bench.backplane_peer``): ``--receivers`` receivers, each standing in for a server
process's hub (a channel, ``group_add`` to ``--groups`` groups, a ``receive`` loop), and one
sender of ``--messages`` realistic ``realtime.event`` messages spread over the groups, sent
with ``group_send`` one at a time (awaited) or with ``group_send_many`` in chunks of
``--chunk`` (the batched path the app takes). Every receiver is in every group, so a run owes
``messages x receivers`` deliveries; what has not arrived ``--drain`` seconds after the last
progress is loss. CPU is read from ``/proc/<pid>/stat`` from the first send until the last
delivery (or the drain's end). ``--repeats`` runs of each, backplanes interleaved within a
repeat; the report gives the median and range.

Progress goes to stderr, the Markdown report to stdout (``--json PATH`` keeps every run).
Everything listens on 127.0.0.1, every wait has a time limit, and every process started is
stopped on the way out, also on Ctrl-C; children also get SIGKILL if this process dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import (
    START_TIMEOUT,
    BenchError,
    Proc,
    Processes,
    check_bounds,
    cpu_pct,
    cpu_sample,
    log,
    run_tool,
    write_json,
)
from bench.report import git_revision, machine_info

BACKPLANES = ("channels", "nats", "redis-cluster")
MODES = {"one": "`group_send`, one at a time", "many": "`group_send_many`"}
REPLY_TIMEOUT = 10.0
PROBE_TIMEOUT = 15.0  # seconds for every receiver's subscriptions to be in force
POLL = 0.05
DRAIN_CAP = 300.0  # seconds of deliveries after the last send, however slowly they trickle
QUIT_TIMEOUT = 6.0  # seconds processes may take to leave their groups and exit
DASH = "\N{EN DASH}"  # of ranges in the table


class Bench:
    """The backplane servers of the run, and one measurement's processes at a time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="realtime-bench-backplane-"))
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="project.settings",
            # Never opened (no process touches the database), but never the repository's.
            DATABASE_URL=f"sqlite:///{self.tmp / 'unused.sqlite3'}",
            DJANGO_DEBUG="0",
            REALTIME_LOG="WARNING",
            PYTHONUNBUFFERED="1",
        )
        self.procs = Processes(self.tmp, env)
        self.env: dict[str, dict[str, str]] = {}  # per backplane, over the bench's
        self.servers: dict[str, list[Proc]] = {}  # per backplane: what CPU is "server"
        self.versions: dict[str, str] = {}
        self.message_bytes = 0
        self.runs: list[dict[str, Any]] = []

    async def start_servers(self) -> None:
        for name in self.args.backplanes:
            log(f"[{name}] starting its server(s)...")
            if name == "channels":
                await self.procs.start_redis()
                # A REDIS_URL set before is replaced by our own Redis's (start_redis).
                self.env[name] = {
                    "REALTIME_BACKPLANE": "",
                    "REDIS_URL": self.procs.env["REDIS_URL"],
                }
                self.servers[name] = [self.procs.redis] if self.procs.redis else []
                self.versions["redis"] = self.procs.redis_version
            elif name == "nats":
                url = await self.procs.start_nats()
                self.env[name] = {"REALTIME_BACKPLANE": f"{url}?prefix=bench{os.getpid()}"}
                assert self.procs.nats is not None
                self.servers[name] = [self.procs.nats]
                self.versions["nats-server"] = await version("nats-server", "--version")
            else:
                url = await self.procs.start_redis_cluster()
                self.env[name] = {"REALTIME_BACKPLANE": f"{url}?prefix=bench{os.getpid()}"}
                self.servers[name] = list(self.procs.cluster)
                if "redis" not in self.versions:
                    self.versions["redis"] = await version("redis-server", "--version")

    async def run(self) -> None:
        await self.start_servers()
        total = len(self.args.backplanes) * len(self.args.modes) * self.args.repeats
        done = 0
        for repeat in range(1, self.args.repeats + 1):
            for name in self.args.backplanes:
                for mode in self.args.modes:
                    done += 1
                    log(f"[{name}] run {repeat}, {mode} ({done}/{total})...")
                    try:
                        result = await self.measure(name, mode, repeat)
                    except BenchError as exc:
                        log(f"[{name}] run {repeat}, {mode} FAILED: {exc}")
                        result = {"error": str(exc).splitlines()[0]}
                    self.runs.append({"backplane": name, "mode": mode, "run": repeat, **result})
                    if "error" not in result:
                        log(f"[{name}] {progress({'mode': mode, **result})}")

    async def spawn(self, name: str, label: str, *argv: str) -> Proc:
        return await self.procs.spawn(
            f"{name}-{label}",
            *(sys.executable, "-m", "bench.backplane_peer", *argv),
            control=True,
            env=self.env[name],
        )

    async def measure(self, name: str, mode: str, repeat: int) -> dict[str, Any]:
        args = self.args
        tag = f"{name[0]}{mode[0]}{repeat}"  # streams of this measurement only
        common = ("--tag", tag, "--groups", str(args.groups))
        started: list[Proc] = []
        try:
            for i in range(args.receivers):
                started.append(
                    await self.spawn(name, f"receiver{i + 1}-{tag}", "receiver", *common)
                )
            sender = await self.spawn(
                name,
                f"sender-{tag}",
                *("sender", *common, "--messages", str(args.messages), "--mode", mode),
                *("--chunk", str(args.chunk), "--max-seconds", str(args.max_seconds)),
            )
            started.append(sender)
            receivers = started[:-1]
            for proc in started:
                ready = await proc.read_json(within=START_TIMEOUT)
                self.message_bytes = ready.get("message_bytes", self.message_bytes)
            await self.probe(sender, receivers)
            roles = {"sender": sender}
            roles.update({f"receiver{i + 1}": p for i, p in enumerate(receivers)})
            roles.update({f"server{i + 1}": p for i, p in enumerate(self.servers[name])})
            before = cpu_sample(roles)
            sent = await sender.request({"cmd": "run"}, within=args.max_seconds + REPLY_TIMEOUT)
            counts = await self.drain(receivers, sent["sent"] * len(receivers))
            after = cpu_sample(roles)
            await quit_all(started)
            return figures(sent, counts, before, after, len(receivers))
        finally:
            await self.procs.stop(started)

    async def probe(self, sender: Proc, receivers: list[Proc]) -> None:
        """Until every receiver has a probe from every group: its subscriptions work (a NATS
        or Redis Cluster subscription is in force only once the server has read it)."""
        deadline = time.monotonic() + PROBE_TIMEOUT
        while time.monotonic() < deadline:
            await sender.request({"cmd": "probe"}, REPLY_TIMEOUT)
            again = time.monotonic() + 1.0
            while time.monotonic() < min(again, deadline):
                counts = [await r.request({"cmd": "count"}, REPLY_TIMEOUT) for r in receivers]
                if all(c.get("probed") == self.args.groups for c in counts):
                    return
                await asyncio.sleep(POLL)
        raise BenchError(f"the receivers were not in every group after {PROBE_TIMEOUT:g} s")

    async def drain(self, receivers: list[Proc], expected: int) -> list[dict[str, Any]]:
        """The receivers' counts once they have ``expected`` deliveries, or no more arrive
        for ``--drain`` seconds (or at most DRAIN_CAP seconds in all)."""
        seen, progress_at = -1, time.monotonic()
        deadline = progress_at + DRAIN_CAP
        while True:
            counts = [await r.request({"cmd": "count"}, REPLY_TIMEOUT) for r in receivers]
            for c in counts:
                if "error" in c:
                    raise BenchError(c["error"])
            got = sum(c["received"] for c in counts)
            if got >= expected:
                return counts
            if got > seen:
                seen, progress_at = got, time.monotonic()
            elif time.monotonic() - progress_at > self.args.drain:
                return counts
            if time.monotonic() > deadline:
                return counts
            await asyncio.sleep(POLL)

    async def cleanup(self) -> None:
        await self.procs.stop_all()
        if self.args.keep_tmp:
            log(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


async def quit_all(procs: list[Proc]) -> None:
    """Ask each to quit (receivers leave their groups), then give them QUIT_TIMEOUT s."""
    for proc in procs:
        stdin = proc.process.stdin
        with contextlib.suppress(OSError):
            stdin.write(b'{"cmd": "quit"}\n')
            await stdin.drain()
            stdin.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(QUIT_TIMEOUT):
            await asyncio.gather(*(proc.process.wait() for proc in procs))


async def version(binary: str, flag: str) -> str:
    found = shutil.which(binary, path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        return "-"
    proc = await asyncio.create_subprocess_exec(found, flag, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    words = out.decode().split()
    tagged = next((w[2:] for w in words if w.startswith("v=")), None)  # redis-server
    return tagged or next((w.lstrip("v") for w in words if w[:1] in "v0123456789"), "-")


def figures(
    sent: dict[str, Any],
    counts: list[dict[str, Any]],
    before: dict[str, Any],
    after: dict[str, Any],
    receivers: int,
) -> dict[str, Any]:
    """One run's figures: rates, loss, and CPU µs per delivery per kind of process."""
    delivered = sum(c["received"] for c in counts)
    expected = sent["sent"] * receivers
    last = max((c["last_at"] for c in counts if c["last_at"] is not None), default=None)
    span = (last - sent["began"]) if last is not None else None
    hz = os.sysconf("SC_CLK_TCK")
    cpu_s: dict[str, float] = {}
    for role in before:
        if role not in ("machine", "at"):
            kind = role.rstrip("0123456789")
            cpu_s[kind] = cpu_s.get(kind, 0.0) + (after[role] - before[role]) / hz

    def per_delivery(kind: str) -> float | None:
        return cpu_s[kind] / delivered * 1e6 if delivered and kind in cpu_s else None

    return {
        "sent": sent["sent"],
        "send_seconds": sent["seconds"],
        "sent_per_s": sent["sent"] / sent["seconds"] if sent["seconds"] > 0 else None,
        "send_errors": sent["errors"],
        "first_error": sent["first_error"],
        "send_timed_out": sent["timed_out"],
        "sender_cpu_s_self": sent["cpu_s"],
        "expected": expected,
        "delivered": delivered,
        "lost": max(0, expected - delivered),
        "receives": sum(c["receives"] for c in counts),
        "out_of_order": sum(c["out_of_order"] for c in counts),
        "interrupted": sum(c["interrupted"] for c in counts),
        "deliver_seconds": span,
        "deliveries_per_s": delivered / span if span else None,
        "cpu_s": cpu_s,
        "us_per_delivery": {kind: per_delivery(kind) for kind in ("server", "sender", "receiver")},
        "cpu_pct": cpu_pct(before, after),
    }


def progress(r: dict[str, Any]) -> str:
    us = r["us_per_delivery"]
    return (
        f"{r['mode']}: {_num(r['sent_per_s'])} sent/s, {_num(r['deliveries_per_s'])} "
        f"deliveries/s, lost {r['lost']}, µs/delivery server {_num1(us['server'])} "
        f"sender {_num1(us['sender'])} receivers {_num1(us['receiver'])}"
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _num1(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def spread(values: list[float | None], fmt: Any = _num) -> str:
    found = [v for v in values if v is not None]
    if not found:
        return "-"
    if len(found) == 1:
        return str(fmt(found[0]))
    return f"{fmt(statistics.median(found))} ({fmt(min(found))}{DASH}{fmt(max(found))})"


def markdown(result: dict[str, Any]) -> str:
    cfg, machine = result["config"], result["machine"]
    runs = f"{cfg['repeats']} run{'s' if cfg['repeats'] > 1 else ''}"
    receivers = f"{cfg['receivers']} receiver process{'es' if cfg['receivers'] > 1 else ''}"
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    lines = [
        "## Backplane throughput",
        "",
        f"{cfg['messages']:,} messages ({result['message_bytes']} bytes each as msgpack) "
        f"over {cfg['groups']} groups to {receivers}, each in every "
        f"group: {cfg['messages'] * cfg['receivers']:,} deliveries a run; `group_send_many` "
        f"in chunks of {cfg['chunk']}. Median ({DASH} range) of {runs}, fresh processes each. "
        "CPU µs per delivery: the backplane server(s), the sender, the receivers together.",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), Python "
        f"{machine['python']}, {versions}; revision {result['revision']}; "
        f"CPU reference {machine['cpu_reference_s']} s.",
        "",
        "| backplane | mode | sent msgs/s | deliveries/s | lost | server µs/delivery "
        "| sender µs/delivery | receivers µs/delivery | other CPU % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for name in cfg["backplanes"]:
        for mode in cfg["modes"]:
            mine = [r for r in result["runs"] if r["backplane"] == name and r["mode"] == mode]
            ok = [r for r in mine if "error" not in r]
            label = MODES[mode] + ("" if len(ok) == len(mine) else f" [{len(ok)} of {len(mine)}]")
            if not ok:
                lines.append(f"| {name} | {label} | failed | - | - | - | - | - | - |")
                continue
            lost, expected = sum(r["lost"] for r in ok), sum(r["expected"] for r in ok)
            lost_cell = "0" if not lost else f"{lost:,} ({lost / max(expected, 1):.2%})"
            us = [r["us_per_delivery"] for r in ok]
            lines.append(
                f"| {name} | {label} | {spread([r['sent_per_s'] for r in ok])} "
                f"| {spread([r['deliveries_per_s'] for r in ok])} | {lost_cell} "
                f"| {spread([u['server'] for u in us], _num1)} "
                f"| {spread([u['sender'] for u in us], _num1)} "
                f"| {spread([u['receiver'] for u in us], _num1)} "
                f"| {spread([r['cpu_pct']['other'] for r in ok])} |"
            )
            for r in ok:
                what = [
                    f"{r[k]} {k.replace('_', ' ')}"
                    for k in ("send_errors", "out_of_order", "interrupted")
                    if r[k]
                ]
                if r["send_timed_out"]:
                    what.append(f"stopped sending after --max-seconds ({r['sent']:,} sent)")
                if what:
                    notes.append(f"- {name}, {mode}, run {r['run']}: " + ", ".join(what))
            for r in mine:
                if "error" in r:
                    notes.append(f"- {name}, {mode}, run {r['run']} failed: {r['error']}")
    if notes:
        lines += ["", *notes]
    lines += [
        "",
        '"other CPU %" is load on the machine outside these processes during the run (of '
        "one core), loopback networking included: high values mean disturbed figures.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backplanes",
        type=lambda s: s.split(","),
        default=list(BACKPLANES),
        help=f"which, in order (default {','.join(BACKPLANES)})",
    )
    parser.add_argument(
        "--modes",
        type=lambda s: s.split(","),
        default=list(MODES),
        help="one (group_send, awaited), many (group_send_many); default both",
    )
    parser.add_argument("--receivers", type=int, default=2, help="receiver processes (2)")
    parser.add_argument("--groups", type=int, default=100, help="groups each joins (100)")
    parser.add_argument("--messages", type=int, default=50_000, help="messages a run (50,000)")
    parser.add_argument("--chunk", type=int, default=64, help="group_send_many's chunk (64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (3)")
    parser.add_argument(
        "--drain", type=float, default=5.0, help="seconds without a delivery that end a run (5)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=120.0, help="most seconds a sender sends (120)"
    )
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the processes' logs")
    args = parser.parse_args(argv)
    for given, known in ((args.backplanes, BACKPLANES), (args.modes, tuple(MODES))):
        if set(given) - set(known):
            parser.error(f"unknown {', '.join(sorted(set(given) - set(known)))}")
    check_bounds(
        parser,
        [
            (args.receivers, 1, 8, "--receivers"),
            (args.groups, 1, 10_000, "--groups"),
            (args.messages, 10, 200_000, "--messages"),
            (args.chunk, 1, 1000, "--chunk"),
            (args.repeats, 1, 9, "--repeats"),
            (args.drain, 0.5, 60, "--drain"),
            (args.max_seconds, 1, 600, "--max-seconds"),
        ],
    )
    return args


async def amain(args: argparse.Namespace) -> int:
    began = time.monotonic()
    bench = Bench(args)
    try:
        await bench.run()
    finally:
        await bench.cleanup()
    keys = ("backplanes", "modes", "receivers", "groups", "messages", "chunk", "repeats", "drain")
    result = {
        "config": {k: getattr(args, k) for k in keys},
        "machine": machine_info(bench.versions.get("redis", "-")),
        "versions": bench.versions,
        "revision": git_revision(),
        "message_bytes": bench.message_bytes,
        "runs": bench.runs,
    }
    print("\n" + markdown(result), flush=True)
    if args.json:
        write_json(args.json, result)
    log(f"done in {time.monotonic() - began:.0f} s")
    return 1 if any("error" in r for r in bench.runs) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_tool("backplane benchmark", lambda: amain(args))


if __name__ == "__main__":
    sys.exit(main())
