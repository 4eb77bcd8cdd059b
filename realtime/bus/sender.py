"""The per-process sender: sync callers' channel-layer messages on one long-lived event loop.

``async_to_sync(layer.group_send)`` from a plain thread (a WSGI view, a worker, a management
command, an ``on_commit`` callback) builds an event loop per call, and channels-redis opens a
Redis connection per loop: about 5 ms a message. Sync publishers instead hand each message to
one daemon thread that keeps its loop, and so its layer connections, for the life of the
process. The caller does not wait for the send: its event is already committed, and a message
the layer loses is delivered by every hub's reconciler (``RECONCILE_INTERVAL``).

Messages leave in the order they were submitted. What queues up while a send is under way
leaves together: consecutive events of one stream as one ``realtime.events`` message (at most
``FAN_OUT_CHUNK`` events), and all of it in one ``group_send_many`` call, which on Redis
is two scripts and one layer message per receiving server process, however many streams the
events were for. While messages keep coming, sends are paced (``bus.pacing``): the next starts
``SEND_HOLD`` (2 ms; up to three times that when sends get slow) after the last began, so a
publisher calling ``publish()`` in a loop pays one send per several events instead of one each
(about 40 % of its CPU per event; docs/performance.md); a message after a quiet spell leaves
at once. ``flush(timeout)`` waits for what is queued; it runs at interpreter exit, bounded by
``EXIT_TIMEOUT``.

The in-memory layer is the exception: its queues belong to the server's event loop, so its
messages still go through ``async_to_sync``, which runs them on that loop.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from asgiref.sync import async_to_sync

from realtime.bus import messages
from realtime.bus.backends import backplane
from realtime.bus.groups import group_name
from realtime.bus.messages import StreamMessage
from realtime.bus.pacing import WritePacer
from realtime.bus.send import group_send_many

logger = logging.getLogger("realtime.publish")

# Events per merged ``realtime.events`` message (keeps each layer message small).
FAN_OUT_CHUNK = 100
# Messages handed to the layer in one ``group_send_many`` call (two Redis scripts).
SEND_CHUNK = 500
# Messages that may wait for the sender; past this a submit waits up to ``FULL_WAIT`` seconds,
# then drops the message (logged: the reconciler delivers what it carried).
MAX_PENDING = 10_000
FULL_WAIT = 1.0
# While messages keep coming, sends start at least this far apart (``bus.pacing``).
SEND_HOLD = 0.002
# How long interpreter exit waits for queued messages.
EXIT_TIMEOUT = 5.0

Message = dict[str, Any]


def merge(queued: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
    """Join runs of stored events to one group into ``realtime.events`` messages."""
    merged: list[tuple[str, Message]] = []
    for group, message in queued:
        last = merged[-1][1] if merged and merged[-1][0] == group else None
        if _stored_event(message) and last is not None and _stored_event(last):
            merged[-1] = (group, {**_events(last), "events": [last, message]})
            continue
        if (
            _stored_event(message)
            and last is not None
            and last["type"] == "realtime.events"
            and len(last["events"]) < FAN_OUT_CHUNK
        ):
            last["events"].append(message)
            continue
        merged.append((group, message))
    return merged


def _stored_event(message: Message) -> bool:
    return message["type"] == messages.EVENT and message["seq"] is not None


def _events(first: Message) -> Message:
    return dict(messages.events(first["stream"], [], first.get("t")))


class Sender:
    """One daemon thread with its own event loop, sending what sync callers submit."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the thread, its loop and what was queued (a new process starts afresh)."""
        self._lock = threading.Condition()
        self._queue: deque[tuple[str, Message]] = deque()
        self._busy = False  # a send is under way
        self._holding = False  # paced: the sender will look at the queue when its hold ends
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._pid = 0
        self.dropped = 0

    def submit(self, group: str, message: Message) -> None:
        """Queue ``message`` for ``group``; returns at once (waits only when the queue is full)."""
        found = backplane()
        if found.loop_bound:
            async_to_sync(found.group_send)(group, message)
            return
        with self._lock:
            if self._pid != os.getpid():
                self._start()
            if len(self._queue) >= MAX_PENDING and not self._lock.wait_for(
                lambda: len(self._queue) < MAX_PENDING, FULL_WAIT
            ):
                self.dropped += 1
                logger.error(
                    "The sender is %s messages behind; dropped one for %s "
                    "(stored: the reconciler will deliver it).",
                    len(self._queue),
                    group,
                )
                return
            self._queue.append((group, message))
            if len(self._queue) == 1 and not self._busy and not self._holding:
                assert self._loop is not None and self._wake is not None
                self._loop.call_soon_threadsafe(self._wake.set)

    def flush(self, timeout: float = EXIT_TIMEOUT) -> bool:
        """Wait up to ``timeout`` seconds for every queued message to be sent; True if it was."""
        with self._lock:
            if self._pid != os.getpid():
                return True
            return self._lock.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _start(self) -> None:
        self._pid = os.getpid()
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(ready,), name="realtime-sender", daemon=True
        )
        thread.start()
        ready.wait()
        atexit.register(self.flush, EXIT_TIMEOUT)

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        ready.set()
        self._loop.run_until_complete(self._send_forever())

    async def _send_forever(self) -> None:
        assert self._wake is not None and self._loop is not None
        pacer, clock = WritePacer(SEND_HOLD), self._loop.time
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                delay = pacer.delay(clock())
                if delay:
                    # What is submitted meanwhile needs no wake-up (a write to the loop's
                    # self-pipe and a thread switch for each pass): the queue is read next.
                    self._holding = True
                    await asyncio.sleep(delay)
                with self._lock:
                    self._holding = False
                    queued = list(self._queue)
                    self._queue.clear()
                    self._busy = bool(queued)
                    self._lock.notify_all()
                if not queued:
                    break
                started = clock()
                pacer.started(started)
                merged = merge(queued)
                for start in range(0, len(merged), SEND_CHUNK):
                    await self._send(merged[start : start + SEND_CHUNK])
                pacer.finished(clock() - started)
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    @staticmethod
    async def _send(items: list[tuple[str, Message]]) -> None:
        try:
            await group_send_many(items)
        except Exception:
            logger.exception(
                "Sending %s layer message(s) (to %s, ...) failed; what they carried is stored: "
                "the reconciler will deliver it.",
                len(items),
                items[0][0],
            )


sender = Sender()
# A child forked while the sender thread held its lock would wait on it forever: start afresh.
os.register_at_fork(after_in_child=sender.reset)


def send(message: StreamMessage) -> None:
    """Send ``message`` to its stream's group from sync code, through the process's sender."""
    sender.submit(group_name(message["stream"]), dict(messages.stamped(message, time.time())))


def flush(timeout: float = EXIT_TIMEOUT) -> bool:
    """Wait for the messages sync callers queued; True if all were sent within ``timeout``."""
    return sender.flush(timeout)
