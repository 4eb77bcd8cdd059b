"""The processes of ``bench.backplane``: a receiver standing in for a server process's hub,
and the sender.

Started by the benchmark with the backplane in their environment (``REALTIME_BACKPLANE``,
``REDIS_URL``; ``DJANGO_SETTINGS_MODULE=project.settings``)::

    python -m bench.backplane_peer receiver --tag T --groups 100
    python -m bench.backplane_peer sender --tag T --groups 100 --messages 50000 --mode many

Both print ``{"event": "ready", ...}`` once set up, then answer JSON-line commands on stdin.
The receiver takes a channel (``backplane().new_channel``, the hub's prefix), joins the
groups of the streams ``bench:T:0`` … ``bench:T:<groups - 1>`` and receives in a loop,
counting each stream message a received message carries (a ``realtime.batch`` carries
several); ``count`` answers what it has, ``quit`` leaves the groups and exits. The sender
builds its messages first (``realtime.event`` messages as ``realtime.core.publishing``
makes them, message ``n`` on stream ``n % groups``), so the timed part is the sending only;
``probe`` sends one ``bench.probe`` event to every group (the driver waits until each
receiver has one from every group: its subscriptions are in force), ``run`` sends the
messages, ``group_send`` one at a time (``--mode one``) or ``group_send_many`` in chunks
(``--mode many``), and answers how many it sent and how long it took. Exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from bench.procs import emit

MAX_ERRORS = 10  # a run stops after this many failed sends
QUIT_TIMEOUT = 5.0  # seconds leaving the groups may take


def streams(tag: str, groups: int) -> list[str]:
    return [f"bench:{tag}:{i}" for i in range(groups)]


def setup() -> Any:
    """Django, then the process's backplane (``REALTIME["BACKPLANE"]``)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from realtime.bus import backplane

    return backplane()


def probe(stream: str) -> dict[str, Any]:
    from realtime.bus import messages

    return dict(messages.event(stream, "probe", None, "bench.probe", "{}"))


async def commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# --- the receiver ---------------------------------------------------------------------------
class Counts:
    def __init__(self, names: list[str]) -> None:
        self.index = {name: i for i, name in enumerate(names)}
        self.last_seq = [0] * len(names)
        self.received = self.receives = self.out_of_order = self.interrupted = 0
        self.probed: set[str] = set()
        self.first_at: float | None = None
        self.last_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "receives": self.receives,
            "out_of_order": self.out_of_order,
            "interrupted": self.interrupted,
            "probed": len(self.probed),
            "first_at": self.first_at,
            "last_at": self.last_at,
        }


async def receive_loop(plane: Any, channel: str, counts: Counts) -> None:
    from realtime.bus import BackplaneInterrupted
    from realtime.bus.messages import unbatch

    clock = time.monotonic
    while True:
        try:
            message = await plane.receive(channel)
        except BackplaneInterrupted:
            counts.interrupted += 1
            continue
        before = counts.received
        inners: list[dict[str, Any]] = unbatch(message)  # type: ignore[assignment]
        for inner in inners:
            if inner.get("event") == "bench.probe":
                counts.probed.add(inner["stream"])
                continue
            counts.received += 1
            i = counts.index.get(inner["stream"])
            if i is not None:
                # One group's messages must arrive in order (the backplane's promise).
                if inner["seq"] <= counts.last_seq[i]:
                    counts.out_of_order += 1
                counts.last_seq[i] = inner["seq"]
        if counts.received == before:
            continue  # probes only
        counts.receives += 1
        now = clock()
        if counts.first_at is None:
            counts.first_at = now
        counts.last_at = now


async def receiver(args: argparse.Namespace) -> None:
    plane = setup()
    from realtime.bus.groups import HUB_CHANNEL_PREFIX, group_name

    names = streams(args.tag, args.groups)
    groups = [group_name(s) for s in names]
    channel = await plane.new_channel(HUB_CHANNEL_PREFIX)
    for group in groups:
        await plane.group_add(group, channel)
    counts = Counts(names)
    task = asyncio.create_task(receive_loop(plane, channel, counts))
    reader = await commands()
    emit({"event": "ready", "channel": channel})
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command.get("cmd") == "quit":
                break
            if task.done():
                exc = task.exception()
                emit({"error": f"the receive loop ended: {exc!r}"})
            elif command.get("cmd") == "count":
                emit(counts.as_dict())
            else:
                emit({"error": f"unknown command {command.get('cmd')!r}"})
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        # Leave the groups: a channel-layer group keeps its members for a day otherwise.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(QUIT_TIMEOUT):
                for group in groups:
                    await plane.group_discard(group, channel)
                await plane.close_channel(channel)
                await plane.aclose()


# --- the sender -----------------------------------------------------------------------------
def build(tag: str, groups: int, count: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` (group, message) pairs: realistic ``realtime.event`` messages, stamped."""
    from realtime.bus import messages
    from realtime.bus.groups import group_name
    from realtime.protocol.frames import event_frame

    names = streams(tag, groups)
    targets = [group_name(s) for s in names]
    epoch = "5f0c6f9e1b2a4c3d"  # secrets.token_hex(8), as storage.epochs
    now = time.time()
    pairs = []
    for n in range(count):
        i, seq = n % groups, n // groups + 1
        data = f'{{"id":{n},"title":"Task {n}","done":false}}'
        frame = event_frame(names[i], seq, "task.updated", data, "2026-12-07T00:00:00.000Z")
        message = messages.event(names[i], epoch, seq, "task.updated", frame)
        pairs.append((targets[i], dict(messages.stamped(message, now))))
    return pairs


async def send_all(
    plane: Any, pairs: list[tuple[str, dict[str, Any]]], mode: str, chunk: int, limit: float
) -> dict[str, Any]:
    errors: list[str] = []
    sent = 0
    cpu = time.process_time()
    began = time.monotonic()
    deadline = began + limit
    step = 1 if mode == "one" else chunk
    for k in range(0, len(pairs), step):
        if time.monotonic() > deadline:
            break
        try:
            if mode == "one":
                await plane.group_send(*pairs[k])
            else:
                await plane.group_send_many(pairs[k : k + step])
        except Exception as exc:
            errors.append(repr(exc))
            if len(errors) >= MAX_ERRORS:
                break
            continue
        sent += len(pairs[k : k + step])
    return {
        "sent": sent,
        "began": began,
        "seconds": time.monotonic() - began,
        "cpu_s": time.process_time() - cpu,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "timed_out": sent + len(errors) * step < len(pairs) and len(errors) < MAX_ERRORS,
    }


async def sender(args: argparse.Namespace) -> None:
    plane = setup()
    import msgpack  # type: ignore[import-untyped]

    from realtime.bus.groups import group_name

    pairs = build(args.tag, args.groups, args.messages)
    probes = [(group_name(s), probe(s)) for s in streams(args.tag, args.groups)]
    # Connect (and load any scripts) before the timed part: to a group nobody joined.
    warm = group_name(f"bench:{args.tag}:warm")
    await plane.group_send(warm, probe("warm"))
    await plane.group_send_many([(warm, probe("warm"))] * 2)
    reader = await commands()
    emit({"event": "ready", "message_bytes": len(msgpack.packb(pairs[0][1]))})
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command.get("cmd") == "quit":
                break
            if command.get("cmd") == "probe":
                await plane.group_send_many(probes)
                emit({"probed": len(probes)})
            elif command.get("cmd") == "run":
                emit(await send_all(plane, pairs, args.mode, args.chunk, args.max_seconds))
            else:
                emit({"error": f"unknown command {command.get('cmd')!r}"})
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(QUIT_TIMEOUT):
                await plane.aclose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("role", choices=["receiver", "sender"])
    parser.add_argument("--tag", required=True, help="names this measurement's streams")
    parser.add_argument("--groups", type=int, required=True)
    parser.add_argument("--messages", type=int, default=0)
    parser.add_argument("--mode", choices=["one", "many"], default="many")
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(receiver(arguments) if arguments.role == "receiver" else sender(arguments))
