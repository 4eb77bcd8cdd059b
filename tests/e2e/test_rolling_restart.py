"""A rolling restart of two ``python -m realtime.serve`` processes under load, with the
Python client (``realtime.client``): nothing lost, nothing repeated, presence back within the
grace period, reconnects spread as the draining servers told.

Forty clients reach the servers through a load balancer (``TCPProxy``, round robin), each
subscribed to one stream and present on it, while this process publishes ~40 events a
second. Server A is taken out of rotation and sent SIGTERM (it drains: each of its clients
is closed with 1012 and its own delay), A' starts on a new port and joins the rotation; then
the same for B. Every client must end with every seq exactly once, in order; no client is
told that a member left (the other processes hold a drained member's leave while it
reconnects), and no client's view of the presence loses a member for longer than
``PRESENCE_GRACE``; and each drained client must have waited the delay it was given, the
delays spread over ``DRAIN_SPREAD``.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

import realtime
from realtime.client import Client, Event, StateChange, Subscription
from tests.servers import Server, TCPProxy, settings_env

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 40
STREAM = "public:rolling"
SPREAD = 1.5  # DRAIN_SPREAD, seconds: below GRACE, with room for the reconnect itself
GRACE = 3.0  # PRESENCE_GRACE, seconds: the demo's default, stated here
OVERRIDES = {"DRAIN_SPREAD": SPREAD, "DRAIN_TIMEOUT": 5, "PRESENCE_GRACE": GRACE}


class Watcher:
    """One client's view: its state changes and how long each member was out of its view."""

    def __init__(self, index: int) -> None:
        self.key = f"anon:roll-{index}"
        self.changes: list[tuple[float, StateChange]] = []
        self.absent_since: dict[str, float] = {}
        self.absences: list[tuple[str, float]] = []  # (member, seconds out of view)
        self.client: Client | None = None
        self.seen: set[str] = set()  # every member this view has held
        self.leaves: list[str] = []  # members this view was told left

    def on_state(self, change: StateChange) -> None:
        self.changes.append((time.monotonic(), change))

    def on_presence(self, frame: dict[str, Any]) -> None:
        now = time.monotonic()
        sub = self.client.subscription(STREAM) if self.client is not None else None
        assert sub is not None
        members = set(sub.presence.members)
        if frame["type"] == "presence.state":
            # After a reconnect: who is missing from the fresh list is out from now on.
            for key in list(self.absent_since):
                if key in members:
                    self.absences.append((key, now - self.absent_since.pop(key)))
            for key in self.seen - members:
                self.absent_since.setdefault(key, now)
        elif frame["type"] == "presence.leave":
            self.leaves.append(frame["key"])
            self.absent_since.setdefault(frame["key"], now)
        elif frame["key"] in self.absent_since:
            self.absences.append((frame["key"], now - self.absent_since.pop(frame["key"])))
        self.seen |= members


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g} s: {what}") from None


async def test_a_rolling_restart_loses_nothing_and_spreads_reconnects(
    daphne_server: Callable[..., Server],
) -> None:
    env = settings_env(OVERRIDES, REALTIME_PRESENCE_GRACE=str(GRACE))

    def start() -> Server:
        return daphne_server(env, server="realtime")

    a, b = start(), start()
    balancer = TCPProxy([a.port, b.port])
    url = await balancer.start()
    watchers = [Watcher(n) for n in range(CLIENTS)]
    clients = [
        Client(url, client_id=f"roll-{n}", on_state=w.on_state) for n, w in enumerate(watchers)
    ]
    for watcher, client in zip(watchers, clients, strict=True):
        watcher.client = client
    published = 0
    received: list[list[int]] = [[] for _ in clients]

    async def follow(n: int, sub: Subscription) -> None:
        async for item in sub:
            assert isinstance(item, Event), item  # a Reset would mean a position was lost
            assert item.seq is not None
            received[n].append(item.seq)

    async def publisher(stop: asyncio.Event) -> None:
        nonlocal published
        while not stop.is_set():
            await realtime.apublish(STREAM, "tick", {"n": published})
            published += 1
            await asyncio.sleep(0.025)

    async def roll(old: Server) -> None:
        """Out of rotation, SIGTERM (drain), a new process on a new port in rotation."""
        balancer.targets.remove(old.port)
        old._signal(signal.SIGTERM)
        new = await asyncio.to_thread(start)
        balancer.targets.append(new.port)
        code = await asyncio.to_thread(old.process.wait, 10)
        assert code == 0, old.log()

    followers: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(client.connect() for client in clients))
            subs = await asyncio.gather(
                *(
                    client.subscribe(STREAM, since=0, presence={"n": n}, on_presence=w.on_presence)
                    for n, (client, w) in enumerate(zip(clients, watchers, strict=True))
                )
            )
        followers = [asyncio.create_task(follow(n, sub)) for n, sub in enumerate(subs)]
        everyone = {w.key for w in watchers}
        await wait_until(
            lambda: all(set(s.presence.members) == everyone for s in subs), 20, "all present"
        )
        sending = asyncio.create_task(publisher(stop))
        await asyncio.sleep(1)

        await roll(a)
        await wait_until(lambda: all(c.state == "open" for c in clients), 15, "back after A")
        await asyncio.sleep(1)
        await roll(b)
        await wait_until(lambda: all(c.state == "open" for c in clients), 15, "back after B")
        await asyncio.sleep(1)
        stop.set()
        await sending

        # Every client: every seq once, in order.
        await wait_until(
            lambda: all(len(seqs) >= published for seqs in received), 20, "every event arrived"
        )
        await asyncio.sleep(0.3)  # a duplicate would be here by now
        for n, seqs in enumerate(received):
            assert seqs == list(range(1, published + 1)), f"client {n}"

        # Presence: everyone present at the end, in everyone's view; no member out of
        # anyone's view for longer than the grace period.
        await wait_until(
            lambda: all(set(s.presence.members) == everyone for s in subs), 10, "all present"
        )
        # A connected client is never told a drained member left: the other processes hold
        # the leave while the member reconnects (only a client's own reconnect, whose fresh
        # presence.state lacks those not back yet, leaves gaps in its view).
        assert not [(w.key, w.leaves) for w in watchers if w.leaves]
        absences = [seconds for w in watchers for _, seconds in w.absences]
        assert not [w.absent_since for w in watchers if w.absent_since]
        longest = max(absences, default=0.0)
        if longest > GRACE:
            worst = max(
                ((w.key, key, t) for w in watchers for key, t in w.absences), key=lambda x: x[2]
            )
            member = watchers[int(worst[1].rsplit("-", 1)[1])]
            raise AssertionError(
                f"{worst[1]} was out of {worst[0]}'s view for {worst[2]:.2f} s; its states: "
                f"{[(round(t, 2), c.state, c.code, c.delay) for t, c in member.changes]}"
            )

        # Reconnects: each drained client waited its 1012's delay; the delays are spread.
        delays, waits = [], []
        for watcher in watchers:
            changes = watcher.changes
            cuts = [(t, c) for t, c in changes if c.state == "reconnecting"]
            assert cuts, "a client was never drained"
            for t, cut in cuts:
                assert cut.code == 1012 and cut.delay is not None, cut
                assert 0 <= cut.delay <= SPREAD
                opened = next(u for u, c in changes if u > t and c.state == "open")
                delays.append(cut.delay)
                waits.append(opened - t)
        assert all(d - 0.02 <= w for d, w in zip(delays, waits, strict=True))
        late = [w - d for d, w in zip(delays, waits, strict=True)]
        assert max(delays) - min(delays) > SPREAD / 2, f"not spread: {sorted(delays)}"
        print(
            f"\n{published} events to {CLIENTS} clients through two drains; "
            f"{len(delays)} reconnects, delays {min(delays):.2f}-{max(delays):.2f} s "
            f"(median {statistics.median(delays):.2f}), reconnected "
            f"{statistics.median(late) * 1000:.0f} ms (median) / {max(late) * 1000:.0f} ms "
            f"(max) after the delay; members out of view: {len(absences)} times, longest "
            f"{longest:.2f} s (grace {GRACE:g} s)"
        )
    finally:
        stop.set()
        for task in followers:
            task.cancel()
        async with asyncio.timeout(10):
            await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
            await asyncio.gather(*followers, return_exceptions=True)
            await balancer.close()
