"""The per-process hub over real Redis: exact delivery through gaps, races, losses, resets.

The connection here is a recording implementation of ``realtime.core.subscription.Connection`` (the
interface WebSocket and SSE implement); everything behind it — Redis, the database, the
reconciler — is real. Lost channel-layer messages are produced the way they happen in
production: an event committed without its fan-out (a process dying between the two).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError, transaction

import realtime
from realtime.bus.groups import group_name
from realtime.core.hub import get_hub
from realtime.core.publishing import _message, fan_out
from realtime.models import Connection as ConnectionRow
from realtime.storage import registry, store

pytestmark = pytest.mark.django_db(transaction=True)


class Recorder:
    def __init__(self) -> None:
        self.id = "recorder"
        self.frames: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def deliver(self, sub: Any, event: str, frame: str) -> None:
        self.frames.append(json.loads(frame))

    def subscribed(self, sub: Any, frame: Any) -> None:
        self.frames.append(dict(frame))

    def presence(self, sub: Any, kind: str, frame: str) -> None:
        self.frames.append(json.loads(frame))

    def snapshot(self, sub: Any, frame: str) -> None:
        self.frames.append(json.loads(frame))

    async def flush(self) -> None:
        self._changed.set()

    def has_room(self) -> bool:
        return True

    async def wait_for_room(self) -> None:
        raise AssertionError("a recorder always has room")

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] == "event"]

    def subscribed_frames(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "subscribed"]

    async def wait_for_seq(self, seq: int, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not self.seqs() or self.seqs()[-1] < seq:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def hub(settings):
    settings.REALTIME = {"RECONCILE_INTERVAL": 0.3}
    hub = get_hub()
    yield hub
    await hub.close()


@database_sync_to_async
def store_silently(stream: str, count: int) -> list[dict[str, Any]]:
    """Commit events without fanning them out; return the messages that were not sent."""
    messages = []
    for n in range(count):
        with transaction.atomic():
            event = store.append(stream, "silent", {"n": n})
            messages.append(_message(event, json.dumps({"n": n})))
    return messages


async def test_live_subscription_gets_events_in_order(hub):
    rec = Recorder()
    await hub.subscribe(rec, "s", sub_id="a")
    for n in range(5):
        await realtime.apublish("s", "e", n)
    await rec.wait_for_seq(5)
    first = rec.frames[0]
    assert first["type"] == "subscribed" and first["id"] == "a" and first["seq"] == 0
    assert first["recovered"] is True
    assert rec.seqs() == [1, 2, 3, 4, 5]
    assert [f["data"] for f in rec.frames[1:]] == [0, 1, 2, 3, 4]


async def test_resume_replays_then_goes_live(hub):
    for n in range(10):
        await realtime.apublish("s", "e", n)
    info = await store.astream_info("s")
    rec = Recorder()
    await hub.subscribe(rec, "s", since=4, epoch=info.epoch)
    await rec.wait_for_seq(10)
    await realtime.apublish("s", "e", 10)
    await rec.wait_for_seq(11)
    assert rec.frames[0]["recovered"] is True and rec.frames[0]["seq"] == 10
    assert rec.seqs() == list(range(5, 12))


async def test_replay_pages_through_long_history(hub, settings):
    settings.REALTIME = {"RECONCILE_INTERVAL": 0.3, "REPLAY_BATCH_SIZE": 7}
    for n in range(30):
        await realtime.apublish("s", "e", n)
    rec = Recorder()
    await hub.subscribe(rec, "s", since=0)
    await rec.wait_for_seq(30)
    assert rec.seqs() == list(range(1, 31))


async def test_lost_messages_are_repaired_by_the_next_event(hub):
    rec = Recorder()
    await hub.subscribe(rec, "s")
    await realtime.apublish("s", "e", "first")
    await rec.wait_for_seq(1)
    await store_silently("s", 3)  # seqs 2..4 never reach the layer
    await realtime.apublish("s", "e", "fifth")
    await rec.wait_for_seq(5)
    assert rec.seqs() == [1, 2, 3, 4, 5]


async def test_out_of_order_and_duplicate_fan_out_delivers_once_in_order(hub):
    rec = Recorder()
    await hub.subscribe(rec, "s")
    messages = await store_silently("s", 3)
    for message in (messages[2], messages[0], messages[1], messages[0], messages[2]):
        await fan_out(message)
    await rec.wait_for_seq(3)
    await asyncio.sleep(0.3)
    assert rec.seqs() == [1, 2, 3]


async def test_reconciler_delivers_a_lost_last_event(hub):
    rec = Recorder()
    await hub.subscribe(rec, "s")
    await realtime.apublish("s", "e")
    await rec.wait_for_seq(1)
    await store_silently("s", 2)  # the end of a burst: no later event will reveal the gap
    await rec.wait_for_seq(3, timeout=3)  # two reconcile intervals are 0.6 s
    assert rec.seqs() == [1, 2, 3]


async def test_reset_resubscribes_with_recovered_false(hub):
    rec = Recorder()
    await hub.subscribe(rec, "s")
    await realtime.apublish("s", "e")
    await rec.wait_for_seq(1)
    info = await realtime.areset("s")
    await realtime.apublish("s", "e", "after reset")
    async with asyncio.timeout(5):
        while len(rec.subscribed_frames()) < 2 or rec.seqs()[-1] != 1 or len(rec.seqs()) < 2:
            await asyncio.sleep(0.05)
    again = rec.subscribed_frames()[1]
    assert again["recovered"] is False and again["epoch"] == info.epoch
    assert rec.seqs() == [1, 1]
    assert rec.frames[-1]["data"] == "after reset"


@pytest.mark.parametrize(
    ("since", "epoch", "recovered", "replayed"),
    [
        (2, "current", True, [3, 4, 5]),
        (3, "current", True, [4, 5]),
        (5, "current", True, []),
        (3, None, True, [4, 5]),  # no epoch given: taken as current
        (1, "current", False, [3, 4, 5]),  # seq 2 was trimmed
        (0, None, False, [3, 4, 5]),
        (9, "current", False, [3, 4, 5]),  # ahead of the stream: start over
        (3, "stale", False, [3, 4, 5]),
    ],
)
async def test_resume_outcomes(hub, settings, since, epoch, recovered, replayed):
    settings.REALTIME = {"RECONCILE_INTERVAL": 0.3, "RETENTION": {"*": {"max_events": 3}}}
    for n in range(5):
        await realtime.apublish("s", "e", n)
    info = await store.astream_info("s")
    rec = Recorder()
    wanted = info.epoch if epoch == "current" else epoch
    await hub.subscribe(rec, "s", since=since, epoch=wanted)
    if replayed:
        await rec.wait_for_seq(5)
    await asyncio.sleep(0.2)
    assert rec.frames[0]["recovered"] is recovered
    assert rec.seqs() == replayed


async def test_one_group_membership_per_process(hub):
    recs = [Recorder() for _ in range(3)]
    subs = [await hub.subscribe(rec, "shared") for rec in recs]
    layer = hub.backplane.layer
    key = layer._group_key(group_name("shared"))
    async with layer.connection(layer.consistent_hash(group_name("shared"))) as conn:
        assert await conn.zcard(key) == 1
    await realtime.apublish("shared", "e")
    for rec in recs:
        await rec.wait_for_seq(1)
    for sub in subs:
        await hub.unsubscribe(sub)
    async with layer.connection(layer.consistent_hash(group_name("shared"))) as conn:
        assert await conn.zcard(key) == 0
    assert "shared" not in hub.streams


async def test_ephemeral_reaches_live_subscribers_only(hub):
    rec = Recorder()
    await hub.subscribe(rec, "c")
    await asyncio.sleep(0.2)
    await realtime.apublish("c", "cursor.moved", {"x": 3}, ephemeral=True)
    async with asyncio.timeout(3):
        while not any(f["type"] == "event" for f in rec.frames):
            await asyncio.sleep(0.02)
    event = rec.frames[-1]
    assert event["event"] == "cursor.moved" and "seq" not in event


async def test_the_hub_sweeps_expired_history(hub, settings):
    settings.REALTIME = {
        "RECONCILE_INTERVAL": 0.1,
        "PRUNE_INTERVAL": 0.2,
        "RETENTION": {"*": {"max_age": 0.5}},
    }
    hub.jobs.make_due("prune")  # the settings changed after the hub was made
    rec = Recorder()
    await hub.subscribe(rec, "old")  # the sweep runs in a hub that is started
    await realtime.apublish("old", "e")
    await realtime.apublish("old", "e")
    async with asyncio.timeout(5):
        while (await store.astream_info("old")).trimmed_seq < 2:
            await asyncio.sleep(0.1)
    rows, info = await store.aread("old", 0, 10)
    assert rows == [] and info.last_seq == 2


async def test_unrecoverable_subscription_gets_a_snapshot(hub, settings):
    from realtime.core import snapshots

    settings.REALTIME = {"RECONCILE_INTERVAL": 0.3, "RETENTION": {"*": {"max_events": 2}}}
    snapshots.register("snap:*", lambda stream, user: {"stream": stream, "user": user})
    try:
        for n in range(5):
            await realtime.apublish("snap:1", "e", n)
        rec = Recorder()
        await hub.subscribe(rec, "snap:1", since=1)
        async with asyncio.timeout(5):
            while not any(f["type"] == "snapshot" for f in rec.frames):
                await asyncio.sleep(0.02)
        await realtime.apublish("snap:1", "e", 5)
        await rec.wait_for_seq(6)
        kinds = [f["type"] for f in rec.frames]
        assert kinds == ["subscribed", "snapshot", "event"]
        assert rec.frames[0]["recovered"] is False
        assert rec.frames[1] == {
            "type": "snapshot",
            "stream": "snap:1",
            "seq": 5,
            "data": {"stream": "snap:1", "user": None},
        }
        assert rec.seqs() == [6]  # not the retained 4 and 5: the snapshot holds them
    finally:
        snapshots.unregister("snap:*")


async def test_publish_many_reaches_subscribers_in_order(hub):
    rec = Recorder()
    await hub.subscribe(rec, "s")
    await realtime.apublish("s", "e", 0)
    await realtime.apublish_many("s", [("e", n) for n in range(1, 251)])
    await rec.wait_for_seq(251)
    assert rec.seqs() == list(range(1, 252))
    assert [f["data"] for f in rec.frames if f["type"] == "event"] == list(range(251))


async def test_a_reordering_within_the_grace_never_reads_the_database(hub, monkeypatch):
    from realtime.core import subscription
    from realtime.core.stats import stats

    monkeypatch.setattr(subscription, "REORDER_GRACE", 2.0)  # longer than a busy machine's stall

    recs = [Recorder() for _ in range(5)]
    for rec in recs:
        await hub.subscribe(rec, "s")
    messages = await store_silently("s", 4)
    replayed = stats.replayed
    for message in (messages[1], messages[0], messages[3], messages[2]):
        await fan_out(message)
    for rec in recs:
        await rec.wait_for_seq(4)
    assert all(rec.seqs() == [1, 2, 3, 4] for rec in recs)
    assert stats.replayed == replayed  # repaired from the buffer, not from history


async def test_subscribers_catching_up_together_share_each_history_read(hub, monkeypatch):
    reads: list[tuple[str, int]] = []
    real_read = store.read

    def counting_read(stream: str, after: int, limit: int):  # instrumented, still real
        reads.append((stream, after))
        return real_read(stream, after, limit)

    monkeypatch.setattr(store, "read", counting_read)
    recs = [Recorder() for _ in range(30)]
    for rec in recs:
        await hub.subscribe(rec, "s")
    await realtime.apublish("s", "e", "first")
    for rec in recs:
        await rec.wait_for_seq(1)
    reads.clear()
    await store_silently("s", 20)  # lost: every subscriber must read 2..21 from history
    await realtime.apublish("s", "e", "last")
    for rec in recs:
        await rec.wait_for_seq(22)
    assert all(rec.seqs() == list(range(1, 23)) for rec in recs)
    # One read per page for the thirty of them (a few more if the reconciler joins in).
    assert 1 <= len(reads) <= 4, reads


async def test_a_malformed_layer_message_is_logged_and_the_next_one_delivered(hub, caplog):
    rec = Recorder()
    await hub.subscribe(rec, "s")
    broken = {"type": "realtime.event", "stream": "s", "seq": 1}  # no epoch, event or frame
    with caplog.at_level(logging.WARNING, logger="realtime.bus"):
        await hub.backplane.send(hub.channel, broken)
        await hub.backplane.send(hub.channel, {"type": "realtime.unknown", "stream": "s"})
        await realtime.apublish("s", "e", 1)
        await rec.wait_for_seq(1)
    assert "Dropped a malformed realtime.event message: no 'epoch'." in caplog.text
    assert "Dropped a channel-layer message of unknown type 'realtime.unknown'." in caplog.text
    assert rec.seqs() == [1]


class Attached(Recorder):
    """A recorder the hub can admit (``registry.admit`` records it as a connection)."""

    transport = "ws"
    user_id = None
    remote_addr = "127.0.0.1"
    user_agent = "test"

    def __init__(self) -> None:
        super().__init__()
        self.id = uuid.uuid4().hex
        self.subscriptions: dict[str, Any] = {}


async def test_subscriptions_changed_before_a_failed_lease_renewal_are_written_by_the_next(
    hub, monkeypatch
):
    conn = Attached()
    assert await hub.attach(conn) is None
    conn.subscriptions = {"a": None, "b": None}
    hub.changed(conn)
    real_renew = registry.arenew_server

    async def unavailable(*args: Any) -> bool:
        # Stands in for a database that refuses one renewal (a failover, say).
        raise OperationalError("the database is away")

    monkeypatch.setattr(registry, "arenew_server", unavailable)
    await hub.jobs.run("lease")  # fails, logged by the job runner
    monkeypatch.setattr(registry, "arenew_server", real_renew)
    await hub.jobs.run("lease")
    row = await ConnectionRow.objects.aget(id=conn.id)
    assert row.streams == ["a", "b"]


async def test_history_pages_are_encoded_off_the_event_loop(hub, monkeypatch):
    from realtime.core import subscription

    threads: set[str] = set()
    real_frame = subscription.event_frame

    def recording_frame(*args: Any) -> str:  # instrumented, still real
        threads.add(threading.current_thread().name)
        return real_frame(*args)

    monkeypatch.setattr(subscription, "event_frame", recording_frame)
    for n in range(3):
        await realtime.apublish("h", "e", n)
    rec = Recorder()
    await hub.subscribe(rec, "h", since=0)
    await rec.wait_for_seq(3)
    assert threads and threading.current_thread().name not in threads
