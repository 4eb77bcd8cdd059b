"""The per-process hub: group membership, dispatch of layer messages, coalesced writes.

Each server process (each event loop) has one ``Hub``. It owns one backplane channel and
joins a stream's group once, when the first local connection subscribes, so a publish costs
one channel-layer message per process, not one per connection; the hub then hands the
already-encoded frame to every local subscriber (the design of Socket.IO's Redis adapter).
Exact delivery per subscriber is the job of ``realtime.core.subscription``.

The rest it delegates: presence to ``presence_tracking``, the lease and the leave grace to
``liveness``, figures to ``reporting``, and its periodic jobs (reconcile, re-authenticate,
prune...) to ``maintenance``, which ``jobs`` runs, each on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from realtime.bus import (
    CONTROL_GROUP,
    HUB_CHANNEL_PREFIX,
    BackplaneInterrupted,
    backplane,
    fan_out,
    group_name,
)
from realtime.bus import messages as m
from realtime.bus.pacing import WritePacer
from realtime.conf import realtime_settings
from realtime.core import gcpauses, maintenance, wakeups
from realtime.core.jobs import Jobs
from realtime.core.liveness import Liveness
from realtime.core.presence_tracking import PresenceTracker
from realtime.core.reporting import Reporter
from realtime.core.state import HubConnection, StreamState
from realtime.core.stats import stats
from realtime.core.subscription import Connection, Subscription
from realtime.storage import registry, store

logger = logging.getLogger("realtime.hub")

# Longest a hub's close() waits for its tasks, then for removing its lease.
CLOSE_TIMEOUT = 5.0
# How often close() cancels again the tasks that are still running (see cancel_and_wait).
RECANCEL_EVERY = 0.05
# What ``attach`` returns while the hub drains: the connection is refused.
DRAINING = "draining"


class Hub:
    """One per event loop: see the module docstring. Get it with ``get_hub()``."""

    def __init__(self) -> None:
        self.backplane = backplane()
        self.id = uuid.uuid4().hex
        self.streams: dict[str, StreamState] = {}
        self.connections: dict[str, HubConnection] = {}
        self.channel: str | None = None
        self.presence = PresenceTracker(self)
        self.liveness = Liveness(self)
        self.reporter = Reporter(self)
        self.jobs = Jobs(maintenance.jobs(self))
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._unflushed: dict[Connection, None] = {}  # connections with events queued
        self._flush_handle: asyncio.TimerHandle | None = None
        self._pacer = WritePacer(realtime_settings.FLUSH_INTERVAL)
        self._started: asyncio.Future[None] | None = None
        self.draining = False
        self._emptied: asyncio.Event | None = None  # set when the last connection detaches
        self._handlers: dict[str, Callable[[Any], Awaitable[None]]] = {
            m.BATCH: self._on_batch,
            m.EVENT: self._on_event,
            m.EVENTS: self._on_events,
            m.PRESENCE: self._on_presence,
            m.RESET: self._on_reset,
            m.TOUCH: self._on_touch,
            m.REVOKE: self._on_revoke,
            m.STATS_REQUEST: self._on_stats_request,
        }

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                self.channel = await self.backplane.new_channel(HUB_CHANNEL_PREFIX)
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
                loop.create_task(wakeups.run(self), name="realtime-hub-wakeups"),
            ]
            self._started.set_result(None)
            if realtime_settings.GC_FREEZE:
                gcpauses.freeze_startup_heap()
            # A process restarted after a crash clears what its predecessor left, at once
            # (in the background: handshakes must not wait for it).
            self.spawn(self.liveness.sweep())
        await asyncio.shield(self._started)

    async def close(self, within: float = CLOSE_TIMEOUT) -> None:
        """Stop the hub and remove this process's lease with everything under it; each of
        the two waits (for its tasks, for the lease's removal) lasts at most ``within`` seconds."""
        for state in self.streams.values():
            for sub in state.subs:
                sub.close()
            state.close_presence()
        self.liveness.close()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._unflushed.clear()
        await cancel_and_wait([*self._tasks, *self._background], within)
        self._tasks = []
        self.streams.clear()
        self.connections.clear()
        if self._started is not None:
            await self._unregister(within)
            if self.channel is not None:
                with contextlib.suppress(Exception):
                    await self.backplane.close_channel(self.channel)

    async def _unregister(self, within: float, hold: float = 0.0) -> None:
        """Remove the lease and what hangs off it now, and send the presence leaves, which
        the other processes hold for ``hold`` seconds (a drain: the members come back).

        Bounded: with the database or the channel layer gone, the lease's expiry does the
        same later (another process's sweep).
        """
        try:
            async with asyncio.timeout(max(within, 0.001)):
                messages = await registry.aunregister_server(self.id)
                await self.fan_out_all([m.held(message, hold) for message in messages])
        except Exception:
            logger.warning("Removing this process's lease failed; it will expire.", exc_info=True)

    async def drain(self, within: float | None = None, spread: float | None = None) -> None:
        """Shut down gracefully, in at most ``within`` seconds (``DRAIN_TIMEOUT``).

        New connections are refused (``attach`` returns ``DRAINING``); every connection is
        told to reconnect elsewhere after its own delay, drawn uniformly from
        ``[0, spread]`` (``DRAIN_SPREAD``) so that they do not all come back at once; the
        lease, connection records and presence go at once, their leaves sent to the other
        processes; then the hub waits for its connections to end and closes. Call it once,
        from the process's shutdown (``realtime.serve`` does on SIGTERM); the process should
        exit after it.
        """
        bound = realtime_settings.DRAIN_TIMEOUT if within is None else within
        spread = realtime_settings.DRAIN_SPREAD if spread is None else spread
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        self.draining = True
        started = self._started
        if started is None:
            return  # never started: no lease, no connections
        if not started.done():
            # Starting for a first connection: its lease is being written; wait, then remove it.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(max(deadline - loop.time(), 0.001)):
                    await asyncio.shield(started)
        if self._started is not started or not started.done():
            return  # the start failed (no lease), or outlasted the bound (the lease expires)
        # No renewal may follow the lease's removal: it would register the process again.
        for task in self._tasks:
            task.cancel()
        self.liveness.close()
        conns = list(self.connections.values())
        logger.info("Draining %d connections (within %g s).", len(conns), bound)
        told = [loop.create_task(conn.drain(random.uniform(0, spread))) for conn in conns]
        if told:
            await asyncio.wait(told, timeout=max(deadline - loop.time(), 0.001))
            for task in told:
                if not task.done():
                    task.cancel()  # a write that hangs: the connection is cut below
                elif not task.cancelled() and task.exception() is not None:
                    logger.warning("Telling a connection to go failed.", exc_info=task.exception())
        # Its members reconnect within the spread (at once if the server closed them): the
        # other processes hold their leaves that long and the grace more, so that members
        # who come back do not flicker out of everyone's view.
        hold = (spread if told else 0.0) + realtime_settings.PRESENCE_GRACE
        await self._unregister(deadline - loop.time(), hold)
        if self.connections:
            self._emptied = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(deadline - loop.time(), 0.001)):
                    await self._emptied.wait()
        if self.connections:
            logger.warning("%d connections were still open after draining.", len(self.connections))
        await self.close(deadline - loop.time())

    def _channel(self) -> str:
        assert self.channel is not None, "the hub has not started"
        return self.channel

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Background task failed.", exc_info=task.exception())

    async def fan_out_all(self, messages: list[m.PresenceMessage]) -> None:
        """Send presence messages (joins, leaves, a sweep's); a failure is logged."""
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

    # --- connections -----------------------------------------------------------------
    async def attach(
        self, conn: HubConnection, gone: Callable[[], bool] | None = None
    ) -> str | None:
        """Record a new connection (``Connection`` row; the user goes online), unless a
        connection cap refuses it: then the cap ("user" or "ip") is returned; or
        ``registry.GONE`` if ``gone()`` was true when the database work was to begin; or
        ``DRAINING`` while the hub drains."""
        if self.draining:
            return DRAINING
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
        if cap is None and self.draining:
            # Admitted while the drain began: not told to go, so not kept either.
            with contextlib.suppress(Exception):
                await registry.aremove_connection(conn.id, conn.user_id)
            return DRAINING
        if cap is None:
            self.connections[conn.id] = conn
            self.reporter.connection_opened(conn.id)
        return cap

    def detach(self, conn: HubConnection) -> None:
        """Forget a closed connection; it is released after the leave grace period."""
        if self.connections.pop(conn.id, None) is None:
            return
        self.reporter.connection_closed(conn.id)
        if self.draining:
            # The lease's removal takes the record and presence with it, without a grace.
            if not self.connections and self._emptied is not None:
                self._emptied.set()
            return
        self.liveness.detached(conn)

    def changed(self, conn: HubConnection) -> None:
        """``conn``'s subscriptions changed: its record is updated with the next lease."""
        self.liveness.changed(conn.id)

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
            await self.join_group(stream, state)
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
                    await self.backplane.group_discard(group_name(sub.stream), self._channel())
                except Exception:
                    logger.warning("Leaving the group of %s failed.", sub.stream, exc_info=True)
            if not state.subs and self.streams.get(sub.stream) is state:
                state.close_presence()
                del self.streams[sub.stream]

    async def join_group(self, stream: str, state: StreamState) -> None:
        """Join the stream's group for this process, once (retried by the reconciler)."""
        if state.joined:
            return
        async with state.lock:
            if state.joined:
                return
            try:
                await self.backplane.group_add(group_name(stream), self._channel())
            except Exception:
                # Served from the database by the reconciler until the layer is back.
                logger.warning("Joining the group of %s failed; will retry.", stream, exc_info=True)
                return
            state.joined = True

    async def _join_control(self) -> None:
        try:
            await self.backplane.group_add(CONTROL_GROUP, self._channel())
        except Exception:
            logger.warning("Joining the control group failed; will retry.", exc_info=True)

    async def rejoin_all(self) -> None:
        await self._join_control()
        for stream, state in list(self.streams.items()):
            state.joined = False
            await self.join_group(stream, state)

    # --- receiving -------------------------------------------------------------------
    async def _read_layer(self) -> None:
        assert self.channel is not None
        delay = 0.1
        while True:
            try:
                message = await self.backplane.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except BackplaneInterrupted as exc:
                # Reconnected by the client library itself (its outage was logged there).
                logger.info("The backplane is back (%s); joining the groups again.", exc)
                await self.rejoin_all()
                self.spawn(self.presence.resync())  # presence messages may have been lost
                continue
            except Exception:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None  # an error the cancellation caused
                logger.warning("Backplane receive failed; retrying.", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                await self.rejoin_all()
                self.spawn(self.presence.resync())  # presence messages may have been lost
                continue
            delay = 0.1
            await self.dispatch(message)

    async def dispatch(self, raw: object) -> None:
        """Hand one layer message to its handler; malformed or unknown ones are logged."""
        message = m.parse(raw)
        if message is None:
            return
        handler = self._handlers.get(message["type"])
        if handler is None:
            logger.warning("Dropped a %s message: hubs do not take it.", message["type"])
            return
        try:
            await handler(message)
        except Exception:
            logger.exception("Dispatching a %s message failed.", message["type"])

    async def _on_batch(self, message: m.BatchMessage) -> None:
        for inner in message["messages"]:
            await self.dispatch(inner)

    async def _on_event(self, message: m.EventMessage) -> None:
        state = self.streams.get(message["stream"])
        if state is not None:
            self._offer(state, message, message.get("t"))
            self._schedule_flush()

    async def _on_events(self, message: m.EventsMessage) -> None:
        state = self.streams.get(message["stream"])
        if state is not None:
            for event in message["events"]:
                self._offer(state, event, message.get("t"))
            self._schedule_flush()

    async def _on_presence(self, message: m.PresenceMessage) -> None:
        state = self.streams.get(message["stream"])
        if state is not None:
            await self.presence.deliver(state, message)

    async def _on_reset(self, message: m.ResetMessage) -> None:
        state = self.streams.get(message["stream"])
        for sub in list(state.subs) if state is not None else []:
            sub.start_sync()

    async def _on_touch(self, message: m.TouchMessage) -> None:
        conn = self.connections.get(message["connection"])
        if conn is not None:
            conn.touch()
            if message["received"] is not None:
                conn.acknowledge(message["received"])

    async def _on_revoke(self, message: m.RevokeMessage) -> None:
        for conn in list(self.connections.values()):
            if conn.revoked_by(message):
                self.spawn(conn.revoke(message["reason"], streams=message["streams"]))

    async def _on_stats_request(self, message: m.StatsRequestMessage) -> None:
        reply = m.stats_reply(self.reporter.describe())
        self.spawn(self.backplane.send(message["reply_to"], reply))

    def _offer(self, state: StreamState, message: m.EventMessage, sent: float | None) -> None:
        stats.received += 1
        if sent is not None:
            lag = time.time() - sent
            stats.observe_latency(max(0.0, lag))
            self._pacer.arrived(lag)
        unflushed = self._unflushed
        for sub in list(state.subs):
            if sub.offer(message):
                unflushed[sub.conn] = None

    # --- coalesced writes ------------------------------------------------------------
    def _schedule_flush(self) -> None:
        """Write what ``dispatch`` queued: at once when idle, else when the pacer says.

        Events that arrive while a pass is due are queued behind it and leave in the same
        write (one ``batch`` frame, or one SSE chunk), so at high rates a process makes a
        write per connection per pass instead of one per event (``realtime.bus.pacing``).
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

    async def _flush(self, conns: dict[Connection, None]) -> None:
        began = time.perf_counter()
        for conn in conns:
            await conn.flush()
        self._pacer.finished(time.perf_counter() - began)

    # --- periodic jobs (realtime.core.maintenance) -----------------------------------
    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.jobs.tick())
            await self.jobs.run_due()


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], within: float) -> None:
    """Cancel ``tasks`` and wait at most ``within`` seconds for them to end, cancelling again
    those still running every ``RECANCEL_EVERY`` seconds.

    Once is not enough on Python 3.11: ``asyncio.wait_for`` (which redis-py awaits around
    every write) swallows a cancellation that arrives as its inner future completes
    (python/cpython#86296, fixed in 3.12), and the hub's reader then goes back to waiting on
    Redis for good.
    """
    deadline = asyncio.get_running_loop().time() + max(within, 0.001)
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            logger.warning("%d hub task(s) did not end when cancelled.", len(pending))
            return
        _, pending = await asyncio.wait(pending, timeout=min(left, RECANCEL_EVERY))


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def current_hub() -> Hub | None:
    """The hub of the running event loop if it has one; never creates one."""
    return _hubs.get(asyncio.get_running_loop())


def get_hub() -> Hub:
    """The hub of the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


async def close_hub() -> None:
    """Close the running event loop's hub, if it has one, and forget it: the next connection
    on this loop starts a new one (``realtime.testing``'s clients, between tests)."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.close()
