from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from channels.db import database_sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser

from realtime.bus import Backplane, messages
from realtime.bus import backplane as bus_layer
from realtime.bus.groups import group_name
from realtime.exceptions import RealtimeError
from realtime.management.base import Command as BaseCommand
from realtime.protocol import dumps, event_frame, format_ts, loads
from realtime.storage import store
from realtime.streams import validate_stream_name

# Seconds between reads of the database for stored events the channel layer did not bring
# (another process on the in-memory layer, a lost message).
POLL_INTERVAL = 0.5
PAGE = 500


class Command(BaseCommand):
    help = """\
Print a stream's events as they are published, like `tail -f`: first the last few stored
events, then every new one, until Ctrl-C.

Stored events come from the database, in seq order with none missing, whoever published
them (a server, a worker, another manage.py). With the Redis channel layer new events also
arrive at once through it, like a server process would get them, and so do ephemeral
events (not stored: cursors, typing, the admin's realtime:admin:* figures), marked "~".
With the in-memory layer only stored events show, read every half second."""
    examples = """\
  manage.py realtime_tail public:lobby               last 10 events, then follow
  manage.py realtime_tail public:lobby -n 0          only new events
  manage.py realtime_tail orders:42 --since 0        the whole retained history, then follow
  manage.py realtime_tail public:lobby --json        one JSON event frame per line
  manage.py realtime_tail realtime:admin:stats       the servers' figures, every STATS_INTERVAL
  manage.py realtime_tail public:lobby --count 5 --timeout 30   stop after 5 events or 30 s"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("stream", help="The stream to follow, e.g. public:lobby.")
        parser.add_argument(
            "-n",
            "--lines",
            type=int,
            default=10,
            metavar="N",
            help="Stored events to print first, the newest N (default 10; 0: none).",
        )
        parser.add_argument(
            "--since",
            type=int,
            metavar="SEQ",
            help="Start after this seq instead (0: all retained history); overrides -n.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print each event as its JSON frame."
        )
        parser.add_argument("--count", type=int, metavar="N", help="Exit after printing N events.")
        parser.add_argument("--timeout", type=float, metavar="S", help="Exit after S seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        stream = options["stream"]
        try:
            validate_stream_name(stream)
        except RealtimeError as exc:
            raise CommandError(exc.message) from exc
        if options["lines"] < 0 or (options["since"] is not None and options["since"] < 0):
            raise CommandError("-n and --since take a number >= 0.")
        follower = Follower(self, stream, options)
        try:
            asyncio.run(self.follow(follower))
        except KeyboardInterrupt:
            pass  # Ctrl-C before the loop took over the signal
        except BrokenPipeError:
            sys.stderr.close()  # piped into `head`: stop quietly

    @staticmethod
    async def follow(follower: Follower) -> None:
        """Run until done; Ctrl-C cancels the follower cleanly instead of interrupting
        whatever it was awaiting."""
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            # The flag too: on Python 3.11 a cancellation can be swallowed on its way
            # (asyncio.wait_for inside redis-py, python/cpython#86296); the loop then ends
            # at its next step.
            follower.stopped = True
            task.cancel()

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop)
        loop.add_signal_handler(signal.SIGTERM, stop)
        with contextlib.suppress(asyncio.CancelledError):  # Ctrl-C: the normal way to stop
            await follower.run()


class Follower:
    """The stream's position, and what to print for each event."""

    def __init__(self, command: Command, stream: str, options: dict[str, Any]) -> None:
        self.command = command
        self.stream = stream
        self.options = options
        self.position = 0  # last seq printed
        self.epoch: str | None = None
        self.printed = 0
        self.stopped = False  # Ctrl-C or SIGTERM
        self.layer: Any = None
        self.channel: str | None = None
        self.deadline = (
            time.monotonic() + options["timeout"] if options["timeout"] is not None else None
        )

    @property
    def done(self) -> bool:
        count = self.options["count"]
        return (
            self.stopped
            or (count is not None and self.printed >= count)
            or (self.deadline is not None and time.monotonic() >= self.deadline)
        )

    async def run(self) -> None:
        layer: Backplane | None = None
        channel = group = None
        with contextlib.suppress(ImproperlyConfigured):
            layer = bus_layer()
        if layer is not None:
            try:
                # Joined before the history is read, as a hub does: nothing falls between.
                channel = await layer.new_channel("realtime.tail")
                group = group_name(self.stream)
                await layer.group_add(group, channel)
            except Exception as exc:
                self.note(f"channel layer unavailable ({exc}); reading the database only")
                channel = None
        try:
            info = await database_sync_to_async(store.stream_info)(self.stream)
            self.epoch = info.epoch if info else None
            head = info.last_seq if info else 0
            since = self.options["since"]
            self.position = since if since is not None else max(0, head - self.options["lines"])
            self.note(f"following {self.stream} from seq {self.position} (Ctrl-C to stop)")
            await self.catch_up()
            self.layer, self.channel = layer, channel
            while not self.done:
                await self.step()
        finally:
            if layer is not None and channel is not None and group is not None:
                # If this fails, the membership expires with the layer's group_expiry.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):  # bounded: Ctrl-C must stop it promptly
                        await layer.group_discard(group, channel)

    async def step(self) -> None:
        wait = POLL_INTERVAL
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - time.monotonic()))
        if self.channel is None:
            await asyncio.sleep(wait)
            await self.catch_up()
            return
        try:
            async with asyncio.timeout(wait):
                message = await self.layer.receive(self.channel)
        except TimeoutError:
            await self.catch_up()
            return
        except Exception as exc:
            self.note(f"channel layer failed ({exc}); reading the database only")
            self.channel = None
            return
        parsed = messages.parse(message)
        if parsed is None:
            return
        for inner in messages.unbatch(parsed):
            if inner["type"] == "realtime.events":
                for single in inner["events"]:
                    await self.take(single)
            elif inner["type"] == "realtime.event":
                await self.take(inner)
            elif inner["type"] == "realtime.reset":
                await self.catch_up()  # notices the new epoch and starts over

    async def take(self, message: messages.EventMessage) -> None:
        """Print one event message, or catch up from the database if it does not follow."""
        seq = message["seq"]
        if seq is None:
            self.emit(loads(message["frame"]), ephemeral=True)
        elif message["epoch"] != self.epoch:
            await self.catch_up()  # notices the new epoch and starts over
        elif seq == self.position + 1:
            self.emit(loads(message["frame"]))
            self.position = seq
        elif seq > self.position:
            await self.catch_up()  # a gap: read it from the database

    async def catch_up(self) -> None:
        """Print every stored event after the position, in order."""
        while not self.done:
            rows, info = await database_sync_to_async(store.read)(self.stream, self.position, PAGE)
            if info is not None and self.epoch is not None and info.epoch != self.epoch:
                self.note(f"{self.stream} was reset (new epoch): starting over from seq 0")
                self.epoch, self.position = info.epoch, 0
                continue
            if info is not None:
                self.epoch = info.epoch
                if rows and rows[0].seq > self.position + 1:
                    self.note(
                        f"seqs {self.position + 1}-{rows[0].seq - 1} were deleted by retention"
                    )
            for row in rows:
                if self.done:
                    return
                frame = event_frame(
                    self.stream, row.seq, row.event, dumps(row.data), format_ts(row.ts)
                )
                self.emit(loads(frame))
                self.position = row.seq
            if len(rows) < PAGE:
                return

    def emit(self, frame: dict[str, Any], ephemeral: bool = False) -> None:
        out = self.command.stdout
        if self.options["json"]:
            out.write(json.dumps(frame, ensure_ascii=False))
        else:
            seq = "~" if ephemeral else str(frame.get("seq"))
            data = json.dumps(frame.get("data"), ensure_ascii=False)
            out.write(f"{seq:>6}  {frame.get('ts', '')}  {frame.get('event')}  {data}")
        out.flush()
        self.printed += 1

    def note(self, text: str) -> None:
        if self.options["verbosity"] >= 1:
            self.command.stderr.write(f"realtime_tail: {text}")
            self.command.stderr.flush()
