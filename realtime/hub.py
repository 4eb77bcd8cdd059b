"""The per-process fan-out hub.

Each server process (each event loop) has one ``Hub``. It owns one channel-layer channel and
joins a stream's group once, when the first local connection subscribes, so a publish costs
one channel-layer message per process, not one per connection; the hub then hands the
already-encoded frame to every local subscriber (the design of Socket.IO's Redis adapter).
Exact delivery per subscriber is the job of ``realtime.subscription``.

The hub also keeps the process's side of liveness (``realtime.registry``): its lease, its
connections' records, presence timeouts and the leave grace period, and it sweeps what dead
processes left behind. Its maintenance loop runs the periodic jobs:

* the reconciler compares its streams' positions with the database every
  ``RECONCILE_INTERVAL`` seconds, so even the last event of a burst whose layer message was
  lost arrives within two intervals, and delivery goes on (from the database) while the
  channel layer is down;
* the lease is renewed and expired leases are swept every ``PRESENCE_TIMEOUT / 3`` seconds;
* expired history is pruned every ``PRUNE_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from realtime import alerts, bus, cleanup, gcpauses, presence, registry, revocation, store
from realtime.conf import realtime_settings
from realtime.pacing import WritePacer
from realtime.protocol import (
    presence_change_frame,
    presence_count_frame,
    presence_state_frame,
)
from realtime.stats import stats
from realtime.streams import group_name
from realtime.subscription import Connection, Subscription

logger = logging.getLogger("realtime.hub")

# Re-add group memberships this often, before the channel layer's group_expiry drops them.
GROUP_REFRESH = 600.0
# Longest a hub's close() waits for its tasks, then for removing its lease.
CLOSE_TIMEOUT = 5.0
# Seconds a hub remembers the version of a member that left. Channel layers drop messages
# older than their expiry (60 s by default in channels-redis and the in-memory layer), so a
# message of the member's older than this cannot arrive any more.
DEPARTED_TTL = 90.0
# Connection ids kept for the admin's next connections.changed while publishing it fails
# (the channel layer is down); beyond it the lists are dropped and the page told to reload.
MAX_CHANGES = 1000
# Occupancy of counts-only streams is sent at most this often.
COUNT_INTERVAL = 1.0
# Staff-only streams the admin pages watch (``realtime:*`` is staff-only in RulesPolicy).
ADMIN_STATS_STREAM = "realtime:admin:stats"
ADMIN_CONNECTIONS_STREAM = "realtime:admin:connections"


class StreamState:
    """A hub's local subscribers of one stream, its group membership and presence versions.

    ``presence_versions`` holds the newest version delivered per member key, so an older
    message that arrives late is dropped. A member that left stays in it (and in
    ``departed``, with when to forget it) for ``DEPARTED_TTL`` only: enough to drop its
    late messages, while members who come and go cannot grow it without bound.
    """

    __slots__ = (
        "checked_head",
        "count_task",
        "departed",
        "joined",
        "lock",
        "presence_versions",
        "subs",
    )

    def __init__(self) -> None:
        self.subs: dict[Subscription, None] = {}  # insertion-ordered set
        self.joined = False
        self.lock = asyncio.Lock()
        self.checked_head = 0
        self.presence_versions: dict[str, int] = {}
        self.departed: dict[str, float] = {}  # key -> monotonic time to forget it, in order
        self.count_task: asyncio.Task[None] | None = None

    def saw_presence(self, key: str, version: int, left: bool, now: float) -> bool:
        """Record a presence message's version; False if it is older than one delivered."""
        if version <= self.presence_versions.get(key, 0):
            return False
        self.presence_versions[key] = version
        self.departed.pop(key, None)
        if left:
            self.departed[key] = now + DEPARTED_TTL
        return True

    def forget_departed(self, now: float) -> None:
        for key, until in list(self.departed.items()):
            if until > now:
                break
            del self.departed[key]
            self.presence_versions.pop(key, None)


class Hub:
    """One per event loop: see the module docstring. Get it with ``get_hub()``."""

    def __init__(self) -> None:
        self.layer = get_channel_layer(realtime_settings.CHANNEL_LAYER)
        if self.layer is None:
            raise RuntimeError(
                f"realtime needs a channel layer: CHANNEL_LAYERS has no "
                f"{realtime_settings.CHANNEL_LAYER!r} alias."
            )
        self.id = uuid.uuid4().hex
        self.streams: dict[str, StreamState] = {}
        self.connections: dict[str, Any] = {}
        self.channel: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._dirty: set[str] = set()  # connections whose subscriptions changed
        self._unflushed: dict[Any, None] = {}  # connections with events queued, in order
        self._flush_handle: asyncio.TimerHandle | None = None
        self._pacer = WritePacer(float(realtime_settings.FLUSH_INTERVAL))
        self._opened: list[str] = []  # connections opened and closed since the last stats tick
        self._closed: list[str] = []
        self._changes_lost = False  # more than MAX_CHANGES of them: lists dropped
        self._last_tick: tuple[float, dict[str, Any]] | None = None
        self._started: asyncio.Future[None] | None = None
        now = time.monotonic()
        self._due = {
            "reconcile": now,
            "lease": now,
            "refresh": now + GROUP_REFRESH,
            "reauth": now + self._jitter(float(realtime_settings.REAUTH_INTERVAL)),
            "stats": now + float(realtime_settings.STATS_INTERVAL),
            "prune": now + self._jitter(float(realtime_settings.PRUNE_INTERVAL)),
        }

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                self.channel = await self.layer.new_channel("realtime.hub")
                await registry.aregister_server(self.id, self.channel)
                await self._join_control()
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started.exception()  # retrieved: callers get it from the raise below
                self._started = None
                raise
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._read_layer(), name="realtime-hub-reader"),
                loop.create_task(self._maintain(), name="realtime-hub-maintenance"),
            ]
            self._started.set_result(None)
            if realtime_settings.GC_FREEZE:
                gcpauses.freeze_startup_heap()
            # A process restarted after a crash clears what its predecessor left, at once
            # (in the background: handshakes must not wait for it).
            self.spawn(self._sweep())
        await asyncio.shield(self._started)

    async def _sweep(self) -> None:
        await self._fan_out_all(await registry.asweep())

    async def close(self) -> None:
        """Stop the hub and remove this process's lease with everything under it."""
        for state in self.streams.values():
            for sub in state.subs:
                sub.close()
            if state.count_task is not None:
                state.count_task.cancel()
        for timer in self._timers:
            timer.cancel()  # the lease sweep below removes what they would have
        self._timers.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._unflushed.clear()
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
        self._tasks = []
        self.streams.clear()
        self.connections.clear()
        if self._started is not None:
            # Bounded: with the channel layer gone, the lease's expiry does the same later.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._fan_out_all(await registry.aunregister_server(self.id))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Background task failed.", exc_info=task.exception())

    # --- connections -----------------------------------------------------------------
    async def attach(self, conn: Any, gone: Callable[[], bool] | None = None) -> str | None:
        """Record a new connection (``Connection`` row; the user goes online), unless a
        connection cap refuses it: then the cap ("user" or "ip") is returned; or
        ``registry.GONE`` if ``gone()`` was true when the database work was to begin."""
        await self.start()
        cap = await registry.aadmit(
            registry.Admission(
                conn.id,
                self.id,
                conn.user_id,
                conn.transport,
                conn.remote_addr,
                conn.user_agent,
                gone,
            )
        )
        if cap is None:
            self.connections[conn.id] = conn
            self._changed(self._opened, conn.id)
        return cap

    def _changed(self, ids: list[str], conn_id: str) -> None:
        if len(ids) < MAX_CHANGES:
            ids.append(conn_id)
        else:
            self._changes_lost = True

    def detach(self, conn: Any) -> None:
        """Forget a closed connection after the leave grace period.

        A tab that reconnects within ``PRESENCE_GRACE`` seconds joins again before its old
        connection leaves, so the other members see updates, not a leave and a join.
        """
        if self.connections.pop(conn.id, None) is None:
            return
        self._changed(self._closed, conn.id)
        self._dirty.discard(conn.id)
        args = (conn.id, conn.user_id, bool(conn.presence_meta))
        grace = float(realtime_settings.PRESENCE_GRACE)
        if grace <= 0:
            self.spawn(self._release(*args))
            return
        timer = asyncio.get_running_loop().call_later(
            grace, lambda: (self._timers.discard(timer), self.spawn(self._release(*args)))
        )
        self._timers.add(timer)

    async def _release(self, conn_id: str, user_id: Any, had_presence: bool) -> None:
        if had_presence:
            await self._fan_out_all(await presence.aleave(conn_id))
        await registry.aremove_connection(conn_id, user_id)

    def changed(self, conn: Any) -> None:
        """``conn``'s subscriptions changed: its record is updated with the next lease."""
        self._dirty.add(conn.id)

    # --- subscriptions ---------------------------------------------------------------
    async def subscribe(
        self,
        conn: Connection,
        stream: str,
        *,
        sub_id: Any = None,
        since: int | None = None,
        epoch: str | None = None,
    ) -> Subscription:
        """Subscribe ``conn`` to ``stream``; frames follow through ``conn``.

        The group is joined *before* history is read, so every event committed after the
        read arrives live: nothing falls between replay and live.
        """
        await self.start()
        sub = Subscription(conn, stream, sub_id=sub_id, since=since, epoch=epoch)
        state = self.streams.get(stream)
        if state is None:
            state = self.streams[stream] = StreamState()
        state.subs[sub] = None
        try:
            await self._join(stream, state)
            # Positioned before returning, so a frame the client sends next (a publish, say)
            # is ordered after the subscription; the replay goes on in the background.
            info = await store.aposition(stream)
        except BaseException:
            await self.unsubscribe(sub)
            raise
        if sub.start(info):
            await conn.flush()
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        state = self.streams.get(sub.stream)
        if state is None:
            return
        state.subs.pop(sub, None)
        if state.subs:
            return
        async with state.lock:
            # New subscribers may arrive while we wait: they find this same state (still in
            # the dict) and re-join after us, under the same lock.
            if state.subs:
                return
            if state.joined:
                state.joined = False
                try:
                    async with bus.slot():
                        await self.layer.group_discard(group_name(sub.stream), self.channel)
                except Exception:
                    logger.warning("Leaving the group of %s failed.", sub.stream, exc_info=True)
            if not state.subs and self.streams.get(sub.stream) is state:
                if state.count_task is not None:
                    state.count_task.cancel()
                del self.streams[sub.stream]

    async def _join(self, stream: str, state: StreamState) -> None:
        if state.joined:
            return
        async with state.lock:
            if state.joined:
                return
            try:
                async with bus.slot():
                    await self.layer.group_add(group_name(stream), self.channel)
            except Exception:
                # Served from the database by the reconciler until the layer is back.
                logger.warning("Joining the group of %s failed; will retry.", stream, exc_info=True)
                return
            state.joined = True

    # --- presence --------------------------------------------------------------------
    async def join_presence(self, sub: Subscription, key: str, user_id: Any, meta: Any) -> str:
        """Join (or update) ``sub``'s connection in the stream's presence; returns its ref.

        The joining connection gets ``presence.state`` (or ``presence.count``) before any
        presence frame that follows the snapshot.
        """
        stream = sub.stream
        first = sub.presence_buffer is None and stream not in sub.conn.presence_meta
        if first:
            sub.presence_buffer = []
        try:
            message, ref = await presence.ajoin(stream, key, user_id, sub.conn.id, self.id, meta)
            sub.conn.presence_meta[stream] = meta
            sub.presence_ref = ref
            await self._fan_out_all([message])
            if first:
                if presence.counts_only(stream):
                    counts = await presence.acounts(stream)
                    sub.conn.presence(sub, "count", presence_count_frame(stream, **counts))
                else:
                    members, versions = await presence.asnapshot(stream)
                    # Not merged into the process-wide versions: only this subscriber got
                    # the snapshot, and the others still need the messages it holds (this
                    # join's own among them, which may reach the layer reader after this).
                    sub.conn.presence(sub, "state", presence_state_frame(stream, ref, members))
                    for buffered in sub.presence_buffer or []:
                        if buffered["version"] > versions.get(buffered["key"], 0):
                            sub.conn.presence(sub, buffered["kind"], presence_frame(buffered))
                    sub.presence_seen = dict(versions)
        finally:
            if first:
                sub.presence_buffer = None
        await sub.conn.flush()
        return ref

    async def leave_presence(self, conn: Any, streams: list[str] | None = None) -> None:
        """Leave presence now (no grace): on ``streams``, or on every stream."""
        names = list(conn.presence_meta) if streams is None else streams
        if not names:
            return
        for name in names:
            conn.presence_meta.pop(name, None)
        await self._fan_out_all(await presence.aleave(conn.id, names))

    async def resync_presence(self) -> None:
        """Send a fresh ``presence.state`` to every local member (after a layer outage)."""
        for stream, state in list(self.streams.items()):
            members = [s for s in state.subs if stream in s.conn.presence_meta and s.sees_presence]
            if not members:
                continue
            if presence.counts_only(stream):
                self._schedule_count(stream, state)
                continue
            try:
                snapshot, versions = await presence.asnapshot(stream)
            except Exception:
                logger.warning("Presence resync of %s failed.", stream, exc_info=True)
                continue
            self._merge_versions(stream, versions)
            for sub in members:
                frame = presence_state_frame(stream, sub.presence_ref, snapshot)
                sub.conn.presence(sub, "state", frame)
                await sub.conn.flush()

    def _merge_versions(self, stream: str, versions: dict[str, int]) -> None:
        state = self.streams.get(stream)
        if state is not None:
            now = time.monotonic()
            for key, version in versions.items():
                state.saw_presence(key, version, False, now)

    async def _fan_out_all(self, messages: list[dict[str, Any]]) -> None:
        from realtime.publishing import fan_out

        if not messages:
            return
        try:
            await fan_out(*messages)
        except Exception:
            logger.warning(
                "Presence fan-out on %s (and %s more) failed.",
                messages[0]["stream"],
                len(messages) - 1,
                exc_info=True,
            )

    # --- receiving -------------------------------------------------------------------
    async def _read_layer(self) -> None:
        assert self.channel is not None
        delay = 0.1
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Channel layer receive failed; retrying.", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                await self._rejoin_all()
                self.spawn(self.resync_presence())  # presence messages may have been lost
                continue
            delay = 0.1
            try:
                await self.dispatch(message)
            except Exception:
                logger.exception("Dispatching a %s message failed.", message.get("type"))

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Hand one layer message to the local subscribers (or connection) it is for."""
        kind = message.get("type")
        if kind == "realtime.batch":  # several messages for this process (realtime.bus)
            for inner in bus.unbatch(message):
                try:
                    await self.dispatch(inner)
                except Exception:
                    logger.exception("Dispatching a %s message failed.", inner.get("type"))
            return
        if kind == "realtime.touch":
            conn = self.connections.get(message.get("connection", ""))
            if conn is not None:
                conn.touch()
                if isinstance(message.get("received"), int):
                    conn.acknowledge(message["received"])
            return
        if kind == "realtime.revoke":
            for conn in list(self.connections.values()):
                if conn.revoked_by(message):
                    self.spawn(conn.revoke(message["reason"], streams=message.get("streams")))
            return
        if kind == "realtime.stats.request":
            reply = {"type": "realtime.stats.reply", **self.describe()}
            self.spawn(self.layer.send(message["reply_to"], reply))
            return
        state = self.streams.get(message.get("stream", ""))
        if state is None:
            return
        if kind == "realtime.event":
            self._offer(state, message, message.get("t"))
            self._schedule_flush()
        elif kind == "realtime.events":  # publish_many: several events of the stream, in order
            for event in message["events"]:
                self._offer(state, event, message.get("t"))
            self._schedule_flush()
        elif kind == "realtime.presence":
            if not state.saw_presence(
                message["key"], message["version"], message["kind"] == "leave", time.monotonic()
            ):
                return  # older than what this process already delivered
            if presence.counts_only(message["stream"]):
                self._schedule_count(message["stream"], state)
                return
            frame = presence_frame(message)
            dirty = [sub.conn for sub in list(state.subs) if sub.offer_presence(message, frame)]
            for conn in dirty:
                await conn.flush()
        elif kind == "realtime.reset":
            for sub in list(state.subs):
                sub.start_sync()

    def _offer(self, state: StreamState, message: dict[str, Any], sent: float | None) -> None:
        stats.received += 1
        if sent is not None:
            stats.observe_latency(max(0.0, time.time() - sent))
        unflushed = self._unflushed
        for sub in list(state.subs):
            if sub.offer(message):
                unflushed[sub.conn] = None

    def _schedule_flush(self) -> None:
        """Write what ``dispatch`` queued: at once when idle, else when the pacer says.

        Events that arrive while a pass is due are queued behind it and leave in the same
        write (one ``batch`` frame, or one SSE chunk), so at high rates a process makes a
        write per connection per pass instead of one per event (``realtime.pacing``).
        """
        if self._flush_handle is not None or not self._unflushed:
            return
        loop = asyncio.get_running_loop()
        self._flush_handle = loop.call_later(self._pacer.delay(loop.time()), self._flush_due)

    def _flush_due(self) -> None:
        self._flush_handle = None
        self._pacer.started(asyncio.get_running_loop().time())
        conns, self._unflushed = self._unflushed, {}
        self.spawn(self._flush(conns))

    async def _flush(self, conns: dict[Any, None]) -> None:
        began = time.perf_counter()
        for conn in conns:
            await conn.flush()
        self._pacer.finished(time.perf_counter() - began)

    def _schedule_count(self, stream: str, state: StreamState) -> None:
        if state.count_task is None or state.count_task.done():
            state.count_task = asyncio.get_running_loop().create_task(
                self._send_count(stream, state)
            )

    async def _send_count(self, stream: str, state: StreamState) -> None:
        await asyncio.sleep(COUNT_INTERVAL)
        try:
            counts = await presence.acounts(stream)
        except Exception:
            logger.warning("Counting presence on %s failed.", stream, exc_info=True)
            return
        text = presence_count_frame(stream, **counts)
        conns = {sub.conn: sub for sub in state.subs if sub.sees_presence}
        for conn, sub in conns.items():
            conn.presence(sub, "count", text)
            await conn.flush()

    # --- maintenance -----------------------------------------------------------------
    async def _maintain(self) -> None:
        while True:
            tick = min(
                float(realtime_settings.RECONCILE_INTERVAL),
                float(realtime_settings.STATS_INTERVAL),
                registry.lease_interval(),
            )
            await asyncio.sleep(max(0.05, tick))
            try:
                await self.maintain()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Hub maintenance failed; retrying next interval.")

    async def maintain(self) -> None:
        """Run whichever periodic jobs are due."""
        now = time.monotonic()
        due = self._due
        if now >= due["reconcile"]:
            due["reconcile"] = now + float(realtime_settings.RECONCILE_INTERVAL)
            await self.reconcile()
        await self._expire_presence(now)
        for state in self.streams.values():
            state.forget_departed(now)
        if now >= due["lease"]:
            due["lease"] = now + self._jitter(registry.lease_interval())
            changed = {
                cid: sorted(self.connections[cid].subscriptions)
                for cid in self._dirty
                if cid in self.connections
            }
            self._dirty.clear()
            if not await registry.arenew_server(self.id, changed):
                await self._recover_lease()
            await self._sweep()
        if now >= due["stats"]:
            due["stats"] = now + float(realtime_settings.STATS_INTERVAL)
            await self.report()
        if now >= due["reauth"]:
            due["reauth"] = now + self._jitter(float(realtime_settings.REAUTH_INTERVAL))
            await self.reauthenticate()
        if now >= due["refresh"]:
            due["refresh"] = now + GROUP_REFRESH
            await self._rejoin_all()
        if now >= due["prune"]:
            due["prune"] = now + self._jitter(float(realtime_settings.PRUNE_INTERVAL))
            pruned = await cleanup.aprune(list(self.streams))
            if any(pruned.values()):
                logger.info(
                    "Retention deleted %s.", ", ".join(f"{n} {k}" for k, n in pruned.items())
                )

    def describe(self) -> dict[str, Any]:
        """This process: identity, counters, rates since the last tick, active alerts."""
        return {
            "server": self.id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "stats": stats.snapshot(),
            "rates": self._rates(),
            "alerts": alerts.active(),
        }

    def _rates(self) -> dict[str, float]:
        if self._last_tick is None:
            return {}
        then, before = self._last_tick
        elapsed = max(time.monotonic() - then, 1e-6)
        now = stats.snapshot()
        return {
            f"{name}_per_second": (now[name] - before[name]) / elapsed  # type: ignore[operator]
            for name in ("published", "received", "deliveries", "replayed", "slow_consumer_drops")
        }

    async def report(self) -> None:
        """Every STATS_INTERVAL: check alert thresholds, tell the admin pages (staff streams)."""
        from realtime.publishing import apublish

        described = self.describe()
        self._last_tick = (time.monotonic(), stats.snapshot())
        # Alert receivers may use the ORM or block: not on the event loop.
        await sync_to_async(alerts.evaluate, thread_sensitive=False)(self.id, described)
        described["alerts"] = alerts.active()
        try:
            await apublish(ADMIN_STATS_STREAM, "server.stats", described, ephemeral=True)
            if self._opened or self._closed or self._changes_lost:
                change: dict[str, Any] = {
                    "server": self.id,
                    "opened": self._opened,
                    "closed": self._closed,
                }
                if self._changes_lost:
                    change.update(opened=[], closed=[], reload=True)
                self._opened, self._closed, self._changes_lost = [], [], False
                await apublish(
                    ADMIN_CONNECTIONS_STREAM, "connections.changed", change, ephemeral=True
                )
        except Exception:
            logger.debug("Publishing stats failed.", exc_info=True)

    @staticmethod
    def _jitter(seconds: float) -> float:
        # So the processes of a deployment do not all renew or sweep at once.
        return seconds * random.uniform(0.75, 1.0)

    async def reauthenticate(self) -> None:
        """Close local connections whose session, user or token is no longer valid."""
        checked = [
            {
                "id": conn.id,
                "user": conn.user_id,
                "session": conn.auth.get("session"),
                "token": conn.auth.get("token"),
            }
            for conn in list(self.connections.values())
            if conn.user_id is not None
        ]
        if not checked:
            return
        for conn_id in await revocation.arecheck(checked):
            conn = self.connections.get(conn_id)
            if conn is not None:
                logger.info("Connection %s: credentials no longer valid; closing.", conn_id)
                self.spawn(conn.revoke("Credentials no longer valid."))

    async def _expire_presence(self, now: float) -> None:
        """Members whose connection went silent for PRESENCE_TIMEOUT leave."""
        timeout = float(realtime_settings.PRESENCE_TIMEOUT)
        for conn in list(self.connections.values()):
            if conn.presence_meta and now - conn.last_seen > timeout:
                logger.info("Connection %s missed its presence heartbeats.", conn.id)
                await self.leave_presence(conn)

    async def _recover_lease(self) -> None:
        """Our lease was swept while this process stalled: record everything again."""
        logger.warning("This process's lease had expired and was swept; re-registering.")
        assert self.channel is not None
        await registry.aregister_server(self.id, self.channel)
        for conn in list(self.connections.values()):
            await registry.aadd_connection(
                conn.id, self.id, conn.user_id, conn.transport, conn.remote_addr, conn.user_agent
            )  # re-recorded as it was: no caps
            for stream, meta in list(conn.presence_meta.items()):
                message, _ = await presence.ajoin(
                    stream, conn.presence_key, conn.user_id, conn.id, self.id, meta
                )
                await self._fan_out_all([message])

    async def reconcile(self) -> None:
        """Catch up every subscription that is behind the database by more than one round."""
        for stream, state in list(self.streams.items()):
            if not state.joined:
                await self._join(stream, state)
        heads = await store.aheads(list(self.streams))
        for stream, state in list(self.streams.items()):
            info = heads.get(stream)
            if info is None:
                continue
            for sub in list(state.subs):
                if sub.syncing:
                    continue
                if sub.epoch != info.epoch or sub.position < state.checked_head:
                    sub.start_sync()
            state.checked_head = info.last_seq

    async def _join_control(self) -> None:
        try:
            await self.layer.group_add(revocation.CONTROL_GROUP, self.channel)
        except Exception:
            logger.warning("Joining the control group failed; will retry.", exc_info=True)

    async def _rejoin_all(self) -> None:
        await self._join_control()
        for stream, state in list(self.streams.items()):
            state.joined = False
            await self._join(stream, state)


def presence_frame(message: dict[str, Any]) -> str:
    """The client frame of a presence layer message."""
    return presence_change_frame(
        message["kind"], message["stream"], message["key"], message.get("metas")
    )


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
