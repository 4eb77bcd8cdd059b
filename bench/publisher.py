"""The publisher of ``bench.fanout``: publishes paced events on one stream.

Started by the benchmark with the servers' environment (``DATABASE_URL``, ``REDIS_URL``,
``DJANGO_SETTINGS_MODULE``)::

    python -m bench.publisher --approach realtime --stream public:bench

After ``django.setup()`` it prints ``{"event": "ready"}`` and answers JSON-line commands on
stdin: ``{"cmd": "run", "k": K, "rate": R, "duration": D}`` publishes ``R * D`` events, each
due at ``start + i / R``, one call at a time; a call publishes every event due by then (one,
unless the publisher is behind schedule), and the reply says what it did. ``realtime`` calls
``realtime.apublish`` (stored in the database, then fanned out), or ``apublish_many`` for
several; ``realtime-single`` always one ``apublish`` per event; ``naive`` calls
``channel_layer.group_send`` directly and numbers the events itself. Each event's data is
``{"t": time.time(), "n": i, "k": K}``. Exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.procs import emit

MAX_ERRORS = 10  # per step; after that the step is abandoned
LATE_FACTOR = 1.5  # a step stops at duration * LATE_FACTOR even if events remain
MAX_BATCH = 100  # most events due at once that one call publishes


def make_publish(approach: str, stream: str) -> Callable[[list[dict[str, Any]]], Awaitable[int]]:
    """A coroutine function publishing each of ``datas`` on ``stream``; returns the last seq.

    Several datas are due at once only when the publisher is behind schedule: ``realtime``
    then stores them with one ``apublish_many`` (one transaction, one layer message), as a
    busy producer would; ``realtime-single`` awaits one ``apublish`` per event, as a view or a
    chat handler does; ``naive`` sends them one ``group_send`` each.
    """
    if approach == "realtime-single":
        import realtime

        async def publish_one_at_a_time(datas: list[dict[str, Any]]) -> int:
            seq = 0
            for data in datas:
                seq = int((await realtime.apublish(stream, "bench.tick", data)).seq)
            return seq

        return publish_one_at_a_time
    if approach == "realtime":
        import realtime

        async def publish_realtime(datas: list[dict[str, Any]]) -> int:
            if len(datas) == 1:
                return int((await realtime.apublish(stream, "bench.tick", datas[0])).seq)
            events = await realtime.apublish_many(stream, [("bench.tick", d) for d in datas])
            return int(events[-1].seq)

        return publish_realtime

    from bench import naive

    seq = 0

    async def publish_naive(datas: list[dict[str, Any]]) -> int:
        nonlocal seq
        for data in datas:
            seq += 1
            await naive.apublish(stream, "bench.tick", data, seq)
        return seq

    return publish_naive


async def run_step(
    publish: Callable[[dict[str, Any]], Awaitable[int]], k: int, rate: float, duration: float
) -> dict[str, Any]:
    total = max(1, round(rate * duration))
    interval = 1.0 / rate
    calls: list[float] = []
    errors: list[str] = []
    first_seq = last_seq = None
    clock = time.perf_counter
    start = clock()
    wall_start = time.time()
    deadline = start + duration * LATE_FACTOR
    sent = i = 0
    while i < total:
        now = clock()
        delay = start + i * interval - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif now > deadline:
            break
        # Everything due by now goes in this call (one event, unless behind schedule).
        due = min(total, i + MAX_BATCH, max(i + 1, int((clock() - start) / interval) + 1))
        before = clock()
        sent_at = time.time()
        try:
            seq = await publish([{"t": sent_at, "n": n, "k": k} for n in range(i, due)])
        except Exception as exc:
            errors.append(repr(exc))
            if len(errors) >= MAX_ERRORS:
                break
            i = due
            continue
        calls.append(clock() - before)
        if first_seq is None:
            first_seq = seq - (due - i) + 1
        sent += due - i
        last_seq = seq
        i = due
    # On schedule, the last call starts at (sent - 1) * interval: count the full interval.
    elapsed = max(clock() - start, sent * interval)
    calls.sort()

    def pct(q: float) -> float | None:
        return round(calls[min(len(calls) - 1, int(q * len(calls)))] * 1000, 3) if calls else None

    return {
        "k": k,
        "target": total,
        "count": sent,
        "t0": wall_start,
        "seconds": elapsed,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "call_p50_ms": pct(0.5),
        "call_p99_ms": pct(0.99),
        "call_max_ms": round(calls[-1] * 1000, 3) if calls else None,
    }


async def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    publish = make_publish(args.approach, args.stream)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "ready"})
    while line := await reader.readline():
        command = json.loads(line)
        if command.get("cmd") == "quit":
            break
        if command.get("cmd") == "run":
            emit(await run_step(publish, command["k"], command["rate"], command["duration"]))
        else:
            emit({"error": f"unknown command {command.get('cmd')!r}"})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--approach", choices=["realtime", "realtime-single", "naive"], required=True
    )
    parser.add_argument("--stream", default="public:bench")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
